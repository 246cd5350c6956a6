package driver_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// wireFrames makes one unary call the way kubelet does (a connection of
// its own) with a bare HTTP/2 framer, and returns the frames the driver
// sent until the call's trailers.
func wireFrames(t *testing.T, socket, method string) []http2.Frame {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hdr bytes.Buffer
	enc := hpack.NewEncoder(&hdr)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", "localhost"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	// An empty request message: not compressed, length 0.
	if err := fr.WriteData(1, true, []byte{0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	var got []http2.Frame
	for range 64 { // a unary call is a handful of frames
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d frames: %v", len(got), err)
		}
		got = append(got, f)
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := fr.WritePing(true, f.Data); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 && f.StreamEnded() {
				if s := f.PseudoValue("status"); s != "" && s != "200" {
					t.Fatalf("HTTP status %s", s)
				}
				if st := f.Fields; len(st) == 0 {
					t.Fatal("trailers without fields")
				}
				return got
			}
		}
	}
	t.Fatalf("no trailers in %d frames", len(got))
	return nil
}

// A call on a new connection (kubelet makes one per call) costs the driver
// no more than the call: its HTTP/2 flow-control window is fixed, so it
// sends no bandwidth-estimation PING (gRPC's default, on the first DATA
// frame of every connection) and no WINDOW_UPDATE, and waits for no
// answer to either.
func TestKubeletCallNoPing(t *testing.T) {
	d := startDriver(t)
	frames := wireFrames(t, d.socket, "/csi.v1.Node/NodeGetCapabilities")
	var grpcStatus string
	for _, f := range frames {
		switch f := f.(type) {
		case *http2.PingFrame:
			t.Errorf("the driver sent a PING (ack=%v) on a one-call connection", f.IsAck())
		case *http2.WindowUpdateFrame:
			t.Errorf("the driver sent a WINDOW_UPDATE (stream %d, +%d) for a tiny request", f.StreamID, f.Increment)
		case *http2.MetaHeadersFrame:
			for _, hf := range f.Fields {
				if hf.Name == "grpc-status" {
					grpcStatus = hf.Value
				}
			}
		}
	}
	if grpcStatus != "0" {
		t.Fatalf("grpc-status %q, want 0 (OK); frames: %v", grpcStatus, frames)
	}
}

// The CSI socket's documented bounds, on the driver binary: a request
// message over 4 MiB fails with RESOURCE_EXHAUSTED before anything is
// mounted, and a client pinging with no call in flight is disconnected
// after three strikes (GOAWAY ENHANCE_YOUR_CALM "too_many_pings").
func TestSocketBounds(t *testing.T) {
	d := startDriver(t)
	target := newTarget(t)
	req := volume{target: target, pod: shopPod, secrets: threeSecrets, inSecrets: true}.request()
	req.VolumeContext["padding"] = strings.Repeat("x", 5<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := d.node.NodePublishVolume(ctx, req)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a 5 MiB request: %v, want ResourceExhausted", err)
	}
	if _, serr := os.Stat(target); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("target after a refused request: %v", serr)
	}

	c, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	_ = fr.WriteSettings()
	for i := range 3 {
		_ = fr.WritePing(false, [8]byte{byte(i)})
	}
	for range 100 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != http2.ErrCodeEnhanceYourCalm || string(g.DebugData()) != "too_many_pings" {
				t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", g.ErrCode, g.DebugData())
			}
			return
		}
	}
	t.Fatal("no GOAWAY after three pings with no call in flight")
}
