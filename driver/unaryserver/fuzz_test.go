package unaryserver

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

type probeOnly struct {
	csi.UnimplementedIdentityServer
}

func (probeOnly) Probe(ctx context.Context, _ *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, ctx.Err()
}

// seedCall is a well-formed client connection after the preface: SETTINGS,
// then a Probe call split as given.
func seedCall(endOnHeaders bool, body []byte) []byte {
	var b, hb bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/csi.v1.Identity/Probe"},
		{":authority", "x"}, {"content-type", "application/grpc"}, {"grpc-timeout", "1S"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: endOnHeaders})
	if !endOnHeaders {
		_ = fr.WriteData(1, true, body)
	}
	_ = fr.WritePing(false, [8]byte{1})
	_ = fr.WriteWindowUpdate(0, 100)
	_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
	_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	return b.Bytes()
}

// Whatever a client sends after the preface, the connection ends (no
// goroutine is left reading or writing), nothing panics, and every call
// it started returns.
func FuzzConnection(f *testing.F) {
	f.Add(seedCall(false, []byte{0, 0, 0, 0, 0}))
	f.Add(seedCall(true, nil))
	f.Add(seedCall(false, []byte{1, 0, 0, 0, 1, 0}))
	f.Add(seedCall(false, []byte{0, 0xff, 0xff, 0xff, 0xff}))
	f.Add(seedCall(false, []byte{0, 0, 0, 0, 2, 8}))
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})                         // SETTINGS only
	f.Add([]byte{0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}) // PING before SETTINGS
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	s := New(Config{HandshakeTimeout: time.Second, WriteTimeout: time.Second, MaxConnectionIdle: time.Second,
		MaxRecvMsgSize: 1 << 16, MaxConcurrentStreams: 4})
	s.RegisterService(&csi.Identity_ServiceDesc, probeOnly{})
	f.Fuzz(func(t *testing.T, data []byte) {
		server, client := net.Pipe()
		c := newConn(s, server)
		served := make(chan struct{})
		go func() { c.serve(); close(served) }()
		drained := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, client); close(drained) }()
		_ = client.SetWriteDeadline(time.Now().Add(3 * time.Second))
		if _, err := client.Write([]byte(http2.ClientPreface)); err == nil {
			_, _ = client.Write(data)
		}
		_ = client.Close()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatal("the connection was not closed after the client went away")
		}
		<-drained
		calls := make(chan struct{})
		go func() { s.calls.Wait(); close(calls) }()
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatal("a call did not return after its connection closed")
		}
	})
}
