package unaryserver_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"vaultcsi.dev/driver/driver/unaryserver"
)

// wire is a hand-driven HTTP/2 client: the tests send what no grpc-go
// client would.
type wire struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func dialWire(t *testing.T, socket string, settings ...http2.Setting) *wire {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	w := &wire{t: t, c: c, fr: http2.NewFramer(c, c)}
	w.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	w.enc = hpack.NewEncoder(&w.hb)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := w.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return w
}

// headers sends a request's HEADERS; extra fields replace or add to a
// gRPC call's.
func (w *wire) headers(id uint32, path string, endStream bool, extra ...string) {
	w.t.Helper()
	fields := [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "x"},
		{"content-type", "application/grpc"}, {"te", "trailers"}}
	for i := 0; i+1 < len(extra); i += 2 {
		replaced := false
		for j := range fields {
			if fields[j][0] == extra[i] {
				fields[j][1], replaced = extra[i+1], true
			}
		}
		if !replaced {
			fields = append(fields, [2]string{extra[i], extra[i+1]})
		}
	}
	w.hb.Reset()
	for _, f := range fields {
		if err := w.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: w.hb.Bytes(), EndHeaders: true, EndStream: endStream}); err != nil {
		w.t.Fatal(err)
	}
}

// message is a gRPC length-prefixed message.
func message(flag byte, body []byte) []byte {
	n := len(body)
	return append([]byte{flag, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

type goAway struct {
	ErrCode      http2.ErrCode
	LastStreamID uint32
	Debug        string
}

// outcome reads frames until stream id ends, the server sends GOAWAY, or the
// connection closes. It answers SETTINGS and PINGs.
type outcome struct {
	httpStatus, grpcStatus, grpcMessage string
	data                                [][]byte
	rst                                 http2.ErrCode
	goAway                              *goAway
	closed                              bool
	windowUpdates                       int
}

func (w *wire) read(id uint32) outcome {
	w.t.Helper()
	var o outcome
	for range 10000 {
		f, err := w.fr.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset by peer") {
				o.closed = true
				return o
			}
			w.t.Fatalf("reading: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = w.fr.WriteSettingsAck()
			}
		case *http2.WindowUpdateFrame:
			o.windowUpdates++
		case *http2.GoAwayFrame:
			o.goAway = &goAway{ErrCode: f.ErrCode, LastStreamID: f.LastStreamID, Debug: string(f.DebugData())}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				o.rst = f.ErrCode
				return o
			}
		case *http2.DataFrame:
			if f.StreamID == id {
				o.data = append(o.data, append([]byte(nil), f.Data()...))
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				continue
			}
			for _, hf := range f.Fields {
				switch hf.Name {
				case ":status":
					o.httpStatus = hf.Value
				case "grpc-status":
					o.grpcStatus = hf.Value
				case "grpc-message":
					o.grpcMessage = hf.Value
				}
			}
			if f.StreamEnded() {
				return o
			}
		}
	}
	w.t.Fatal("no end in 10000 frames")
	return o
}

