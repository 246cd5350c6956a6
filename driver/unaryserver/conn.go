package unaryserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/peer"
)

const (
	// initialWindow is HTTP/2's default flow-control window (RFC 9113
	// 6.9.2), for connections and streams both ways. The server keeps it:
	// a CSI request is a few KiB, so a kubelet connection needs no
	// WINDOW_UPDATE at all.
	initialWindow = 65535
	// maxWindow is the largest flow-control window (RFC 9113 6.9.1).
	maxWindow = 1<<31 - 1
	// maxFrameSize is the frame size the server reads (the protocol's
	// default; it never raises it).
	maxFrameSize = 16384
	// maxPingStrikes: the third strike closes the connection (grpc-go's
	// keepalive enforcement).
	maxPingStrikes = 2
	ioBufferSize   = 4 << 10
	// headerTableSize is HPACK's default dynamic table size.
	headerTableSize = 4096
)

// errClosing ends a connection's read loop without an error to report:
// the client went away, or the server drained it.
var errClosing = errors.New("connection closing")

// conn is one client connection. Its goroutine (serve) reads every frame;
// each call runs on a goroutine of its own and writes its response.
type conn struct {
	s    *Server
	nc   net.Conn
	br   *bufio.Reader
	fr   *http2.Framer // read side used by serve only; write side under wmu
	peer *peer.Peer

	ctx    context.Context // cancelled when the connection closes
	cancel context.CancelFunc

	wmu  sync.Mutex // guards the framer's write side, bw, henc, hbuf
	bw   *bufio.Writer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu              sync.Mutex
	sendWindowGrew  *sync.Cond // on mu: a send window grew, a stream reset, or the conn closed
	streams         map[uint32]*stream
	lastStream      uint32 // highest stream id the client opened
	goingAway       bool   // GOAWAY sent or received: no new calls
	closed          bool
	connSendWindow  int64
	peerInitWindow  int64
	pingStrikes     int
	lastPing        time.Time
	resetPingStrike bool // a response went out since the last PING
	closeOnce       sync.Once

	peerMaxFrame atomic.Uint32 // the client's SETTINGS_MAX_FRAME_SIZE, read under wmu

	// Read loop only.
	connRecvWindow int64
	connRecvUsed   int64 // bytes consumed since the last connection WINDOW_UPDATE
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		s: s, nc: nc, bw: bufio.NewWriterSize(nc, ioBufferSize),
		peer:    &peer.Peer{Addr: nc.RemoteAddr(), LocalAddr: nc.LocalAddr()},
		streams: make(map[uint32]*stream),

		connSendWindow: initialWindow, peerInitWindow: initialWindow,
		connRecvWindow: initialWindow,
	}
	c.peerMaxFrame.Store(maxFrameSize)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.sendWindowGrew = sync.NewCond(&c.mu)
	c.br = bufio.NewReaderSize(nc, ioBufferSize)
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.SetMaxReadFrameSize(maxFrameSize)
	c.fr.MaxHeaderListSize = s.cfg.MaxHeaderListSize
	c.fr.ReadMetaHeaders = hpack.NewDecoder(headerTableSize, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// serve runs the connection: handshake, then one frame at a time until the
// client goes away, a protocol error, or the server closes it.
func (c *conn) serve() {
	defer c.close()
	if err := c.handshake(); err != nil {
		c.fail(err)
		return
	}
	c.mu.Lock()
	c.armIdle()
	c.mu.Unlock()
	for {
		f, err := c.fr.ReadFrame()
		if err == nil {
			err = c.handle(f)
		}
		if err == nil {
			continue
		}
		var se http2.StreamError
		if errors.As(err, &se) {
			c.resetStream(se.StreamID, se.Code)
			continue
		}
		c.fail(err)
		return
	}
}

// handshake sends the server's SETTINGS first (so the client need not wait
// a round trip), then reads the client's preface and SETTINGS.
func (c *conn) handshake() error {
	if err := c.nc.SetDeadline(time.Now().Add(c.s.cfg.HandshakeTimeout)); err != nil {
		return err
	}
	err := c.write(func() error {
		return c.fr.WriteSettings(
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.s.cfg.MaxConcurrentStreams},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.s.cfg.MaxHeaderListSize})
	})
	if err != nil {
		return err
	}
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, preface[:]); err != nil {
		return err
	}
	if string(preface[:]) != http2.ClientPreface {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	f, err := c.fr.ReadFrame()
	if err != nil {
		return err
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if err := c.onSettings(sf); err != nil {
		return err
	}
	return c.nc.SetDeadline(time.Time{})
}

// fail ends the connection after err: a GOAWAY naming a protocol error,
// nothing for a client that went away or an idle connection's timeout.
func (c *conn) fail(err error) {
	var ce http2.ConnectionError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		c.goAway(http2.ErrCode(ce), "")
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.goAway(http2.ErrCodeFrameSize, "")
	case errors.As(err, &ne) && ne.Timeout():
		c.goAway(http2.ErrCodeNo, "idle")
	case errors.Is(err, errTooManyPings):
		c.goAway(http2.ErrCodeEnhanceYourCalm, "too_many_pings")
	}
}

