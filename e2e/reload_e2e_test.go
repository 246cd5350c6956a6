//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Scenario 12: reload signals (the chart's reloadSignals.enabled, set for
// the whole suite). The access policy has rule ruleReload, which grants
// SIGHUP and SIGTERM for secret/data/e2e/reload/**, before the rule that
// allows the rest of secret/data/e2e/** with no signal.
const (
	ruleReload = "e2e-reload-signals"
	reloadSA   = "reload"
	// refusedSA runs the pods refused before any Vault call: it has no token.
	refusedSA    = "reload-refused"
	reloadRole   = "reload"
	reloadEvent  = "VaultSecretsReloadSignalled"
	reloadFailed = "VaultSecretsReloadFailed"
	// The shell of a test container: records each signal it traps with the
	// kernel's uptime (the same clock on the node and in every container)
	// into /out/<name>, and waits in `wait`, which a signal interrupts at once.
	trapScript = `trap 'read up _ < /proc/uptime; echo "$up" >> /out/%[1]s' %[2]s
while :; do sleep 3600 & wait $!; kill $! 2>/dev/null; done`
)

// reloadRules are the access-policy rules scenario 12 needs, placed before
// the suite's catch-all allow rule.
func reloadRules(ns string) []any {
	return []any{map[string]any{"name": ruleReload, "effect": "allow", "namespaces": []string{ns},
		"paths": []string{"secret/data/e2e/reload/**"}, "reloadSignals": []string{"SIGHUP", "SIGTERM"}}}
}

// reloadSecrets are the Vault values scenario 12 starts from.
func reloadSecrets() map[string]map[string]any {
	m := map[string]map[string]any{}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		m["e2e/reload/"+k] = map[string]any{"value": k + "1"}
	}
	return m
}

func (s *suite) testReload(t *testing.T) {
	t.Run("12a reload SIGHUP", s.testReloadSIGHUP)
	t.Run("12b two containers", s.testReloadTwoContainers)
	t.Run("12c SIGTERM restarts", s.testReloadSIGTERM)
	t.Run("12d policy denies signal", s.testReloadDenied)
	t.Run("12e container not running", s.testReloadNotRunning)
}

// reloadPod is a pod of the service account sa with a volume reading
// secret/data/e2e/reload/<key> into /secrets/value, a shared emptyDir at
// /out, and the given containers (name -> shell script).
func (s *suite) reloadPod(t *testing.T, name, sa, key, reload string, containers [][2]string, restart corev1.RestartPolicy) *corev1.Pod {
	t.Helper()
	p := s.podObject(podSpec{name: name, ns: s.appNS, sa: sa, role: reloadRole,
		secrets: fmt.Sprintf("- file: value\n  path: secret/data/e2e/reload/%s\n  key: value\n", key)})
	if reload != "" {
		p.Spec.Volumes[0].CSI.VolumeAttributes["reload"] = reload
	}
	p.Spec.RestartPolicy = restart
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "out", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	base := p.Spec.Containers[0]
	p.Spec.Containers = nil
	for _, c := range containers {
		ct := *base.DeepCopy()
		ct.Name, ct.Command = c[0], []string{"sh", "-c", c[1]}
		ct.VolumeMounts = append(ct.VolumeMounts, corev1.VolumeMount{Name: "out", MountPath: "/out"})
		p.Spec.Containers = append(p.Spec.Containers, ct)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pod, err := s.kc.CoreV1().Pods(s.appNS).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return pod
}

// execIn runs sh -c script in one container of a pod.
func (s *suite) execIn(pod, container, script string) (string, error) {
	return s.kubectl(30*time.Second, "exec", "-n", s.appNS, pod, "-c", container, "--", "sh", "-c", script)
}

// signalLines returns the uptimes a container recorded in /out/<file>.
func (s *suite) signalLines(t *testing.T, pod, container, file string) []float64 {
	t.Helper()
	out, err := s.execIn(pod, container, "cat /out/"+file+" 2>/dev/null; true")
	if err != nil {
		t.Fatalf("read /out/%s in %s/%s: %v", file, pod, container, err)
	}
	var ups []float64
	for _, f := range strings.Fields(out) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			t.Fatalf("/out/%s: %q is not an uptime", file, f)
		}
		ups = append(ups, v)
	}
	return ups
}

// uptime is the node's clock that the containers' traps read too.
func uptime(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitLines polls until /out/<file> has n lines and returns them.
func (s *suite) waitLines(t *testing.T, pod, container, file string, n int, timeout time.Duration) []float64 {
	t.Helper()
	var ups []float64
	if err := poll(timeout, 250*time.Millisecond, func() (bool, error) {
		ups = s.signalLines(t, pod, container, file)
		return len(ups) >= n, nil
	}); err != nil {
		t.Fatalf("%s/%s: %d signal(s) recorded, want %d within %s; events:\n%s", pod, container, len(ups), n, timeout, s.describeEvents(s.appNS, pod))
	}
	return ups
}

// reloadWait bounds one change-to-signal: the rotation period (10s) plus
// its jitter, kubelet's sync (10-15s here), and slack for a loaded node.
const reloadWait = 90 * time.Second

// 12a: each Vault change reaches the container as one SIGHUP, after the
// swap (the new value is in place when the trap runs); none on the first
// publish or on refreshes that changed nothing.
func (s *suite) testReloadSIGHUP(t *testing.T) {
	t.Parallel()
	const pod = "reload-hup"
	s.reloadPod(t, pod, reloadSA, "a", "container: app\nsignal: SIGHUP\n",
		[][2]string{{"app", fmt.Sprintf(trapScript, "hup", "HUP")}}, corev1.RestartPolicyAlways)
	s.waitReady(t, s.appNS, pod, 2*time.Minute)
	if s.cfg.nodeLocal {
		// What the node's /proc/<pid>/cgroup says of the container's main
		// process (the driver/reload tables are written from these lines).
		out, _ := s.execIn(pod, "app", "cat /proc/1/cgroup")
		t.Logf("cgroup of the container's main process:\n%s", out)
	}
	// A first publish and refreshes with nothing changed send nothing: wait
	// for two rotation periods' worth of re-publishes.
	s.waitContent(t, s.appNS, pod, "/secrets/value", "a1", 10*time.Second)
	time.Sleep(25 * time.Second)
	if ups := s.signalLines(t, pod, "app", "hup"); len(ups) != 0 {
		t.Fatalf("signals without a change: %v", ups)
	}
	const changes = 5
	var delays []time.Duration
	for i := 2; i < 2+changes; i++ {
		want := fmt.Sprintf("a%d", i)
		if err := s.setup.putSecret(s.vc, "e2e/reload/a", map[string]any{"value": want}); err != nil {
			t.Fatal(err)
		}
		changed := uptime(t)
		ups := s.waitLines(t, pod, "app", "hup", i-1, reloadWait)
		if len(ups) != i-1 {
			t.Fatalf("after %d changes, %d signals: %v", i-1, len(ups), ups)
		}
		delays = append(delays, time.Duration((ups[i-2]-changed)*float64(time.Second)))
		// After the swap: the file the signal announces is already there.
		if got, err := s.execIn(pod, "app", "cat /secrets/value"); err != nil || got != want {
			t.Errorf("after the signal /secrets/value = %q (%v), want %q", got, err, want)
		}
	}
	msg := s.waitEvent(t, s.appNS, pod, reloadEvent, 10*time.Second, "SIGHUP", `"app"`)
	sorted := slices.Clone(delays)
	slices.Sort(sorted)
	s.record("12a: Vault change to SIGHUP in the pod (rotationPeriod 10s, kubelet syncFrequency 10s): median %s over %d changes (%v); none on the first publish or unchanged refreshes; event: %s",
		sorted[len(sorted)/2].Round(10*time.Millisecond), changes, roundAll(delays), msg)
	if s.cfg.hostNetwork && s.cfg.nodeLocal {
		body, err := httpGet("http://127.0.0.1:19809/metrics")
		if err != nil || !strings.Contains(body, `vault_csi_reload_signals_total{outcome="ok",signal="SIGHUP"}`) {
			t.Errorf("driver metrics have no reload signal sent (%v)", err)
		}
	}
	s.deletePod(t, s.appNS, pod, time.Minute)
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}

// 12b: in a two-container pod only the named container is signalled; a
// pod naming a container it does not have fails its first publish.
func (s *suite) testReloadTwoContainers(t *testing.T) {
	t.Parallel()
	const pod, bad = "reload-two", "reload-nosuch"
	s.reloadPod(t, pod, reloadSA, "b", "container: sidecar\nsignal: SIGHUP\n", [][2]string{
		{"app", fmt.Sprintf(trapScript, "app", "HUP")},
		{"sidecar", fmt.Sprintf(trapScript, "sidecar", "HUP")},
	}, corev1.RestartPolicyAlways)
	s.reloadPod(t, bad, refusedSA, "b", "container: db\nsignal: SIGHUP\n",
		[][2]string{{"app", fmt.Sprintf(trapScript, "app", "HUP")}}, corev1.RestartPolicyAlways)
	s.waitReady(t, s.appNS, pod, 2*time.Minute)
	s.waitContent(t, s.appNS, pod, "/secrets/value", "b1", 10*time.Second)
	if err := s.setup.putSecret(s.vc, "e2e/reload/b", map[string]any{"value": "b2"}); err != nil {
		t.Fatal(err)
	}
	s.waitLines(t, pod, "sidecar", "sidecar", 1, reloadWait)
	// The app container shares the pod and the volume: it got nothing.
	if ups := s.signalLines(t, pod, "app", "app"); len(ups) != 0 {
		t.Errorf("the container not named got signals: %v", ups)
	}
	msg := s.waitEvent(t, s.appNS, pod, reloadEvent, 10*time.Second, `"sidecar"`)
	bmsg := s.waitEvent(t, s.appNS, bad, "VaultSecretsMountFailed", time.Minute, "InvalidArgument", "reload.container", `"db"`)
	if accs, err := tokensOf(s.vc, s.appNS, refusedSA); err != nil || len(accs) != 0 {
		t.Errorf("a pod refused for its reload attribute reached Vault: tokens %v (%v)", accs, err)
	}
	s.record("12b: only the named container signalled: %s; a container not in the pod: %s", msg, bmsg)
	s.deletePod(t, s.appNS, bad, time.Minute)
	s.deletePod(t, s.appNS, pod, time.Minute)
}

// 12c: SIGTERM ends the container; kubelet restarts it and the new
// process reads the new value.
func (s *suite) testReloadSIGTERM(t *testing.T) {
	t.Parallel()
	const pod = "reload-term"
	s.reloadPod(t, pod, reloadSA, "c", "signal: SIGTERM\n", [][2]string{{"app",
		`cat /secrets/value >> /out/seen; echo >> /out/seen; trap 'exit 0' TERM
while :; do sleep 3600 & wait $!; done`}}, corev1.RestartPolicyAlways)
	s.waitReady(t, s.appNS, pod, 2*time.Minute)
	if err := s.setup.putSecret(s.vc, "e2e/reload/c", map[string]any{"value": "c2"}); err != nil {
		t.Fatal(err)
	}
	var p *corev1.Pod
	if err := poll(reloadWait, 500*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		p, err = s.kc.CoreV1().Pods(s.appNS).Get(ctx, pod, metav1.GetOptions{})
		return err == nil && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1 &&
			p.Status.ContainerStatuses[0].State.Running != nil, nil
	}); err != nil {
		t.Fatalf("the container did not restart after the rotation; events:\n%s", s.describeEvents(s.appNS, pod))
	}
	if n := p.Status.ContainerStatuses[0].RestartCount; n != 1 {
		t.Errorf("restartCount = %d, want 1 (one rotation, one SIGTERM)", n)
	}
	seen, err := s.execIn(pod, "app", "cat /out/seen")
	if err != nil || strings.Fields(seen)[len(strings.Fields(seen))-1] != "c2" {
		t.Fatalf("values the container's processes read: %q (%v); the restarted one should read c2", seen, err)
	}
	msg := s.waitEvent(t, s.appNS, pod, reloadEvent, 10*time.Second, "SIGTERM")
	s.record("12c: SIGTERM: restartCount 1, the new process read %v; event: %s", strings.Fields(seen), msg)
	s.deletePod(t, s.appNS, pod, time.Minute)
}

