package kube_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"vaultcsi.dev/driver/driver/kube"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// startControlPlane runs hack/cluster/up.sh --control-plane (etcd +
// kube-apiserver) in a temp state dir on free ports, torn down at cleanup.
func startControlPlane(t *testing.T) (kubeconfig string, cs kubernetes.Interface) {
	t.Helper()
	need.Long(t, "needs a local kube-apiserver")
	need.Root(t, "hack/cluster/up.sh starts etcd and kube-apiserver")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ".cache/tools/k8s/kube-apiserver")); err != nil {
		need.Missing(t, "Kubernetes binaries not built (bash hack/k8s/build.sh or make cluster-build): %v", err)
	}
	dir, err := os.MkdirTemp("", "vcd-kube-")
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "CLUSTER_DIR="+dir)
	for _, name := range []string{"APISERVER_PORT", "ETCD_PORT", "ETCD_PEER_PORT"} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, name+"="+strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
		l.Close()
	}
	script := func(name string, args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(root, "hack/cluster", name)}, args...)...)
		cmd.Env, cmd.WaitDelay = env, 5*time.Second
		return cmd.CombinedOutput()
	}
	t.Cleanup(func() {
		if out, err := script("down.sh", "--purge"); err != nil {
			t.Errorf("down.sh: %v\n%s", err, out)
		}
		_ = os.RemoveAll(dir)
	})
	if out, err := script("up.sh", "--control-plane"); err != nil {
		t.Fatalf("up.sh --control-plane: %v\n%s", err, out)
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return kubeconfig, cs
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAgainstAPIServer(t *testing.T) {
	kubeconfig, cs := startControlPlane(t)
	ctx := ctxT(t)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "payment"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	no := false
	pod, err := cs.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "payment-1", Labels: map[string]string{"app": "payment", "tier": "web"}},
		Spec: corev1.PodSpec{ServiceAccountName: "payment", AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "app", Image: "busybox:1.35"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uid := string(pod.UID)
	c, err := kube.NewClient(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("PodLabels found", func(t *testing.T) {
		labels, err := c.PodLabels(ctxT(t), "shop", "payment-1", uid)
		if err != nil {
			t.Fatal(err)
		}
		if len(labels) != 2 || labels["app"] != "payment" || labels["tier"] != "web" {
			t.Errorf("labels = %v", labels)
		}
	})
	t.Run("PodLabels not found", func(t *testing.T) {
		_, err := c.PodLabels(ctxT(t), "shop", "payment-2", uid)
		if !errors.Is(err, kube.ErrPodMismatch) || !strings.Contains(err.Error(), "not found") {
			t.Errorf("err = %v, want ErrPodMismatch (not found)", err)
		}
		_, err = c.PodLabels(ctxT(t), "no-such-namespace", "payment-1", uid)
		if !errors.Is(err, kube.ErrPodMismatch) {
			t.Errorf("err = %v in a missing namespace, want ErrPodMismatch", err)
		}
	})
	t.Run("PodLabels uid mismatch", func(t *testing.T) {
		_, err := c.PodLabels(ctxT(t), "shop", "payment-1", "6f1c2d3e-0000-4000-8000-00000000beef")
		if !errors.Is(err, kube.ErrPodMismatch) || !strings.Contains(err.Error(), uid) {
			t.Errorf("err = %v, want ErrPodMismatch naming the real uid", err)
		}
	})
	t.Run("PodLabels API error is not a mismatch", func(t *testing.T) {
		// Anonymous: the API server answers 403, which must not read as a
		// forged identity (the driver maps it to Unavailable).
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		anon := rest.AnonymousClientConfig(cfg)
		ac, err := kube.NewForConfig(anon)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ac.PodLabels(ctxT(t), "shop", "payment-1", uid)
		if err == nil || errors.Is(err, kube.ErrPodMismatch) {
			t.Errorf("err = %v, want an error that is not ErrPodMismatch", err)
		}
	})
	t.Run("Recorder writes an Event", func(t *testing.T) {
		rec := kube.NewRecorder(c, "node-7")
		rec.Event("shop", "payment-1", uid, corev1.EventTypeWarning, "VaultSecretsDenied", "denied by rule \"x\"")
		var events []corev1.Event
		deadline := time.Now().Add(10 * time.Second)
		for len(events) == 0 && time.Now().Before(deadline) {
			list, err := cs.CoreV1().Events("shop").List(ctxT(t), metav1.ListOptions{FieldSelector: "involvedObject.name=payment-1"})
			if err != nil {
				t.Fatal(err)
			}
			events = list.Items
			time.Sleep(50 * time.Millisecond)
		}
		rec.Stop()
		if len(events) != 1 {
			t.Fatalf("%d events, want 1: %+v", len(events), events)
		}
		e := events[0]
		if e.Type != corev1.EventTypeWarning || e.Reason != "VaultSecretsDenied" || e.Message != "denied by rule \"x\"" ||
			string(e.InvolvedObject.UID) != uid || e.InvolvedObject.Kind != "Pod" ||
			e.Source.Component != "vault-csi-driver" || e.Source.Host != "node-7" {
			t.Errorf("event %+v", e)
		}
		var nilRec *kube.Recorder
		nilRec.Event("shop", "payment-1", uid, "Normal", "X", "nil recorder is a no-op")
		nilRec.Stop()
	})
}
