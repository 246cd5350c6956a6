package unaryserver

import (
	"errors"
	"time"

	"golang.org/x/net/http2"
)

// The connection-level frames a client sends besides its calls: SETTINGS,
// WINDOW_UPDATE, PING and RST_STREAM.

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	if err := f.ForeachSetting(func(s http2.Setting) error { return s.Valid() }); err != nil {
		return err
	}
	tableSize := uint32(headerTableSize)
	c.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitWindow
			c.peerInitWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			c.sendWindowGrew.Broadcast()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame.Store(s.Val)
		case http2.SettingHeaderTableSize:
			tableSize = s.Val
		case http2.SettingEnablePush, http2.SettingMaxConcurrentStreams, http2.SettingMaxHeaderListSize,
			http2.SettingEnableConnectProtocol, http2.SettingNoRFC7540Priorities:
			// Limits on what the server sends that it never sends (push,
			// streams of its own, headers near 16 KiB): nothing to apply.
		}
		return nil
	})
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.write(func() error {
		// wmu is never taken while holding mu: the encoder's table size
		// is set here, not in the loop above.
		c.henc.SetMaxDynamicTableSizeLimit(tableSize)
		return c.fr.WriteSettingsAck()
	})
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if c.connSendWindow += inc; c.connSendWindow > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.sendWindowGrew.Broadcast()
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		return c.checkClosedStream(f.StreamID)
	}
	if st.sendWindow += inc; st.sendWindow > maxWindow {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	c.sendWindowGrew.Broadcast()
	return nil
}

// errTooManyPings closes a connection that pings too often.
var errTooManyPings = errors.New("too many pings")

func (c *conn) onPing(f *http2.PingFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	now := time.Now()
	switch {
	case c.resetPingStrike:
		c.resetPingStrike, c.pingStrikes = false, 0
	case len(c.streams) == 0 || now.Sub(c.lastPing) < c.s.cfg.MinPingInterval:
		c.pingStrikes++
	}
	c.lastPing = now
	strikes := c.pingStrikes
	c.mu.Unlock()
	if strikes > maxPingStrikes {
		return errTooManyPings
	}
	return c.write(func() error { return c.fr.WritePing(true, f.Data) })
}

func (c *conn) onReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[f.StreamID]
	if st == nil {
		return c.checkClosedStream(f.StreamID)
	}
	c.abandon(st)
	return nil
}

// checkClosedStream: a frame for a stream the server does not hold is fine
// for one that has closed, a protocol error for one never opened. Callers
// hold mu.
func (c *conn) checkClosedStream(id uint32) error {
	if id > c.lastStream {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil
}
