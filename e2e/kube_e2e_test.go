//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

const driverName = "vault.csi.dev"

// kubectlBin is $KUBECTL, the local cluster's kubectl, or kubectl on PATH.
func kubectlBin(t testing.TB) string {
	if p := os.Getenv("KUBECTL"); p != "" {
		return p
	}
	if p := filepath.Join(repoRoot(t), ".cache/tools/k8s/kubectl"); fileExists(p) {
		return p
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("no kubectl: set KUBECTL, or run hack/cluster/up.sh (which builds one)")
	}
	return p
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// kubectl runs kubectl with a deadline and returns stdout.
func (s *suite) kubectl(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.kubectlPath, append([]string{"--kubeconfig", s.kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// exec runs a command in the pod's container (sh -c SCRIPT).
func (s *suite) exec(ns, pod, script string) (string, error) {
	return s.kubectl(30*time.Second, "exec", "-n", ns, pod, "-c", "app", "--", "sh", "-c", script)
}

// podSpec describes a test pod with one Vault volume mounted at /secrets.
type podSpec struct {
	name, ns, sa, role, secrets string
	rotationPeriod              string
	labels                      map[string]string
}

func (s *suite) podObject(p podSpec) *corev1.Pod {
	attrs := map[string]string{"role": p.role, "secrets": p.secrets}
	if p.rotationPeriod != "" {
		attrs["rotationPeriod"] = p.rotationPeriod
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: p.ns, Labels: p.labels},
		Spec: corev1.PodSpec{
			ServiceAccountName:            p.sa,
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser: ptr.To[int64](1000), RunAsGroup: ptr.To[int64](1000), FSGroup: ptr.To[int64](2000),
			},
			Containers: []corev1.Container{{
				Name: "app", Image: s.cfg.busybox, ImagePullPolicy: corev1.PullPolicy(s.cfg.pullPolicy),
				Command:      []string{"sleep", "86400"},
				VolumeMounts: []corev1.VolumeMount{{Name: "secrets", MountPath: "/secrets", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{
				Name: "secrets",
				VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
					Driver: driverName, ReadOnly: ptr.To(true), VolumeAttributes: attrs,
				}},
			}},
		},
	}
}

func (s *suite) createPod(t testing.TB, p podSpec) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pod, err := s.kc.CoreV1().Pods(p.ns).Create(ctx, s.podObject(p), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", p.ns, p.name, err)
	}
	return pod
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// waitReady waits for the pod to be Ready and returns how long that took
// from the pod's creation.
func (s *suite) waitReady(t testing.TB, ns, name string, timeout time.Duration) time.Duration {
	t.Helper()
	var last *corev1.Pod
	err := poll(timeout, 100*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p, err := s.kc.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return podReady(p), nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s not Ready after %s (phase %s); events:\n%s", ns, name, timeout, phaseOf(last), s.describeEvents(ns, name))
	}
	return time.Since(last.CreationTimestamp.Time)
}

func phaseOf(p *corev1.Pod) string {
	if p == nil {
		return "unknown"
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Waiting != nil {
			return string(p.Status.Phase) + "/" + cs.State.Waiting.Reason
		}
	}
	return string(p.Status.Phase)
}

// events returns the pod's events (all sources).
func (s *suite) events(ns, pod string) []corev1.Event {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := s.kc.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", pod).String(),
	})
	if err != nil {
		return nil
	}
	return l.Items
}

func (s *suite) describeEvents(ns, pod string) string {
	var b strings.Builder
	for _, e := range s.events(ns, pod) {
		fmt.Fprintf(&b, "  %s %s (%s, x%d): %s\n", e.Type, e.Reason, e.Source.Component+e.ReportingController, e.Count, e.Message)
	}
	return b.String()
}

// waitEvent waits for an event with the reason whose message contains all of
// the given substrings; it returns the message.
func (s *suite) waitEvent(t testing.TB, ns, pod, reason string, timeout time.Duration, contains ...string) string {
	t.Helper()
	var msg string
	err := poll(timeout, 250*time.Millisecond, func() (bool, error) {
		for _, e := range s.events(ns, pod) {
			if e.Reason != reason {
				continue
			}
			ok := true
			for _, c := range contains {
				ok = ok && strings.Contains(e.Message, c)
			}
			if ok {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s event containing %q on %s/%s within %s; events:\n%s", reason, contains, ns, pod, timeout, s.describeEvents(ns, pod))
	}
	return msg
}

// deletePod deletes a pod and waits until it is gone.
func (s *suite) deletePod(t testing.TB, ns, name string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.kc.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete pod %s/%s: %v", ns, name, err)
	}
	if err := poll(timeout, 200*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := s.kc.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Fatalf("pod %s/%s still there %s after delete; events:\n%s", ns, name, timeout, s.describeEvents(ns, name))
	}
}

// waitContent polls `cat FILE` in the pod until it prints want.
func (s *suite) waitContent(t testing.TB, ns, pod, file, want string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	var lastErr error
	err := poll(timeout, time.Second, func() (bool, error) {
		last, lastErr = s.exec(ns, pod, "cat "+file)
		return lastErr == nil && last == want, nil
	})
	if err != nil {
		t.Fatalf("%s in %s/%s: want %q, still %q (%v) after %s; events:\n%s", file, ns, pod, want, last, lastErr, timeout, s.describeEvents(ns, pod))
	}
	return time.Since(start)
}

// poll calls f every interval until it returns true or an error, or timeout.
func poll(timeout, interval time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := f()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(interval)
	}
}

// ensureNamespace creates a namespace and the service accounts in it.
func ensureNamespace(kc kubernetes.Interface, ns string, sas ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{"vault-csi-e2e": "true"},
	}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	for _, sa := range sas {
		if _, err := kc.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}},
			metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}

// deleteNamespace deletes a namespace and waits (bounded) until it is gone:
// every pod's volume has then been unpublished.
func deleteNamespace(kc kubernetes.Interface, ns string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := kc.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	return poll(timeout, 500*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := kc.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// hostMounts lists the mount points under dir in this process's mount
// namespace (the local cluster's node is this machine).
func hostMounts(dir string) []string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], dir) {
			out = append(out, f[1])
		}
	}
	return out
}
