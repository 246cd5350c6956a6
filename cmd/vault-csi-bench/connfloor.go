package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// connFloorFlag runs the bench binary as the connection-floor server.
const connFloorFlag = "--conn-floor-server"

// The connection floor: what any Go server process pays in CPU for the
// socket I/O of kubelet's calls (a new connection per call) on this
// machine, measured with a server that answers the same frames with canned
// bytes and does nothing else: no HTTP/2 state, no handler, no Vault. A
// re-publish that is not due costs the driver this floor plus its own work.

// cannedFrames are a connection's server SETTINGS, a SETTINGS ACK, and a
// response to each kind of call (stream id patched in per call).
type cannedFrames struct {
	settings, settingsAck []byte
	capabilities, empty   []byte // NodeGetCapabilities' answer; NodePublishVolume's (empty)
}

func newCannedFrames() (*cannedFrames, error) {
	var c cannedFrames
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 64}); err != nil {
		return nil, err
	}
	c.settings = bytes.Clone(b.Bytes())
	b.Reset()
	if err := fr.WriteSettingsAck(); err != nil {
		return nil, err
	}
	c.settingsAck = bytes.Clone(b.Bytes())
	caps, err := proto.Marshal(&csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{{
		Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP}},
	}}})
	if err != nil {
		return nil, err
	}
	if c.capabilities, err = cannedResponse(caps); err != nil {
		return nil, err
	}
	if c.empty, err = cannedResponse(nil); err != nil {
		return nil, err
	}
	return &c, nil
}

// cannedResponse is headers, the message and trailers on stream 1; every
// header is a literal, so the bytes decode the same on any connection.
func cannedResponse(msg []byte) ([]byte, error) {
	var out, hb bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	block := func(fields ...[2]string) []byte {
		hb.Reset()
		enc := hpack.NewEncoder(&hb)
		enc.SetMaxDynamicTableSizeLimit(0)
		for _, f := range fields {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true}) // never indexed
		}
		return bytes.Clone(hb.Bytes())
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true,
		BlockFragment: block([2]string{":status", "200"}, [2]string{"content-type", "application/grpc"})}); err != nil {
		return nil, err
	}
	data := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))) //nolint:gosec // a few bytes
	if err := fr.WriteData(1, false, append(data, msg...)); err != nil {
		return nil, err
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true, EndStream: true,
		BlockFragment: block([2]string{"grpc-status", "0"})}); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// onStream copies a canned response with its frames' stream id set.
func onStream(canned []byte, id uint32) []byte {
	out := bytes.Clone(canned)
	for off := 0; off+9 <= len(out); { // frame headers: length (3), type, flags, stream (4)
		n := int(out[off])<<16 | int(out[off+1])<<8 | int(out[off+2])
		binary.BigEndian.PutUint32(out[off+5:], id)
		off += 9 + n
	}
	return out
}

// serveConnFloor serves on l until it is closed (the floor server runs
// until the bench kills it).
func serveConnFloor(l net.Listener) error {
	frames, err := newCannedFrames()
	if err != nil {
		return err
	}
	for {
		c, err := l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go frames.serve(c)
	}
}

// serve answers one connection: SETTINGS are acknowledged, each request
// that ends gets its canned response (an empty request message is
// NodeGetCapabilities). Nothing else is parsed.
func (f *cannedFrames) serve(c net.Conn) {
	defer c.Close()
	if _, err := c.Write(f.settings); err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	var pending []byte
	prefaceLeft := len(http2.ClientPreface)
	unacked := 0 // request bytes not yet given back to the connection's window
	// Ends when the client closes.
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		pending = append(pending, buf[:n]...)
		if skip := min(prefaceLeft, len(pending)); skip > 0 {
			pending, prefaceLeft = pending[skip:], prefaceLeft-skip
		}
		var out []byte
		for len(pending) >= 9 {
			size := int(pending[0])<<16 | int(pending[1])<<8 | int(pending[2])
			if len(pending) < 9+size {
				break
			}
			typ, flags, id := http2.FrameType(pending[3]), http2.Flags(pending[4]), binary.BigEndian.Uint32(pending[5:9])&(1<<31-1)
			switch {
			case typ == http2.FrameSettings && flags&http2.FlagSettingsAck == 0:
				out = append(out, f.settingsAck...)
			case typ == http2.FrameData:
				// A shared connection carries many requests: give their
				// bytes back to its flow-control window, as a server must.
				if unacked += size; unacked >= 32<<10 {
					out = binary.BigEndian.AppendUint32(append(out, 0, 0, 4, byte(http2.FrameWindowUpdate), 0, 0, 0, 0, 0), uint32(unacked)) //nolint:gosec // < 64 KiB
					unacked = 0
				}
				if flags&http2.FlagDataEndStream != 0 {
					canned := f.empty
					if size <= 5 {
						canned = f.capabilities
					}
					out = append(out, onStream(canned, id)...)
				}
			}
			pending = pending[9+size:]
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}
}

// connFloorProc is a running floor server.
type connFloorProc struct {
	cmd    *exec.Cmd
	socket string
}

func startConnFloor(ctx context.Context, root string) (*connFloorProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p := &connFloorProc{socket: filepath.Join(root, "floor.sock")}
	p.cmd = exec.CommandContext(ctx, self, connFloorFlag, p.socket)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	for range 500 {
		if _, err := os.Stat(p.socket); err == nil {
			return p, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("connection-floor server: no socket at %s", p.socket)
}

func (p *connFloorProc) pid() int { return p.cmd.Process.Pid }

func (p *connFloorProc) stop() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	_ = os.Remove(p.socket)
}
