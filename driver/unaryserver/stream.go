package unaryserver

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// prefixLen is gRPC's message prefix: a compressed flag and a 4-byte length.
const prefixLen = 5

// stream is one call.
type stream struct {
	id      uint32
	m       *method
	start   time.Time
	timeout time.Duration // from grpc-timeout; 0: none
	buf     []byte        // the request so far: prefix, then message
	want    int           // message length, once the prefix is in

	// Read loop only.
	recvWindow int64
	recvUsed   int64 // bytes consumed since the stream's last WINDOW_UPDATE

	// Guarded by conn.mu.
	sendWindow int64
	handling   bool // the request is complete and its handler runs
	reset      bool // the client reset it or the server gave up: write nothing more
	cancel     context.CancelFunc
}

func (c *conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol) // client streams are odd
	}
	c.mu.Lock()
	if c.streams[id] != nil {
		c.mu.Unlock()
		// A second HEADERS is the client's trailers: a unary call has none.
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	if id <= c.lastStream {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol) // stream ids only grow
	}
	c.lastStream = id
	refused := c.goingAway || len(c.streams) >= int(c.s.cfg.MaxConcurrentStreams)
	c.mu.Unlock()
	if refused {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	ended := f.StreamEnded()
	if f.Truncated {
		return c.refuse(id, ended, status.New(codes.ResourceExhausted,
			fmt.Sprintf("request headers exceed %d bytes", c.s.cfg.MaxHeaderListSize)))
	}
	path := f.PseudoValue("path")
	if f.PseudoValue("method") != http.MethodPost || path == "" {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	var contentType, timeout, encoding string
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "content-type":
			contentType = hf.Value
		case "grpc-timeout":
			timeout = hf.Value
		case "grpc-encoding":
			encoding = hf.Value
		}
	}
	if !isGRPC(contentType) {
		return c.refuseHTTP(id, ended, http.StatusUnsupportedMediaType)
	}
	st := &stream{id: id, start: time.Now(), recvWindow: initialWindow}
	if timeout != "" {
		d, ok := parseTimeout(timeout)
		if !ok {
			return c.refuse(id, ended, status.Newf(codes.Internal, "malformed grpc-timeout %q", timeout))
		}
		st.timeout = d
	}
	if encoding != "" && encoding != "identity" {
		return c.refuse(id, ended, status.Newf(codes.Unimplemented, "grpc: Decompressor is not installed for grpc-encoding %q", encoding))
	}
	if st.m = c.s.methods[path]; st.m == nil {
		return c.refuse(id, ended, status.New(codes.Unimplemented, unknownMethod(path)))
	}
	if ended {
		return c.refuse(id, ended, status.New(codes.Internal, "grpc: the request ended before its message"))
	}
	c.mu.Lock()
	st.sendWindow = c.peerInitWindow
	c.streams[id] = st
	if len(c.streams) == 1 && c.s.cfg.MaxConnectionIdle > 0 {
		_ = c.nc.SetReadDeadline(time.Time{}) // busy: no idle timeout
	}
	c.mu.Unlock()
	return nil
}

func (c *conn) onData(f *http2.DataFrame) error {
	n := int64(f.Length) // flow control counts padding too
	if n > c.connRecvWindow {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.connRecvWindow -= n
	// Every byte is consumed at once (copied into its call or dropped), so
	// the connection's window is given back as soon as half of it is used.
	if c.connRecvUsed += n; c.connRecvUsed >= initialWindow/2 {
		inc := c.connRecvUsed
		c.connRecvUsed, c.connRecvWindow = 0, c.connRecvWindow+inc
		if err := c.write(func() error { return c.fr.WriteWindowUpdate(0, uint32(inc)) }); err != nil { //nolint:gosec // <= initialWindow
			return err
		}
	}
	id := f.StreamID
	c.mu.Lock()
	st := c.streams[id]
	var handling bool
	if st != nil {
		handling = st.handling
	}
	err := c.checkClosedStream(id)
	c.mu.Unlock()
	switch {
	case st == nil:
		return err // a refused or reset stream's data is dropped
	case handling:
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed} // data after END_STREAM
	case n > st.recvWindow:
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeFlowControl}
	}
	st.recvWindow -= n
	if bad := st.add(f.Data(), c.s.cfg.MaxRecvMsgSize); bad != nil {
		c.drop(st)
		return c.refuse(id, f.StreamEnded(), bad)
	}
	if f.StreamEnded() {
		return c.dispatch(st)
	}
	if st.recvUsed += n; st.recvUsed >= initialWindow/2 {
		inc := st.recvUsed
		st.recvUsed, st.recvWindow = 0, st.recvWindow+inc
		return c.write(func() error { return c.fr.WriteWindowUpdate(id, uint32(inc)) }) //nolint:gosec // <= initialWindow
	}
	return nil
}