// 12d: the access policy's rule for the path grants SIGHUP and SIGTERM,
// not SIGUSR1: the first publish fails naming the rule, before Vault.
func (s *suite) testReloadDenied(t *testing.T) {
	t.Parallel()
	const pod = "reload-usr1"
	s.reloadPod(t, pod, refusedSA, "d", "signal: SIGUSR1\n", [][2]string{{"app", fmt.Sprintf(trapScript, "usr1", "USR1")}}, corev1.RestartPolicyAlways)
	msg := s.waitEvent(t, s.appNS, pod, "VaultSecretsDenied", time.Minute, ruleReload, "SIGUSR1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := s.kc.CoreV1().Pods(s.appNS).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Waiting == nil {
		t.Errorf("the denied pod's container started: %+v", p.Status.ContainerStatuses[0].State)
	}
	if accs, err := tokensOf(s.vc, s.appNS, refusedSA); err != nil || len(accs) != 0 {
		t.Errorf("a denied pod reached Vault: tokens %v (%v)", accs, err)
	}
	for _, e := range s.events(s.appNS, pod) {
		if e.Reason == reloadEvent || e.Reason == reloadFailed {
			t.Errorf("a denied pod has a reload event: %s %s", e.Reason, e.Message)
		}
	}
	s.record("12d: %s", msg)
	s.deletePod(t, s.appNS, pod, time.Minute)
}

