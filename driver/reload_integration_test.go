package driver_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"vaultcsi.dev/driver/provider/vaulttest"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// fakeContainerID names the test's "container": a real shell in a real
// cgroup laid out as kubelet's cgroupfs driver lays out containerd's.
const fakeContainerID = "5e1f0c2a7b3d4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"

// testReloadSignals runs the driver binary with --reload-signals against
// the real API server (the pod and its container status) and a real
// process in a real cgroup of this host named for that pod and container:
// the only part not real is that no kubelet started the process.
func testReloadSignals(t *testing.T, c *kubeCluster) {
	need.Root(t, "creates cgroups and mounts tmpfs")
	const pidsMount = "/sys/fs/cgroup/pids"
	if _, err := os.Stat(filepath.Join(pidsMount, "cgroup.procs")); err != nil {
		need.Missing(t, "a cgroup v1 pids hierarchy at %s", pidsMount)
	}
	pod := c.createPod(t, "shop", "reload-app", "payment", nil)
	setContainerState(t, c, pod, corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}})
	signals := startContainer(t, pidsMount, pod.PodUID)

	put := func(val string) {
		t.Helper()
		if _, err := vaultSrv.Root.KVv2("secret").Put(context.Background(), "rotating", map[string]any{"value": val}); err != nil {
			t.Fatal(err)
		}
	}
	put("r1")
	withReload := func(target, reload string) volume {
		return volume{target: target, pod: pod, secrets: rotatingSecret, extra: map[string]string{"reload": reload}}
	}

	// Off (the default): refused before any Vault call.
	off := startObservedDriver(t, vaultSrv, "--kubeconfig="+c.kubeconfig)
	before := off.scrape(t).vaultRequests()
	target := newTarget(t)
	_, err := off.node.NodePublishVolume(ctxT(t), withReload(target, "signal: SIGHUP").request())
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "reload") {
		t.Fatalf("reload with the feature off: %v, want FailedPrecondition naming reload", err)
	}
	if n := off.scrape(t).vaultRequests() - before; n != 0 {
		t.Errorf("%v Vault requests for a refused publish", n)
	}
	assertNothingMounted(t, target)

	d := startObservedDriver(t, vaultSrv, "--kubeconfig="+c.kubeconfig, "--reload-signals")
	before = d.scrape(t).vaultRequests()
	_, err = d.node.NodePublishVolume(ctxT(t), withReload(target, "container: db\nsignal: SIGHUP").request())
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "reload.container") || !strings.Contains(err.Error(), `"db"`) {
		t.Fatalf("a container not in the pod: %v, want InvalidArgument naming reload.container", err)
	}
	if n := d.scrape(t).vaultRequests() - before; n != 0 {
		t.Errorf("%v Vault requests for a refused publish", n)
	}
	assertNothingMounted(t, target)

	v := withReload(target, "container: app\nsignal: SIGHUP")
	republish := func() {
		t.Helper()
		age(t, d.stateDir, target, time.Hour)
		if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
		t.Fatal(err)
	}
	republish() // due, but nothing changed
	// The signal is sent after the target lock, before the call returns.
	put("r2")
	republish()
	defer func() {
		if t.Failed() {
			t.Logf("driver logs:\n%s", tail(d.logs.String(), 6000))
		}
	}()
	waitSignals(t, signals, 1)
	if got := read(t, filepath.Join(target, "value")); got != "r2" {
		t.Errorf("value = %q after the signal, want r2", got)
	}
	republish() // nothing changed again: no second signal
	put("r3")
	republish()
	if n := waitSignals(t, signals, 2); n != 2 {
		t.Errorf("%d signals for 2 changes (first publish, 2 unchanged refreshes): want one per change", n)
	}
	if got := d.scrape(t).value("vault_csi_reload_signals_total", map[string]string{"signal": "SIGHUP", "outcome": "ok"}); got != 2 {
		t.Errorf("vault_csi_reload_signals_total{ok} = %v, want 2", got)
	}
	var sent []string // latency_ms of each signal sent: pod read, /proc scan, pidfd
	for _, l := range strings.Split(d.logs.String(), "\n") {
		var e struct {
			Action  string  `json:"action"`
			Error   string  `json:"error"`
			Latency float64 `json:"latency_ms"`
		}
		if json.Unmarshal([]byte(l), &e) == nil && e.Action == "signal" && e.Error == "" {
			sent = append(sent, strconv.FormatFloat(e.Latency, 'f', 2, 64))
		}
	}
	if len(sent) != 2 {
		t.Errorf(`%d audit lines with "action":"signal" and no error, want 2`, len(sent))
	}
	t.Logf("signal latency after the swap (ms): %v", sent)
	waitEvent(t, c, pod, "Normal", "VaultSecretsReloadSignalled", "SIGHUP")

	// The container stopped: no signal, a Warning, and the files still rotate.
	setContainerState(t, c, pod, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}})
	put("r4")
	republish()
	if got := read(t, filepath.Join(target, "value")); got != "r4" {
		t.Errorf("value = %q, want r4: a container not running must not stop the rotation", got)
	}
	waitEvent(t, c, pod, "Warning", "VaultSecretsReloadFailed", "not running")
	if got := d.scrape(t).value("vault_csi_reload_signals_total", map[string]string{"outcome": "not-running"}); got != 1 {
		t.Errorf("vault_csi_reload_signals_total{not-running} = %v, want 1", got)
	}
	if n := countLines(signals); n != 2 {
		t.Errorf("%d signals, want still 2", n)
	}

	// Running by its status, but no process of that container on the node.
	setContainerStatus(t, c, pod, "containerd://"+strings.Repeat("ab", 32), corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}})
	put("r5")
	republish()
	waitEvent(t, c, pod, "Warning", "VaultSecretsReloadFailed", "not-found")
	if got := d.scrape(t).value("vault_csi_reload_signals_total", map[string]string{"outcome": "not-found"}); got != 1 {
		t.Errorf("vault_csi_reload_signals_total{not-found} = %v, want 1", got)
	}
	if got := read(t, filepath.Join(target, "value")); got != "r5" {
		t.Errorf("value = %q, want r5", got)
	}
	if n := countLines(signals); n != 2 {
		t.Errorf("%d signals, want still 2", n)
	}
	unpublish(t, d.driverProc, target)
}

