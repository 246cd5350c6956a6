// Package rawsock accepts, reads and writes non-blocking sockets with raw
// system calls, for a server whose calls are short and arrive on new
// connections (kubelet opens one per CSI call, two per re-publish).
//
// Go's net package makes accept4, getsockname, read and write through the
// runtime's syscall gate. When the process was idle, the first such call
// wakes the runtime's monitor thread (sysmon), which then polls every 20 us
// until the process is idle again and may hand the CPU to another thread
// when a call outlasts one of its ticks: on a 2-core node that churn was a
// fifth of what a call on a new connection cost the driver. A non-blocking
// socket never blocks in these calls (it returns EAGAIN and the runtime's
// poller waits, with deadlines, as before), so the gate buys nothing here.
// Closing still goes through the gate (the poller owns the descriptor).
package rawsock

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// rawIO does a connection's reads and writes.
type rawIO struct{ rc syscall.RawConn }

func (r rawIO) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n uintptr
	var errno syscall.Errno
	for range 16 { // EINTR: try again, boundedly
		err := r.rc.Read(func(fd uintptr) bool {
			n, _, errno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p))) //nolint:gosec // p outlives the call
			return errno != syscall.EAGAIN                                                                          // on EAGAIN the poller waits for data
		})
		switch {
		case err != nil:
			return 0, err // closed, or the deadline passed
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return 0, opError("read", errno)
		case n == 0:
			return 0, io.EOF
		}
		return int(n), nil
	}
	return 0, opError("read", syscall.EINTR)
}

func (r rawIO) write(p []byte) (int, error) {
	written := 0
	var errno syscall.Errno
	err := r.rc.Write(func(fd uintptr) bool {
		for written < len(p) { // each pass writes at least a byte, or returns
			n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[written])), uintptr(len(p)-written)) //nolint:gosec // p outlives the call
			switch e {
			case 0:
				written += int(n)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // the poller waits for room
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err != nil {
		return written, err
	}
	if errno != 0 {
		return written, opError("write", errno)
	}
	return written, nil
}

func opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "unix", Err: os.NewSyscallError(op, errno)}
}

// Listener is a unix socket listener that accepts with a raw accept4(2):
// no syscall gate, and no getsockname(2) (a unix socket's client has no
// address worth asking). net.UnixListener cannot do this: its raw
// connection refuses reads.
type Listener struct {
	f      *os.File // the listening socket, registered with the runtime's poller
	rc     syscall.RawConn
	addr   *net.UnixAddr
	closed atomic.Bool
}

// Listen binds a stream socket at path (which must not exist) and listens.
func Listen(path string) (*Listener, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := syscall.Listen(fd, backlog()); err != nil {
		_ = syscall.Close(fd)
		_ = os.Remove(path)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("listener %s: %w", path, err)
	}
	return &Listener{f: f, rc: rc, addr: &net.UnixAddr{Name: path, Net: "unix"}}, nil
}

// backlog is the kernel's connection backlog limit, as net uses: a burst
// of pods waits there while connections are bounded (syscall.SOMAXCONN,
// 128, refused the 129th of a burst).
func backlog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return syscall.SOMAXCONN
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return syscall.SOMAXCONN
	}
	return min(n, 1<<16-1) // kernels before 4.1 keep it in 16 bits
}

// Addr is the socket's path.
func (l *Listener) Addr() net.Addr { return l.addr }

// Close stops listening and removes the socket file, as net's unix
// listener does.
func (l *Listener) Close() error {
	l.closed.Store(true)
	err := l.f.Close()
	if rerr := os.Remove(l.addr.Name); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

// temporary is an accept error worth retrying after a pause (out of file
// descriptors): Timeout() is what servers check.
type temporary struct{ error }

func (temporary) Timeout() bool   { return true }
func (temporary) Temporary() bool { return true }

// Accept returns the next connection, its reads and writes raw.
func (l *Listener) Accept() (net.Conn, error) {
	for range 64 { // ECONNABORTED, EINTR: the next one, boundedly
		var nfd uintptr
		var errno syscall.Errno
		err := l.rc.Read(func(fd uintptr) bool {
			nfd, _, errno = syscall.RawSyscall6(syscall.SYS_ACCEPT4, fd, 0, 0,
				syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
			return errno != syscall.EAGAIN
		})
		switch {
		case err != nil:
			if l.closed.Load() {
				return nil, net.ErrClosed
			}
			return nil, fmt.Errorf("accept: %w", err)
		case errno == syscall.ECONNABORTED || errno == syscall.EINTR:
			continue
		case errno == syscall.EMFILE || errno == syscall.ENFILE || errno == syscall.ENOBUFS || errno == syscall.ENOMEM:
			return nil, temporary{opError("accept", errno)}
		case errno != 0:
			return nil, opError("accept", errno)
		}
		// A non-blocking descriptor: os.NewFile registers it with the
		// runtime's poller (its F_GETFL check is a raw call too).
		f := os.NewFile(nfd, "csi-conn")
		rc, err := f.SyscallConn()
		if err != nil {
			_ = f.Close()
			return nil, err
		}
		return &fileConn{f: f, io: rawIO{rc}, laddr: l.addr}, nil
	}
	return nil, temporary{opError("accept", syscall.EINTR)}
}

// fileConn is an accepted connection held as a pollable *os.File.
type fileConn struct {
	f     *os.File
	io    rawIO
	laddr net.Addr
}

// peerAddr is what a unix socket's client usually is: unnamed.
var peerAddr = &net.UnixAddr{Net: "unix"}

func (c *fileConn) Read(p []byte) (int, error)         { return c.io.read(p) }
func (c *fileConn) Write(p []byte) (int, error)        { return c.io.write(p) }
func (c *fileConn) Close() error                       { return c.f.Close() }
func (c *fileConn) LocalAddr() net.Addr                { return c.laddr }
func (c *fileConn) RemoteAddr() net.Addr               { return peerAddr }
func (c *fileConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *fileConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *fileConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }
