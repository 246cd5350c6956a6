package reload

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxProcs bounds one scan of /proc: Linux's largest pid_max is 4M.
const maxProcs = 1 << 22

// Host finds and signals processes through a /proc that shows the host's
// PID namespace.
type Host struct {
	// Proc is the proc mount ("" means /proc).
	Proc string
}

func (h Host) proc() string {
	if h.Proc == "" {
		return "/proc"
	}
	return h.Proc
}

// proc is what a scan learns of one process.
type proc struct {
	pid, ppid int
	start     uint64 // start time in clock ticks since boot (stat field 22)
	nsInit    bool   // PID 1 in its innermost PID namespace
	dead      bool   // a zombie, or exiting: no signal reaches it
}

// FindInit returns the container's main process: a process whose cgroup
// names the container and whose parent's does not (the runtime started
// it). Processes `kubectl exec` started also have a parent outside the
// container; among several, the one that is PID 1 of its own PID
// namespace wins, else the one that started first.
func (h Host) FindInit(podUID, containerID string) (int, error) {
	d, err := os.Open(h.proc())
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", h.proc(), err)
	}
	names, err := d.Readdirnames(maxProcs)
	_ = d.Close() // a directory opened for reading
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", h.proc(), err)
	}
	in := map[int]bool{}
	var members []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue // not a process
		}
		if h.inContainer(pid, podUID, containerID) {
			in[pid] = true
			members = append(members, pid)
		}
	}
	var best *proc
	for _, pid := range members {
		p, err := h.stat(pid)
		if err != nil || p.dead || in[p.ppid] || h.inContainer(p.ppid, podUID, containerID) {
			continue // gone, or a child of a process in the container
		}
		if best == nil || p.nsInit && !best.nsInit || p.nsInit == best.nsInit && p.start < best.start {
			best = &p
		}
	}
	if best == nil {
		return 0, ErrNotFound
	}
	return best.pid, nil
}

func (h Host) inContainer(pid int, podUID, containerID string) bool {
	b, err := os.ReadFile(filepath.Join(h.proc(), strconv.Itoa(pid), "cgroup"))
	return err == nil && InContainer(string(b), podUID, containerID)
}

// stat reads a process's parent and start time from /proc/<pid>/stat and
// whether it is PID 1 of its PID namespace from /proc/<pid>/status.
func (h Host) stat(pid int) (proc, error) {
	dir := filepath.Join(h.proc(), strconv.Itoa(pid))
	b, err := os.ReadFile(filepath.Join(dir, "stat")) //nolint:gosec // <proc>/<pid number>/stat
	if err != nil {
		return proc{}, err
	}
	p, err := parseStat(string(b))
	if err != nil {
		return proc{}, fmt.Errorf("%s/stat: %w", dir, err)
	}
	p.pid = pid
	if s, err := os.ReadFile(filepath.Join(dir, "status")); err == nil { //nolint:gosec // <proc>/<pid number>/status
		p.nsInit = nsInit(string(s))
	}
	return p, nil
}

// parseStat reads fields 3 (state), 4 (ppid) and 22 (starttime) of a stat line. The
// command (field 2) may hold spaces and parentheses: fields are counted
// after its last ')'.
func parseStat(s string) (proc, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return proc{}, errors.New("no command field")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return proc{}, errors.New("too few fields")
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return proc{}, fmt.Errorf("ppid: %w", err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return proc{}, fmt.Errorf("starttime: %w", err)
	}
	return proc{ppid: ppid, start: start, dead: f[0] == "Z" || f[0] == "X"}, nil
}

// nsInit reads the NSpid line of /proc/<pid>/status: its last number is
// the pid in the innermost PID namespace.
func nsInit(status string) bool {
	for _, line := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			return len(f) > 1 && f[len(f)-1] == "1"
		}
	}
	return false
}

// Signal sends sig to pid through a pidfd, once the pidfd's process is
// known to be in the container: the pidfd pins the process, the cgroup is
// read after it was opened, and a null signal through the pidfd then
// proves the process the cgroup was read of is the pidfd's. A pid
// recycled at any point is never signalled (ErrNotFound).
func (h Host) Signal(pid int, podUID, containerID string, sig unix.Signal) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer func() { _ = unix.Close(fd) }() // nothing to flush
	if !h.inContainer(pid, podUID, containerID) {
		return ErrNotFound // the pid now names another process
	}
	if err := unix.PidfdSendSignal(fd, 0, nil, 0); errors.Is(err, unix.ESRCH) {
		return ErrNotFound // it exited: what was read may be another's
	} else if err != nil {
		return fmt.Errorf("pidfd_send_signal %d: %w", pid, err)
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return ErrNotFound
		}
		return fmt.Errorf("pidfd_send_signal %d %s: %w", pid, unix.SignalName(sig), err)
	}
	return nil
}

// Send finds the container's main process and signals it; it returns the
// pid it signalled.
func (h Host) Send(podUID, containerID string, sig unix.Signal) (int, error) {
	pid, err := h.FindInit(podUID, containerID)
	if err != nil {
		return 0, err
	}
	return pid, h.Signal(pid, podUID, containerID, sig)
}