// setContainerState sets the status of the pod's one container "app"
// as kubelet would report it.
func setContainerState(t *testing.T, c *kubeCluster, p vaulttest.Pod, st corev1.ContainerState) {
	t.Helper()
	setContainerStatus(t, c, p, "containerd://"+fakeContainerID, st)
}

func setContainerStatus(t *testing.T, c *kubeCluster, p vaulttest.Pod, id string, st corev1.ContainerState) {
	t.Helper()
	pods := c.cs.CoreV1().Pods(p.Namespace)
	pod, err := pods.Get(ctxT(t), p.PodName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Image: "busybox:1.35", ContainerID: id,
		State: st, Ready: st.Running != nil}}
	if _, err := pods.UpdateStatus(ctxT(t), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// startContainer runs a shell that appends a line to the returned file on
// each SIGHUP, in the cgroup kubepods/besteffort/pod<uid>/<id> of the v1
// pids hierarchy, and removes both when the test ends.
func startContainer(t *testing.T, mount, podUID string) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	cg := filepath.Join(mount, "vcd-driver-test-"+hex.EncodeToString(b), "kubepods", "besteffort", "pod"+podUID, fakeContainerID)
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out, ready := filepath.Join(dir, "signals"), filepath.Join(dir, "ready")
	cmd := exec.Command("sh", "-c", `trap 'echo hup >> "$0"' HUP; : > "$1"; while :; do sleep 3600 & wait $!; kill $! 2>/dev/null; done`, out, ready)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_, _ = cmd.Process.Wait()
		for d := cg; d != mount; d = filepath.Dir(d) {
			for i := 0; i < 100; i++ {
				if err := os.Remove(d); err == nil || errors.Is(err, os.ErrNotExist) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(ready); err == nil {
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the test container's shell never started")
	return ""
}

func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

// waitSignals waits (bounded) until the file has at least n lines and
// returns how many it has.
func waitSignals(t *testing.T, path string, n int) int {
	t.Helper()
	for i := 0; i < 500 && countLines(path) < n; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	got := countLines(path)
	if got < n {
		t.Fatalf("%d signals recorded, want %d", got, n)
	}
	return got
}

func waitEvent(t *testing.T, c *kubeCluster, p vaulttest.Pod, typ, reason, has string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		for _, e := range c.podEvents(t, p) {
			if e.Type == typ && e.Reason == reason && strings.Contains(e.Message, has) {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no %s %s event containing %q on %s: %+v", typ, reason, has, p.PodName, c.podEvents(t, p))
}
