package unaryserver

import (
	"encoding/base64"
	"strconv"
	"time"
	"unicode/utf8"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// maxStatusMessage bounds grpc-message: an error that quotes a long request
// field must still fit any client's header limit.
const maxStatusMessage = 4 << 10

var (
	fieldStatusOK   = hpack.HeaderField{Name: ":status", Value: "200"}
	fieldGRPC       = hpack.HeaderField{Name: "content-type", Value: "application/grpc"}
	fieldGRPCStatus = hpack.HeaderField{Name: "grpc-status", Value: "0"}
)

// respond writes a call's outcome: headers, the message and trailers, or
// trailers only for an error. A reset stream gets nothing.
func (c *conn) respond(st *stream, frame []byte, err error) {
	c.mu.Lock()
	reset := st.reset
	c.resetPingStrike = true
	c.mu.Unlock()
	if reset {
		return
	}
	if err != nil {
		_ = c.writeStatus(st.id, statusOf(err))
		return
	}
	// Almost always one pass: a CSI response is far below the 64 KiB a
	// client's windows start with. Each pass sends at least one byte.
	for sent := 0; sent < len(frame); {
		n, ok := c.sendQuota(st, len(frame)-sent)
		if !ok {
			return
		}
		first, last := sent == 0, sent+n == len(frame)
		err := c.write(func() error {
			if first {
				if err := c.writeHeaderBlock(st.id, false, fieldStatusOK, fieldGRPC); err != nil {
					return err
				}
			}
			if err := c.fr.WriteData(st.id, false, frame[sent:sent+n]); err != nil {
				return err
			}
			if last {
				return c.writeHeaderBlock(st.id, true, fieldGRPCStatus)
			}
			return nil
		})
		if err != nil {
			return
		}
		sent += n
	}
}

// statusOf is the status an error returns to the client: its own, or for
// a context's error DEADLINE_EXCEEDED or CANCELLED, as grpc-go does.
func statusOf(err error) *status.Status {
	if st, ok := status.FromError(err); ok {
		return st
	}
	return status.FromContextError(err)
}

// sendQuota takes up to want bytes of the stream's and the connection's
// send windows, waiting (up to WriteTimeout) while either is empty. It
// reports false if the stream was reset, the connection closed or the
// client never opened its window (then the connection is closed).
func (c *conn) sendQuota(st *stream, want int) (int, bool) {
	c.mu.Lock()
	var timer *time.Timer
	expired := false
	for !st.reset && !c.closed && !expired {
		n := min(int64(want), c.connSendWindow, st.sendWindow, int64(c.peerMaxFrame.Load()))
		if n > 0 {
			c.connSendWindow -= n
			st.sendWindow -= n
			c.mu.Unlock()
			if timer != nil {
				timer.Stop()
			}
			return int(n), true
		}
		if timer == nil {
			timer = time.AfterFunc(c.s.cfg.WriteTimeout, func() {
				c.mu.Lock()
				expired = true
				c.sendWindowGrew.Broadcast()
				c.mu.Unlock()
			})
		}
		c.sendWindowGrew.Wait()
	}
	c.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	if expired {
		c.close()
	}
	return 0, false
}

// refuse answers a call the server will not run with its status alone and,
// if the client is still sending, tells it to stop (RST_STREAM NO_ERROR,
// RFC 9113 8.1).
func (c *conn) refuse(id uint32, ended bool, st *status.Status) error {
	c.mu.Lock()
	c.resetPingStrike = true
	c.mu.Unlock()
	if err := c.writeStatus(id, st); err != nil {
		return err
	}
	if ended {
		return nil
	}
	return c.write(func() error { return c.fr.WriteRSTStream(id, http2.ErrCodeNo) })
}

// refuseHTTP answers a request that is not gRPC with a bare HTTP status.
func (c *conn) refuseHTTP(id uint32, ended bool, code int) error {
	err := c.write(func() error {
		return c.writeHeaderBlock(id, true, hpack.HeaderField{Name: ":status", Value: strconv.Itoa(code)})
	})
	if err != nil || ended {
		return err
	}
	return c.write(func() error { return c.fr.WriteRSTStream(id, http2.ErrCodeNo) })
}

// writeStatus sends a trailers-only response.
func (c *conn) writeStatus(id uint32, st *status.Status) error {
	fields := []hpack.HeaderField{fieldStatusOK, fieldGRPC,
		{Name: "grpc-status", Value: strconv.Itoa(int(st.Code()))}}
	if msg := st.Message(); msg != "" {
		fields = append(fields, hpack.HeaderField{Name: "grpc-message", Value: encodeMessage(msg)})
	}
	if p := st.Proto(); len(p.GetDetails()) > 0 {
		if b, err := proto.Marshal(p); err == nil {
			fields = append(fields, hpack.HeaderField{Name: "grpc-status-details-bin", Value: base64.RawStdEncoding.EncodeToString(b)})
		}
	}
	return c.write(func() error { return c.writeHeaderBlock(id, true, fields...) })
}

// writeHeaderBlock encodes fields and writes them as HEADERS plus as many
// CONTINUATION frames as the client's frame size needs. Callers hold wmu.
func (c *conn) writeHeaderBlock(id uint32, endStream bool, fields ...hpack.HeaderField) error {
	c.hbuf.Reset()
	for _, f := range fields {
		if err := c.henc.WriteField(f); err != nil {
			return err
		}
	}
	block := c.hbuf.Bytes()
	limit := int(c.peerMaxFrame.Load())
	frag := block[:min(len(block), limit)]
	block = block[len(frag):]
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: endStream, EndHeaders: len(block) == 0})
	for err == nil && len(block) > 0 { // ends: each pass takes at least one byte
		frag = block[:min(len(block), limit)]
		block = block[len(frag):]
		err = c.fr.WriteContinuation(id, len(block) == 0, frag)
	}
	return err
}

// encodeMessage percent-encodes grpc-message as the gRPC spec asks (bytes
// outside printable ASCII, and '%'), after cutting it to maxStatusMessage
// on a UTF-8 boundary.
func encodeMessage(msg string) string {
	if len(msg) > maxStatusMessage {
		cut := maxStatusMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "..."
	}
	plain := true
	for i := 0; i < len(msg); i++ {
		if ch := msg[i]; ch < ' ' || ch > '~' || ch == '%' {
			plain = false
			break
		}
	}
	if plain {
		return msg
	}
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(msg)+16)
	for i := 0; i < len(msg); i++ {
		ch := msg[i]
		if ch < ' ' || ch > '~' || ch == '%' {
			out = append(out, '%', hex[ch>>4], hex[ch&15])
			continue
		}
		out = append(out, ch)
	}
	return string(out)
}
