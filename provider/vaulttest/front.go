package vaulttest

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Front is a TCP front for a Vault cluster, standing in for a Kubernetes
// Service: each new connection goes to the next backend in turn; a backend
// marked down, or one that refuses the dial, is skipped. It does not look
// inside TLS, so a sealed node stays in the rotation, as it does behind a
// Service without a readiness probe.
type Front struct {
	Addr string // host:port

	ln       net.Listener
	mu       sync.Mutex
	backends []string
	down     map[string]bool
	next     int
	conns    map[net.Conn]string // client side -> backend
	wg       sync.WaitGroup
	accepted map[string]int
}

// NewFront listens on a free 127.0.0.1 port in front of backends (host:port).
func NewFront(backends []string) (*Front, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &Front{Addr: ln.Addr().String(), ln: ln, backends: backends,
		down: map[string]bool{}, conns: map[net.Conn]string{}, accepted: map[string]int{}}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

// SetDown takes a backend out of the rotation (true) or puts it back, and
// drops the connections it holds when it goes down.
func (f *Front) SetDown(backend string, down bool) {
	f.mu.Lock()
	f.down[backend] = down
	var drop []net.Conn
	if down {
		for c, b := range f.conns {
			if b == backend {
				drop = append(drop, c)
			}
		}
	}
	f.mu.Unlock()
	for _, c := range drop {
		_ = c.Close()
	}
}

// Accepted returns how many connections went to each backend so far.
func (f *Front) Accepted() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.accepted))
	for k, v := range f.accepted {
		out[k] = v
	}
	return out
}

// Close stops listening and drops every connection.
func (f *Front) Close() {
	_ = f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *Front) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.handle(c)
		}()
	}
}

// pick returns the backends to try for one connection, in order.
func (f *Front) pick() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for i := range f.backends {
		b := f.backends[(f.next+i)%len(f.backends)]
		if !f.down[b] {
			out = append(out, b)
		}
	}
	f.next = (f.next + 1) % len(f.backends)
	return out
}

func (f *Front) handle(c net.Conn) {
	var up net.Conn
	var backend string
	for _, b := range f.pick() {
		u, err := net.DialTimeout("tcp", b, time.Second)
		if err == nil {
			up, backend = u, b
			break
		}
	}
	if up == nil {
		_ = c.Close()
		return
	}
	f.mu.Lock()
	f.conns[c] = backend
	f.accepted[backend]++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
	}()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Either side ending ends both: a dead backend must not leave the
		// client waiting on a half-open connection.
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}
