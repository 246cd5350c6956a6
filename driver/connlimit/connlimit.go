// Package connlimit bounds the connections a gRPC server holds on its
// listener. kubelet opens a new connection for every CSI call and closes it
// afterwards, so a connection with no call in flight is only useful for an
// instant; a client that opens connections and keeps them idle (1,300 of
// them held 3,353 goroutines in the driver) must not be able to grow the
// driver without bound or lock kubelet out.
//
// At the bound, a new connection takes the place of the connection that has
// been idle (no call in flight) the longest, once that one has been idle for
// EvictAfter; if every connection is busy or freshly opened, the new one
// waits in the listen backlog until a slot frees. A call in flight is never
// cut off.
package connlimit

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
)

// DefaultEvictAfter is how long a connection must have been idle before a
// new one may take its place: longer than a new connection needs to send
// its first call, so kubelet's connection is never taken for an idle one.
const DefaultEvictAfter = 250 * time.Millisecond

// pollIdle is how often a full listener looks again when no connection is
// idle at all (a call ending also wakes it).
const pollIdle = time.Second

// Listener wraps a net.Listener. Serve the gRPC server on it and install
// UnaryInterceptor, which tells it which connections have calls in flight.
type Listener struct {
	net.Listener
	max        int
	evictAfter time.Duration

	mu      sync.Mutex
	conns   map[string]*conn // by the unique address each connection reports
	seq     uint64
	changed chan struct{} // a connection closed or went idle (capacity 1)
	closed  chan struct{}
	once    sync.Once

	evicted atomic.Int64
}

// New bounds l to max connections; evictAfter <= 0 means DefaultEvictAfter.
func New(l net.Listener, max int, evictAfter time.Duration) *Listener {
	if max < 1 {
		max = 1
	}
	if evictAfter <= 0 {
		evictAfter = DefaultEvictAfter
	}
	return &Listener{
		Listener: l, max: max, evictAfter: evictAfter,
		conns: make(map[string]*conn), changed: make(chan struct{}, 1), closed: make(chan struct{}),
	}
}

// Evicted counts connections closed to make room for new ones.
func (l *Listener) Evicted() int64 { return l.evicted.Load() }

// Open is the number of connections held now.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Accept returns the next connection once there is room for it.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	for {
		l.mu.Lock()
		var victim *conn
		if len(l.conns) >= l.max {
			var wait time.Duration
			victim, wait = l.longestIdle(time.Now())
			if victim == nil {
				l.mu.Unlock()
				t := time.NewTimer(wait)
				select {
				case <-l.changed:
				case <-t.C:
				case <-l.closed:
					t.Stop()
					_ = c.Close() // the listener is closing: this connection was never served
					return nil, net.ErrClosed
				}
				t.Stop()
				continue
			}
			delete(l.conns, victim.id)
		}
		l.seq++
		nc := &conn{Conn: c, l: l, id: "conn-" + strconv.FormatUint(l.seq, 10), idleSince: time.Now()}
		l.conns[nc.id] = nc
		l.mu.Unlock()
		if victim != nil {
			l.evicted.Add(1)
			_ = victim.Conn.Close() // the server sees EOF and frees the connection
		}
		return nc, nil
	}
}

// longestIdle picks the connection idle the longest if it has been idle
// for evictAfter; otherwise how long to wait before looking again.
// Callers hold l.mu.
func (l *Listener) longestIdle(now time.Time) (*conn, time.Duration) {
	var best *conn
	for _, c := range l.conns {
		if c.active == 0 && (best == nil || c.idleSince.Before(best.idleSince)) {
			best = c
		}
	}
	if best == nil {
		return nil, pollIdle
	}
	if age := now.Sub(best.idleSince); age < l.evictAfter {
		return nil, l.evictAfter - age
	}
	return best, 0
}

// Close stops accepting and wakes an Accept waiting for room.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *Listener) signal() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// UnaryInterceptor marks the call's connection busy while the call runs.
func (l *Listener) UnaryInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	var c *conn
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		l.mu.Lock()
		if c = l.conns[p.Addr.String()]; c != nil {
			c.active++
		}
		l.mu.Unlock()
	}
	if c != nil {
		defer func() {
			l.mu.Lock()
			if c.active--; c.active == 0 {
				c.idleSince = time.Now()
			}
			l.mu.Unlock()
			l.signal()
		}()
	}
	return handler(ctx, req)
}

// conn is one held connection. It reports a unique remote address so the
// interceptor can find it (unix socket peers have no address of their own).
type conn struct {
	net.Conn
	l  *Listener
	id string
	// Guarded by l.mu.
	active    int
	idleSince time.Time
	closeOnce sync.Once
}

func (c *conn) RemoteAddr() net.Addr { return addr(c.id) }

func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.l.mu.Lock()
		if c.l.conns[c.id] == c {
			delete(c.l.conns, c.id)
		}
		c.l.mu.Unlock()
		c.l.signal()
	})
	return c.Conn.Close()
}

type addr string

func (a addr) Network() string { return "unix" }
func (a addr) String() string  { return string(a) }
