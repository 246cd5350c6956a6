package connlimit

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// blockingProbe answers Probe once release is closed.
type blockingProbe struct {
	csi.UnimplementedIdentityServer
	started chan struct{}
	release chan struct{}
}

func (b *blockingProbe) Probe(ctx context.Context, _ *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	b.started <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

func serveLimited(t *testing.T, max int, evictAfter time.Duration) (string, *Listener, *blockingProbe) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	raw, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l := New(raw, max, evictAfter)
	srv := grpc.NewServer(grpc.UnaryInterceptor(l.UnaryInterceptor))
	bp := &blockingProbe{started: make(chan struct{}, 16), release: make(chan struct{})}
	csi.RegisterIdentityServer(srv, bp)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return sock, l, bp
}

// closedWithin reports whether the server closed c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// At the bound, a new connection replaces the one idle the longest.
func TestEvictsLongestIdle(t *testing.T) {
	sock, l, _ := serveLimited(t, 2, 50*time.Millisecond)
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
		waitFor(t, "accept", func() bool { return l.Open() == i+1 })
	}
	third, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	waitFor(t, "eviction", func() bool { return l.Evicted() == 1 })
	if !closedWithin(held[0], time.Second) {
		t.Error("the oldest idle connection was not closed")
	}
	if closedWithin(held[1], 100*time.Millisecond) {
		t.Error("the younger idle connection was closed too")
	}
	if n := l.Open(); n != 2 {
		t.Errorf("%d connections held, want 2", n)
	}
}

// A connection with a call in flight is never evicted: a new connection
// waits until the call ends, and the call completes.
func TestBusyConnectionKept(t *testing.T) {
	sock, l, bp := serveLimited(t, 1, 20*time.Millisecond)
	busy, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := csi.NewIdentityClient(busy).Probe(ctx, &csi.ProbeRequest{})
		done <- err
	}()
	<-bp.started
	waiting, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	time.Sleep(200 * time.Millisecond) // ten times evictAfter: nothing may be evicted
	if l.Evicted() != 0 || l.Open() != 1 {
		t.Fatalf("evicted %d, open %d while the only connection was busy", l.Evicted(), l.Open())
	}
	close(bp.release)
	if err := <-done; err != nil {
		t.Fatalf("the busy call was cut off: %v", err)
	}
	// Now idle, the busy connection makes room for the waiting one.
	waitFor(t, "the waiting connection", func() bool { return l.Evicted() == 1 })
}

// Close wakes an Accept that waits for room.
func TestCloseUnblocksAccept(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	raw, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l := New(raw, 1, time.Hour)
	first, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	second, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	errc := make(chan error, 1)
	go func() { _, err := l.Accept(); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	l.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
}