// Requests a grpc-go client never sends get a clear answer on their stream
// or, for a protocol error, a GOAWAY naming it; nothing is left half-open.
func TestWireRejects(t *testing.T) {
	const probe = "/csi.v1.Identity/Probe"
	cases := []struct {
		name string
		send func(w *wire)
		want func(t *testing.T, o outcome)
	}{
		{"not gRPC content type", func(w *wire) {
			w.headers(1, probe, false, "content-type", "application/json")
		}, func(t *testing.T, o outcome) {
			if o.httpStatus != "415" {
				t.Fatalf("HTTP status %q, want 415", o.httpStatus)
			}
		}},
		{"compressed message", func(w *wire) {
			w.headers(1, probe, false)
			_ = w.fr.WriteData(1, true, message(1, []byte{1, 2}))
		}, wantGRPC("13", "compressed flag")},
		{"compression asked", func(w *wire) {
			w.headers(1, probe, false, "grpc-encoding", "gzip")
			_ = w.fr.WriteData(1, true, message(0, nil))
		}, wantGRPC("12", "grpc-encoding")},
		{"malformed timeout", func(w *wire) {
			w.headers(1, probe, false, "grpc-timeout", "12x")
		}, wantGRPC("13", "grpc-timeout")},
		{"no message", func(w *wire) { w.headers(1, probe, true) }, wantGRPC("13", "ended before its message")},
		{"truncated message", func(w *wire) {
			w.headers(1, probe, false)
			_ = w.fr.WriteData(1, true, message(0, []byte{1, 2, 3})[:6])
		}, wantGRPC("13", "ended inside its message")},
		{"two messages", func(w *wire) {
			w.headers(1, probe, false)
			_ = w.fr.WriteData(1, true, append(message(0, nil), message(0, nil)...))
		}, wantGRPC("13", "more than one request message")},
		{"message over the limit", func(w *wire) {
			w.headers(1, probe, false)
			_ = w.fr.WriteData(1, false, []byte{0, 0x7f, 0, 0, 0})
		}, wantGRPC("8", "larger than max")},
		{"unknown method", func(w *wire) {
			w.headers(1, "/csi.v1.Identity/Nope", false)
		}, wantGRPC("12", "unknown method Nope")},
		{"headers over the limit", func(w *wire) {
			var extra []string
			for i := range 20 {
				extra = append(extra, "x-h"+strings.Repeat("i", i), strings.Repeat("a", 1<<10))
			}
			w.headers(1, probe, false, extra...)
		}, wantGRPC("8", "request headers exceed 16384 bytes")},
		{"one header over the limit", func(w *wire) {
			w.headers(1, probe, false, "x-big", strings.Repeat("a", 20<<10))
		}, func(t *testing.T, o outcome) {
			// hpack refuses the string before decoding it: a connection error.
			if o.goAway == nil || o.goAway.ErrCode == http2.ErrCodeNo || !o.closed {
				t.Fatalf("want a GOAWAY naming an error and the connection closed, got %+v", o)
			}
		}},
		{"GET", func(w *wire) { w.headers(1, probe, true, ":method", "GET") }, wantRST(http2.ErrCodeProtocol)},
		{"even stream id", func(w *wire) { w.headers(2, probe, false) }, wantGoAway(http2.ErrCodeProtocol)},
		{"stream id going down", func(w *wire) {
			w.headers(5, probe, false)
			w.headers(3, probe, false)
		}, wantGoAway(http2.ErrCodeProtocol)},
		{"data on a stream never opened", func(w *wire) {
			_ = w.fr.WriteData(7, true, message(0, nil))
		}, wantGoAway(http2.ErrCodeProtocol)},
		{"data past the window", func(w *wire) {
			w.headers(1, probe, false)
			chunk := make([]byte, 16384)
			for range 5 { // 80 KiB on a 64 KiB window, before any WINDOW_UPDATE could be used
				_ = w.fr.WriteData(1, false, chunk)
			}
		}, func(t *testing.T, o outcome) {
			if o.grpcStatus == "" && o.rst == 0 && o.goAway == nil {
				t.Fatalf("no error for data past the flow-control window: %+v", o)
			}
		}},
		{"push promise", func(w *wire) {
			_ = w.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
		}, wantGoAway(http2.ErrCodeProtocol)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := serve(t, unaryserver.Config{MaxRecvMsgSize: 1 << 20}, &identity{})
			w := dialWire(t, ts.socket)
			tc.send(w)
			tc.want(t, w.read(1))
			// The server is unharmed: a normal call still works.
			if _, err := ts.client(t).Probe(testCtx(t), nil); err != nil {
				t.Fatalf("a call after: %v", err)
			}
		})
	}
}

func wantGRPC(code, msgPart string) func(*testing.T, outcome) {
	return func(t *testing.T, o outcome) {
		t.Helper()
		if o.httpStatus != "200" || o.grpcStatus != code || !strings.Contains(o.grpcMessage, msgPart) {
			t.Fatalf("got HTTP %q grpc-status %q %q, want 200 %s containing %q (%+v)", o.httpStatus, o.grpcStatus, o.grpcMessage, code, msgPart, o)
		}
	}
}

