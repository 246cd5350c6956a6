package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// driverProc is the driver the bench started (nil fields with --socket).
type driverProc struct {
	cmd      *exec.Cmd
	done     chan struct{}
	socket   string
	stateDir string
	logPath  string
	logFile  *os.File
	pid      int
}

func startDriver(ctx context.Context, c *config, vaultAddr, authMount, root string, extra ...string) (*driverProc, error) {
	bin := c.driverBin
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("driver binary %s: %w (run `make build`, or pass --socket)", bin, err)
	}
	stateDir, err := os.MkdirTemp("/dev/shm", "vcsi-bench-state-")
	if err != nil {
		return nil, err
	}
	d := &driverProc{socket: filepath.Join(root, "csi.sock"), stateDir: stateDir, done: make(chan struct{})}
	d.logPath = c.driverLog
	if d.logPath == "" {
		d.logPath = filepath.Join(root, "driver.log")
	}
	if d.logFile, err = os.Create(d.logPath); err != nil {
		os.RemoveAll(stateDir)
		return nil, err
	}
	args := []string{
		"--endpoint=unix://" + d.socket, "--node-id=bench-node",
		"--vault-addr=" + vaultAddr, "--auth-method=" + c.auth, "--auth-mount=" + authMount,
		"--audience=" + c.audience,
		"--state-dir=" + stateDir, "--kubelet-dir=" + root,
		"--rotation-period=" + c.rotPeriod.String(), "--shutdown-grace=5s",
	}
	args = append(args, extra...)
	args = append(args, c.driverArgs...)
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.logFile, d.logFile
	d.cmd.Env = append(os.Environ(), "VAULT_TOKEN=") // never hand the driver the bench's root token
	// If the bench dies without cleaning up, the driver goes with it.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		d.logFile.Close()
		os.RemoveAll(stateDir)
		return nil, err
	}
	d.pid = d.cmd.Process.Pid
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(d.socket); err == nil {
			break
		}
		select {
		case <-d.done:
			return d, fmt.Errorf("driver exited at start: %s", d.tail(20))
		case <-ctx.Done():
			return d, ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return d, fmt.Errorf("driver socket never appeared: %s", d.tail(20))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return d, nil
}

func (d *driverProc) alive() bool {
	if d == nil || d.cmd == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, then SIGKILL after 15s, and removes the state dir.
func (d *driverProc) stop() {
	if d == nil {
		return
	}
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(15 * time.Second):
			_ = d.cmd.Process.Kill()
			select {
			case <-d.done:
			case <-time.After(10 * time.Second):
			}
		}
	}
	if d.logFile != nil {
		d.logFile.Close()
	}
	if d.stateDir != "" {
		os.RemoveAll(d.stateDir)
	}
}

// stateFiles counts the driver's per-volume records.
func (d *driverProc) stateFiles() int {
	if d == nil || d.stateDir == "" {
		return -1
	}
	n := 0
	_ = filepath.WalkDir(d.stateDir, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func (d *driverProc) tail(lines int) string {
	if d == nil || d.logPath == "" {
		return ""
	}
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return ""
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// procStats is a driver process sample from /proc.
type procStats struct {
	RSSBytes   int64   `json:"rss_bytes"`
	AnonBytes  int64   `json:"rss_anon_bytes"` // heap, stacks: what the driver allocated
	FileBytes  int64   `json:"rss_file_bytes"` // the binary's mapped pages
	CPUSeconds float64 `json:"cpu_seconds"`
	Threads    int     `json:"threads"`
	FDs        int     `json:"fds"`
	OK         bool    `json:"ok"`
}

// clkTck is USER_HZ, 100 on every Linux architecture Go supports.
const clkTck = 100

func readProc(pid int) procStats {
	var s procStats
	if pid <= 0 {
		return s
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			s.RSSBytes = kb * 1024
		case "RssAnon:":
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			s.AnonBytes = kb * 1024
		case "RssFile:":
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			s.FileBytes = kb * 1024
		case "Threads:":
			s.Threads, _ = strconv.Atoi(f[1])
		}
	}
	cpu, ok := cpuSeconds(pid)
	if !ok {
		return s
	}
	s.CPUSeconds = cpu
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		s.FDs = len(ents)
	}
	s.OK = s.RSSBytes > 0
	return s
}

// cpuSeconds is the CPU time of the process, all its threads: its POSIX
// CPU clock (the scheduler's runtime in ns; utime+stime are the same
// figure cut to 10 ms ticks, too coarse around one 3 ms publish), else
// utime+stime from /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, bool) {
	if pid <= 0 {
		return 0, false
	}
	var ts unix.Timespec
	// MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED), as clock_getcpuclockid(3).
	if err := unix.ClockGettime(int32((^pid)<<3|2), &ts); err == nil {
		return float64(ts.Nano()) / 1e9, true
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// Fields after the parenthesised command name: state is field 3,
	// utime field 14, stime field 15.
	rest := string(st)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return (ut + stime) / clkTck, true
}

// csiClient calls the node plugin. In kubelet mode every call dials a new
// connection and closes it afterwards, as kubelet's csiDriverClient does.
type csiClient struct {
	socket  string
	kubelet bool
	shared  *grpc.ClientConn
	timeout time.Duration
}

func dialCSI(socket string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}))
}

