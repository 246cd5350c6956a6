package main

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// latencyProxy is a TCP proxy on 127.0.0.1 in front of Vault that holds
// every chunk for delay/2 in each direction, so a request/response pair
// costs one round trip of delay: a remote Vault. The delay is changed
// between series; chunks already in flight keep theirs. Bandwidth is not
// limited, and pipelined chunks do not queue behind each other's delay.
type latencyProxy struct {
	ln     net.Listener
	target string
	oneWay atomic.Int64 // nanoseconds, delay/2
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// chunkQueue bounds what one direction holds in flight (32 KiB chunks).
const chunkQueue = 1024

func startLatencyProxy(target string) (*latencyProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("latency proxy: %w", err)
	}
	p := &latencyProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *latencyProxy) addr() string { return "http://" + p.ln.Addr().String() }

// setRTT sets the round-trip delay the proxy adds.
func (p *latencyProxy) setRTT(d time.Duration) { p.oneWay.Store(int64(d / 2)) }

func (p *latencyProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *latencyProxy) accept() {
	defer p.wg.Done()
	for { // ends when stop closes the listener
		in, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		if !p.track(in) || !p.track(out) {
			in.Close()
			out.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			var pair sync.WaitGroup
			pair.Add(2)
			go func() { defer pair.Done(); p.pipe(out, in) }()
			go func() { defer pair.Done(); p.pipe(in, out) }()
			pair.Wait()
			in.Close()
			out.Close()
			p.mu.Lock()
			delete(p.conns, in)
			delete(p.conns, out)
			p.mu.Unlock()
		}()
	}
}

type chunk struct {
	due  time.Time
	data []byte
}

// pipe copies src to dst, each chunk delivered oneWay after it was read.
func (p *latencyProxy) pipe(dst, src net.Conn) {
	q := make(chan chunk, chunkQueue)
	go func() {
		defer close(q)
		for { // ends at EOF or when either side is closed
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{due: time.Now().Add(time.Duration(p.oneWay.Load())), data: buf[:n]}
			}
			if err != nil {
				return // EOF or closed: the queue drains, then dst is half-closed
			}
		}
	}()
	for c := range q {
		if w := time.Until(c.due); w > 0 {
			time.Sleep(w)
		}
		if _, err := dst.Write(c.data); err != nil {
			src.Close() // unblock the reader; the range ends when it returns
			for range q {
			}
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (p *latencyProxy) stop() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	if err := p.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		logf("latency proxy: %v", err)
	}
	p.wg.Wait()
}