// 12e: the named container has exited (restartPolicy Never) while the pod
// runs on: no signal, a Warning Event, and the files still rotate.
func (s *suite) testReloadNotRunning(t *testing.T) {
	t.Parallel()
	const pod = "reload-gone"
	s.reloadPod(t, pod, reloadSA, "e", "container: app\nsignal: SIGHUP\n", [][2]string{
		{"app", "exit 0"},
		{"keeper", "while :; do sleep 3600 & wait $!; done"},
	}, corev1.RestartPolicyNever)
	if err := poll(2*time.Minute, 250*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p, err := s.kc.CoreV1().Pods(s.appNS).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		var app, keeper bool
		for _, cs := range p.Status.ContainerStatuses {
			app = app || cs.Name == "app" && cs.State.Terminated != nil
			keeper = keeper || cs.Name == "keeper" && cs.State.Running != nil
		}
		return app && keeper, nil
	}); err != nil {
		t.Fatalf("want app exited and keeper running; events:\n%s", s.describeEvents(s.appNS, pod))
	}
	if err := s.setup.putSecret(s.vc, "e2e/reload/e", map[string]any{"value": "e2"}); err != nil {
		t.Fatal(err)
	}
	msg := s.waitEvent(t, s.appNS, pod, reloadFailed, reloadWait, "SIGHUP", `"app"`, "not running")
	if got, err := s.execIn(pod, "keeper", "cat /secrets/value"); err != nil || got != "e2" {
		t.Errorf("files not rotated: /secrets/value = %q (%v), want e2", got, err)
	}
	if s.cfg.hostNetwork && s.cfg.nodeLocal {
		body, err := httpGet("http://127.0.0.1:19809/metrics")
		if err != nil || !strings.Contains(body, `vault_csi_reload_signals_total{outcome="not-running",signal="SIGHUP"}`) {
			t.Errorf("driver metrics have no not-running reload signal (%v)", err)
		}
	}
	s.record("12e: %s", msg)
	s.deletePod(t, s.appNS, pod, time.Minute)
}