func newCSIClient(socket string, kubelet bool, timeout time.Duration) (*csiClient, error) {
	conn, err := dialCSI(socket)
	if err != nil {
		return nil, err
	}
	return &csiClient{socket: socket, kubelet: kubelet, shared: conn, timeout: timeout}, nil
}

func (c *csiClient) close() {
	if c != nil && c.shared != nil {
		c.shared.Close()
	}
}

// with runs fn on a connection (new per call in kubelet mode).
func (c *csiClient) with(ctx context.Context, kubelet bool, fn func(context.Context, *grpc.ClientConn) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn := c.shared
	if kubelet {
		var err error
		if conn, err = dialCSI(c.socket); err != nil {
			return err
		}
		defer conn.Close()
	}
	return fn(ctx, conn)
}

func (c *csiClient) publish(ctx context.Context, kubelet bool, req *csi.NodePublishVolumeRequest) (time.Duration, error) {
	start := time.Now()
	err := c.with(ctx, kubelet, func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := csi.NewNodeClient(conn).NodePublishVolume(ctx, req)
		return err
	})
	return time.Since(start), err
}

func (c *csiClient) unpublish(ctx context.Context, kubelet bool, volID, target string) (time.Duration, error) {
	start := time.Now()
	err := c.with(ctx, kubelet, func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := csi.NewNodeClient(conn).NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: target})
		return err
	})
	return time.Since(start), err
}

// supportsMountGroup is kubelet's NodeSupportsVolumeMountGroup, asked
// before every SetUp of a pod with an fsGroup.
func (c *csiClient) supportsMountGroup(ctx context.Context, kubelet bool) (bool, error) {
	var ok bool
	err := c.with(ctx, kubelet, func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := csi.NewNodeClient(conn).NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
		if err != nil {
			return err
		}
		for _, cp := range resp.GetCapabilities() {
			if cp.GetRpc().GetType() == csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP {
				ok = true
			}
		}
		return nil
	})
	return ok, err
}

// waitReady probes until the plugin says ready and returns its info.
func (c *csiClient) waitReady(ctx context.Context, limit time.Duration) (*csi.GetPluginInfoResponse, error) {
	deadline := time.Now().Add(limit)
	var last error
	for i := 0; i < 10000 && time.Now().Before(deadline); i++ {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := csi.NewIdentityClient(c.shared).Probe(pctx, &csi.ProbeRequest{})
		cancel()
		if err == nil && (resp.GetReady() == nil || resp.GetReady().GetValue()) {
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			info, err := csi.NewIdentityClient(c.shared).GetPluginInfo(ictx, &csi.GetPluginInfoRequest{})
			cancel()
			return info, err
		}
		if err != nil {
			last = err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
	if last == nil {
		last = errors.New("probe never answered ready")
	}
	return nil, fmt.Errorf("driver not ready after %s: %w", limit, last)
}