// add appends request bytes, checking the prefix once it is in: the
// buffer never holds more than the prefix and one message of at most
// limit bytes.
func (st *stream) add(p []byte, limit int) *status.Status {
	total := len(st.buf) + len(p)
	if len(st.buf) < prefixLen && total >= prefixLen {
		var hdr [prefixLen]byte
		copy(hdr[copy(hdr[:], st.buf):], p)
		switch hdr[0] {
		case 0:
		case 1:
			return status.New(codes.Internal, "grpc: compressed flag set with identity or empty encoding")
		default:
			return status.Newf(codes.Internal, "grpc: invalid message flag %d", hdr[0])
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if uint64(n) > uint64(limit) { //nolint:gosec // limit > 0
			return status.Newf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, limit)
		}
		st.want = int(n)
	}
	if total > prefixLen && total > prefixLen+st.want {
		return status.New(codes.Internal, "grpc: more than one request message in a unary call")
	}
	st.buf = append(st.buf, p...)
	return nil
}

// drop forgets a stream the server refuses midway.
func (c *conn) drop(st *stream) {
	c.mu.Lock()
	c.abandon(st)
	c.mu.Unlock()
}

// dispatch starts the handler of a complete request.
func (c *conn) dispatch(st *stream) error {
	if len(st.buf) < prefixLen || len(st.buf) != prefixLen+st.want {
		c.drop(st)
		return c.refuse(st.id, true, status.New(codes.Internal, "grpc: the request ended inside its message"))
	}
	ctx, cancel := context.WithCancel(c.ctx)
	if st.timeout > 0 {
		ctx, cancel = context.WithDeadline(c.ctx, st.start.Add(st.timeout))
	}
	c.mu.Lock()
	if st.reset || c.closed {
		c.mu.Unlock()
		cancel()
		return nil
	}
	st.handling, st.cancel = true, cancel
	c.s.calls.Add(1) // under mu with !closed: GracefulStop's Wait cannot have begun
	c.mu.Unlock()
	c.s.run(func() { c.run(ctx, st) })
	return nil
}

// run calls the handler and writes its response.
func (c *conn) run(ctx context.Context, st *stream) {
	defer c.s.calls.Done()
	msg := st.buf[prefixLen:]
	dec := func(v any) error {
		m, ok := v.(proto.Message)
		if !ok {
			return status.Errorf(codes.Internal, "grpc: %T is not a protobuf message", v)
		}
		if err := proto.Unmarshal(msg, m); err != nil {
			return status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
		}
		return nil
	}
	resp, err := st.m.handler(st.m.impl, peer.NewContext(ctx, c.peer), dec, c.s.interceptor)
	st.cancel()
	st.buf = nil
	var out []byte
	if err == nil {
		out, err = marshal(resp)
	}
	c.respond(st, out, err)
	c.mu.Lock()
	c.removeLocked(st)
	c.mu.Unlock()
}

func marshal(resp any) ([]byte, error) {
	m, ok := resp.(proto.Message)
	if !ok {
		return nil, status.Errorf(codes.Internal, "grpc: response %T is not a protobuf message", resp)
	}
	buf := make([]byte, prefixLen, prefixLen+proto.Size(m))
	buf, err := proto.MarshalOptions{}.MarshalAppend(buf, m)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err)
	}
	n := len(buf) - prefixLen
	if uint64(n) > math.MaxUint32 { //nolint:gosec // n >= 0
		return nil, status.Errorf(codes.ResourceExhausted, "grpc: response of %d bytes", n)
	}
	binary.BigEndian.PutUint32(buf[1:], uint32(n)) //nolint:gosec // checked above
	return buf, nil
}

// unknownMethod words a missing method as grpc-go does.
func unknownMethod(path string) string {
	svc, name, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok {
		return fmt.Sprintf("malformed method name: %q", path)
	}
	return fmt.Sprintf("unknown method %s for service %s", name, svc)
}

// isGRPC: "application/grpc", optionally followed by "+codec" or ";params".
func isGRPC(contentType string) bool {
	const base = "application/grpc"
	if len(contentType) < len(base) || !strings.EqualFold(contentType[:len(base)], base) {
		return false
	}
	rest := contentType[len(base):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// parseTimeout reads grpc-timeout: at most 8 digits and a unit (H, M, S,
// m, u, n); an overflowing value means no practical limit.
func parseTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	var v int64
	for _, ch := range s[:len(s)-1] {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		v = v*10 + int64(ch-'0')
	}
	const maxDuration = time.Duration(1<<63 - 1)
	if v > int64(maxDuration/unit) {
		return maxDuration, true
	}
	return time.Duration(v) * unit, true
}
