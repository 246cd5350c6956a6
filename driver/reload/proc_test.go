package reload

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// TestSendRealCgroups puts a real shell into a real cgroup laid out as
// kubelet lays out a container's (v1 pids hierarchy with the cgroupfs
// driver's naming; the hybrid host's cgroup v2 mount with the systemd
// driver's scope name), finds it by the container id among every process
// of the host, and signals it through a pidfd.
func TestSendRealCgroups(t *testing.T) {
	need.Long(t, "creates cgroups and processes")
	need.Root(t, "creates cgroups")
	for _, tt := range []struct {
		name, mount, pod, leaf string
	}{
		{"cgroup v1, cgroupfs naming", "/sys/fs/cgroup/pids", "pod" + testPodUID, testID},
		{"cgroup v2, systemd naming", "/sys/fs/cgroup/unified", "kubepods-besteffort-pod" + testPodUS + ".slice", "cri-containerd-" + testID + ".scope"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat(filepath.Join(tt.mount, "cgroup.procs")); err != nil {
				need.Missing(t, "a cgroup hierarchy at %s", tt.mount)
			}
			b := make([]byte, 4)
			_, _ = rand.Read(b)
			base := filepath.Join(tt.mount, "vcd-reload-test-"+hex.EncodeToString(b))
			cg := filepath.Join(base, "kubepods", "besteffort", tt.pod, tt.leaf)
			if err := os.MkdirAll(cg, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				// Deepest first; a cgroup is removable once its processes are gone.
				for d := cg; d != tt.mount; d = filepath.Dir(d) {
					for i := 0; i < 100; i++ {
						if err := os.Remove(d); err == nil || errors.Is(err, os.ErrNotExist) {
							break
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
			})
			dir := t.TempDir()
			out, ready := filepath.Join(dir, "signals"), filepath.Join(dir, "ready")
			// The container's main process: records each SIGHUP, and keeps
			// starting children (processes whose parent is in the container).
			main := start(t, "sh", "-c", `trap 'echo hup >> "$0"' HUP; : > "$1"; while :; do sleep 0.05; done`, out, ready)
			join(t, cg, main.Process.Pid)
			waitFile(t, ready)
			// A process `kubectl exec` would start: in the container, its
			// parent outside, started later.
			var execd *exec.Cmd
			for i := 0; ; i++ {
				execd = start(t, "sleep", "600")
				if startTime(t, execd.Process.Pid) > startTime(t, main.Process.Pid) || i == 20 {
					break
				}
				stop(execd)
				time.Sleep(20 * time.Millisecond)
			}
			join(t, cg, execd.Process.Pid)
			// A process outside the container: a recycled pid looks like this.
			outside := start(t, "sleep", "600")

			h := Host{}
			pid, err := h.Send(testPodUID, testID, unix.SIGHUP)
			if err != nil || pid != main.Process.Pid {
				t.Fatalf("Send = %d, %v; want the main process %d (exec'd %d)", pid, err, main.Process.Pid, execd.Process.Pid)
			}
			waitLine(t, out, "hup")
			if err := h.Signal(outside.Process.Pid, testPodUID, testID, unix.SIGTERM); !errors.Is(err, ErrNotFound) {
				t.Errorf("Signal of a pid outside the container = %v, want ErrNotFound", err)
			}
			if err := unix.Kill(outside.Process.Pid, 0); err != nil {
				t.Errorf("the process outside the container was hurt: %v", err)
			}
			if _, err := h.FindInit(otherPod, testID); !errors.Is(err, ErrNotFound) {
				t.Errorf("FindInit for another pod's uid = %v, want ErrNotFound", err)
			}
			stop(main)
			stop(execd)
			if err := h.Signal(main.Process.Pid, testPodUID, testID, unix.SIGHUP); !errors.Is(err, ErrNotFound) {
				t.Errorf("Signal of an exited process = %v, want ErrNotFound", err)
			}
			// Killed children may take a moment to exit (and be reaped).
			var gone error
			for i := 0; i < 200 && !errors.Is(gone, ErrNotFound); i++ {
				time.Sleep(10 * time.Millisecond)
				_, gone = h.FindInit(testPodUID, testID)
			}
			if !errors.Is(gone, ErrNotFound) {
				t.Errorf("FindInit with the container's processes gone = %v; want ErrNotFound", gone)
			}
		})
	}
}

func start(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	c := exec.Command(name, args...)
	c.SysProcAttr = &unix.SysProcAttr{Setpgid: true} // stop kills its children too
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(c) })
	return c
}

// stop kills a process group and reaps its leader; idempotent.
func stop(c *exec.Cmd) {
	_ = unix.Kill(-c.Process.Pid, unix.SIGKILL)
	_, _ = c.Process.Wait()
}

func join(t *testing.T, cg string, pid int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func startTime(t *testing.T, pid int) uint64 {
	t.Helper()
	p, err := Host{}.stat(pid)
	if err != nil {
		t.Fatal(err)
	}
	return p.start
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never appeared", path)
}

func waitLine(t *testing.T, path, line string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), line) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never got the line %q", path, line)
}