func wantRST(code http2.ErrCode) func(*testing.T, outcome) {
	return func(t *testing.T, o outcome) {
		t.Helper()
		if o.rst != code {
			t.Fatalf("RST_STREAM %v, want %v (%+v)", o.rst, code, o)
		}
	}
}

func wantGoAway(code http2.ErrCode) func(*testing.T, outcome) {
	return func(t *testing.T, o outcome) {
		t.Helper()
		if o.goAway == nil || o.goAway.ErrCode != code || !o.closed {
			t.Fatalf("want GOAWAY %v and the connection closed, got %+v", code, o)
		}
	}
}

// A response waits for the client's flow-control window: a client that
// allows 8 bytes at a time gets the message in 8-byte DATA frames, each
// after a WINDOW_UPDATE.
func TestResponseFlowControl(t *testing.T) {
	ts := serve(t, unaryserver.Config{}, &identity{})
	w := dialWire(t, ts.socket, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 8})
	w.headers(1, "/csi.v1.Identity/GetPluginInfo", false)
	if err := w.fr.WriteData(1, true, message(0, nil)); err != nil {
		t.Fatal(err)
	}
	var got []byte
	frames := 0
	for range 1000 {
		f, err := w.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			_ = w.fr.WriteSettingsAck()
		}
		if d, ok := f.(*http2.DataFrame); ok {
			if len(d.Data()) > 8 {
				t.Fatalf("a %d-byte DATA frame on an 8-byte window", len(d.Data()))
			}
			got = append(got, d.Data()...)
			frames++
			if err := w.fr.WriteWindowUpdate(1, uint32(len(d.Data()))); err != nil { //nolint:gosec // <= 8
				t.Fatal(err)
			}
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamEnded() {
			break
		}
	}
	// "test.csi.dev" (12) and "1" (1), two tagged fields: 17 bytes + prefix.
	if len(got) != 5+17 || frames != 3 {
		t.Fatalf("got %d bytes in %d DATA frames, want 22 in 3", len(got), frames)
	}
}

// Pings are answered, but a client pinging with no call in flight, or too
// often, is told to go away after three strikes (grpc-go's enforcement).
func TestPingStrikes(t *testing.T) {
	ts := serve(t, unaryserver.Config{MinPingInterval: time.Hour}, &identity{})
	w := dialWire(t, ts.socket)
	acks := 0
	for i := range 4 {
		if err := w.fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			break // closed after the third strike
		}
	}
	var away *goAway
	for range 100 {
		f, err := w.fr.ReadFrame()
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.PingFrame:
			if f.IsAck() {
				acks++
			}
		case *http2.GoAwayFrame:
			away = &goAway{ErrCode: f.ErrCode, Debug: string(f.DebugData())}
		}
	}
	if acks != 2 || away == nil || away.ErrCode != http2.ErrCodeEnhanceYourCalm || away.Debug != "too_many_pings" {
		t.Fatalf("acks %d, GOAWAY %+v; want 2 acks, then GOAWAY ENHANCE_YOUR_CALM too_many_pings", acks, away)
	}
}

// A connection that never sends the preface is closed after
// HandshakeTimeout; one with no call in flight for MaxConnectionIdle gets a
// GOAWAY and is closed.
func TestTimeouts(t *testing.T) {
	ts := serve(t, unaryserver.Config{HandshakeTimeout: 200 * time.Millisecond, MaxConnectionIdle: 300 * time.Millisecond}, &identity{})

	c, err := net.Dial("unix", ts.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("a silent connection: %v, want the server to close it", err)
	}

	w := dialWire(t, ts.socket)
	w.headers(1, "/csi.v1.Identity/Probe", false)
	_ = w.fr.WriteData(1, true, message(0, nil))
	if o := w.read(1); o.grpcStatus != "0" {
		t.Fatalf("call: %+v", o)
	}
	o := w.read(99) // nothing more on stream 99: read until GOAWAY and close
	if o.goAway == nil || o.goAway.ErrCode != http2.ErrCodeNo || o.goAway.LastStreamID != 1 || !o.closed {
		t.Fatalf("idle connection: %+v, want GOAWAY NO_ERROR last stream 1, then closed", o)
	}
}