// handle acts on one frame. A returned error ends the connection, except
// an http2.StreamError, which resets one stream.
func (c *conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		return c.onSettings(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PingFrame:
		return c.onPing(f)
	case *http2.RSTStreamFrame:
		return c.onReset(f)
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goingAway = true
		idle := len(c.streams) == 0
		c.mu.Unlock()
		if idle {
			return errClosing
		}
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // a client never pushes
	default: // PRIORITY and unknown frame types carry nothing a server must act on
		return nil
	}
}

// abandon stops a stream the client reset or the server refused midway:
// its handler (if running) sees its context cancelled and writes nothing.
// A stream whose handler is running stays counted until it returns, so
// resetting calls cannot start more handlers than MaxConcurrentStreams.
// Callers hold mu.
func (c *conn) abandon(st *stream) {
	st.reset = true
	if st.cancel != nil {
		st.cancel()
	}
	if !st.handling {
		c.removeLocked(st)
	}
	c.sendWindowGrew.Broadcast()
}

// removeLocked drops a finished stream; the last one arms the idle timer or,
// after a GOAWAY, closes the connection. Callers hold mu.
func (c *conn) removeLocked(st *stream) {
	if c.streams[st.id] != st {
		return
	}
	delete(c.streams, st.id)
	if len(c.streams) > 0 || c.closed {
		return
	}
	if c.goingAway {
		go c.close() // not under mu: close takes it
		return
	}
	c.armIdle()
}

// armIdle starts the idle timer (the read deadline) for a connection with
// no call in flight. Callers hold mu.
func (c *conn) armIdle() {
	if d := c.s.cfg.MaxConnectionIdle; d > 0 && len(c.streams) == 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(d))
	}
}

// resetStream sends RST_STREAM and forgets the stream.
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		c.abandon(st)
	}
	c.mu.Unlock()
	_ = c.write(func() error { return c.fr.WriteRSTStream(id, code) })
}

// write runs fn (which writes frames) and flushes, under wmu and a write
// deadline: a peer that does not read cannot hold a goroutine forever.
func (c *conn) write(fn func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(fn)
}

func (c *conn) writeLocked(fn func() error) error {
	if err := fn(); err != nil {
		return err
	}
	if err := c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout)); err != nil {
		return err
	}
	if err := c.bw.Flush(); err != nil {
		_ = c.nc.Close() // the read loop sees it and closes the rest
		return err
	}
	return nil
}

// goAway tells the client no stream after the last it opened will be
// served, then closes the connection.
func (c *conn) goAway(code http2.ErrCode, debug string) {
	c.mu.Lock()
	c.goingAway = true
	last := c.lastStream
	c.mu.Unlock()
	_ = c.write(func() error { return c.fr.WriteGoAway(last, code, []byte(debug)) })
}

// drain is GracefulStop's part: GOAWAY now, close once no call is in
// flight.
func (c *conn) drain() {
	c.goAway(http2.ErrCodeNo, "")
	c.mu.Lock()
	idle := len(c.streams) == 0
	c.mu.Unlock()
	if idle {
		c.close()
	}
}

// close closes the socket and cancels every call still running on it.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.sendWindowGrew.Broadcast()
		c.mu.Unlock()
		c.cancel()
		_ = c.nc.Close()
		c.s.forget(c)
	})
}
