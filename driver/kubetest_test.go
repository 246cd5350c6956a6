package driver_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"vaultcsi.dev/driver/provider/vaulttest"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// kubeCluster is a control-plane-only Kubernetes (etcd + kube-apiserver,
// hack/cluster/up.sh --control-plane) in a state dir and on ports of its
// own, so that it can run beside a full cluster with the defaults. There is
// no kubelet and no controller-manager: Pods created here never run and
// namespaces get no default service account, which is all the driver needs
// (it only GETs pods and writes Events).
type kubeCluster struct {
	dir        string
	kubeconfig string
	cs         kubernetes.Interface
}

// TestAPIServer runs every driver test that needs a real API server against
// one control-plane cluster, so that it is started and stopped once.
func TestAPIServer(t *testing.T) {
	c := startKubeCluster(t)
	t.Run("policy pod labels", func(t *testing.T) { testPolicyPodLabels(t, c) })
	t.Run("events", func(t *testing.T) { testPodEvents(t, c) })
	t.Run("event rate limit", func(t *testing.T) { testEventRateLimit(t, c) })
}

// startKubeCluster brings a control plane up (~4 s with cached binaries) and
// registers its teardown first, so that a failed bring-up is cleaned too.
func startKubeCluster(t *testing.T) *kubeCluster {
	t.Helper()
	need.Long(t, "needs a local kube-apiserver")
	need.Root(t, "hack/cluster/up.sh starts etcd and kube-apiserver")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ".cache/tools/k8s/kube-apiserver")); err != nil {
		need.Missing(t, "Kubernetes binaries not built (bash hack/k8s/build.sh takes ~9 min or make cluster-build): %v", err)
	}
	dir, err := os.MkdirTemp("", "vcd-kube-")
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "CLUSTER_DIR="+dir)
	for _, name := range []string{"APISERVER_PORT", "ETCD_PORT", "ETCD_PEER_PORT"} {
		env = append(env, name+"="+strconv.Itoa(freePort(t)))
	}
	script := func(timeout time.Duration, name string, args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(root, "hack/cluster", name)}, args...)...)
		cmd.Env = env
		cmd.WaitDelay = 5 * time.Second
		return cmd.CombinedOutput()
	}
	t.Cleanup(func() {
		if out, err := script(90*time.Second, "down.sh", "--purge"); err != nil {
			t.Errorf("hack/cluster/down.sh: %v\n%s", err, out)
		}
		_ = os.RemoveAll(dir)
	})
	start := time.Now()
	if out, err := script(90*time.Second, "up.sh", "--control-plane"); err != nil {
		t.Fatalf("hack/cluster/up.sh --control-plane: %v\n%s", err, out)
	}
	t.Logf("control plane up in %v (%s)", time.Since(start).Round(100*time.Millisecond), dir)
	c := &kubeCluster{dir: dir, kubeconfig: filepath.Join(dir, "kubeconfig")}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	if c.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return c
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// createPod creates (if needed) the namespace and service account, then a
// Pod object, and returns the identity kubelet would send for it, with the
// UID the API server assigned.
func (c *kubeCluster) createPod(t *testing.T, namespace, name, serviceAccount string, labels map[string]string) vaulttest.Pod {
	t.Helper()
	ctx := ctxT(t)
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccount, Namespace: namespace}}
	if _, err := c.cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName:           serviceAccount,
			AutomountServiceAccountToken: &no,
			Containers:                   []corev1.Container{{Name: "app", Image: "busybox:1.35", Command: []string{"sleep", "3600"}}},
		},
	}
	got, err := c.cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", namespace, name, err)
	}
	return vaulttest.Pod{Namespace: namespace, Name: name, UID: string(got.UID), ServiceAccount: serviceAccount}
}

// podEvents lists the Events whose involved object is the pod.
func (c *kubeCluster) podEvents(t *testing.T, p vaulttest.Pod) []corev1.Event {
	t.Helper()
	list, err := c.cs.CoreV1().Events(p.Namespace).List(ctxT(t), metav1.ListOptions{
		FieldSelector: fmt.Sprintf("involvedObject.kind=Pod,involvedObject.name=%s,involvedObject.uid=%s", p.Name, p.UID),
	})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}
