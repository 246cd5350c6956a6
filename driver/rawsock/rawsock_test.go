package rawsock_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"vaultcsi.dev/driver/driver/rawsock"
)

func listen(t *testing.T) (*rawsock.Listener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := rawsock.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

// accept dials the listener and returns both ends.
func accept(t *testing.T, l *rawsock.Listener, path string) (server, client net.Conn) {
	t.Helper()
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return server, client
}

// Bytes go both ways intact, including writes far larger than the socket
// buffer (the raw write returns EAGAIN and the poller waits for room) and
// reads that wait for data.
func TestReadWrite(t *testing.T) {
	l, path := listen(t)
	server, client := accept(t, l, path)
	big := make([]byte, 8<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		time.Sleep(50 * time.Millisecond) // the writer fills the buffer first
		b, _ := io.ReadAll(io.LimitReader(client, int64(len(big))))
		got <- b
	}()
	if n, err := server.Write(big); err != nil || n != len(big) {
		t.Fatalf("write: %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("client read %d bytes, not what was written", len(b))
	}

	go func() {
		time.Sleep(50 * time.Millisecond) // the reader waits first
		_, _ = client.Write([]byte("hello"))
		client.Close()
	}()
	b, err := io.ReadAll(server)
	if err != nil || string(b) != "hello" {
		t.Fatalf("server read %q, %v; want hello then EOF", b, err)
	}
}

// Deadlines work as on a net.Conn: a read past its deadline fails with a
// timeout, and a read after Close fails.
func TestDeadlineAndClose(t *testing.T) {
	l, path := listen(t)
	server, _ := accept(t, l, path)
	if err := server.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var ne net.Error
	if _, err := server.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	if err := server.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after close succeeded")
	}
}

// Close stops Accept (net.ErrClosed, which servers take as "stopped") and
// removes the socket file, as net's unix listener does.
func TestListenerClose(t *testing.T) {
	l, path := listen(t)
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	time.Sleep(20 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file after Close: %v", err)
	}
	again, err := rawsock.Listen(path)
	if err != nil {
		t.Fatalf("listen again on the same path: %v", err)
	}
	defer again.Close()
	if _, err := rawsock.Listen(path); err == nil {
		t.Fatal("a second listener on a path in use")
	}
}
