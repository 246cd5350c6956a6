// Package kubetest gives Go tests a real Kubernetes control plane (etcd and
// kube-apiserver from hack/cluster, no kubelet). `make unit` brings one up
// for the whole run and names it in KubeconfigEnv, so every package's tests
// share one API server; a test run by hand without it brings its own up
// (about 4 s with the cached binaries) and tears it down at cleanup.
package kubetest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"vaultcsi.dev/driver/provider/vaulttest"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// KubeconfigEnv names a running control plane's kubeconfig for the tests to
// share (set by hack/unit.sh, which `make unit` runs).
const KubeconfigEnv = "VCD_TEST_KUBECONFIG"

// Cluster is a running control plane.
type Cluster struct {
	// Kubeconfig is the admin kubeconfig's path.
	Kubeconfig string
	// Clientset is an admin client with room for a test's bursts.
	Clientset kubernetes.Interface
}

// Start returns the shared control plane, or one of the test's own. Tests
// on a shared one must use names no other package's tests use (their own
// namespace).
func Start(t testing.TB) *Cluster {
	t.Helper()
	need.Long(t, "needs a local kube-apiserver")
	if kc := os.Getenv(KubeconfigEnv); kc != "" {
		return connect(t, kc)
	}
	need.Root(t, "hack/cluster/up.sh starts etcd and kube-apiserver")
	root, err := vaulttest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ".cache/tools/k8s/kube-apiserver")); err != nil {
		need.Missing(t, "Kubernetes binaries not built (make cluster-build takes ~9 min cold): %v", err)
	}
	dir, err := os.MkdirTemp("", "vcd-kube-")
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "CLUSTER_DIR="+dir)
	for _, name := range []string{"APISERVER_PORT", "ETCD_PORT", "ETCD_PEER_PORT"} {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, name+"="+strconv.Itoa(port))
	}
	script := func(name string, args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(root, "hack/cluster", name)}, args...)...) //nolint:gosec // the repo's own cluster scripts
		cmd.Env, cmd.WaitDelay = env, 5*time.Second
		return cmd.CombinedOutput()
	}
	// Teardown first, so that a failed bring-up is cleaned too.
	t.Cleanup(func() {
		if out, err := script("down.sh", "--purge"); err != nil {
			t.Errorf("hack/cluster/down.sh: %v\n%s", err, out)
		}
		_ = os.RemoveAll(dir)
	})
	start := time.Now()
	if out, err := script("up.sh", "--control-plane"); err != nil {
		t.Fatalf("hack/cluster/up.sh --control-plane: %v\n%s", err, out)
	}
	t.Logf("control plane up in %v (%s)", time.Since(start).Round(100*time.Millisecond), dir)
	return connect(t, filepath.Join(dir, "kubeconfig"))
}

func connect(t testing.TB, kubeconfig string) *Cluster {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Cluster{Kubeconfig: kubeconfig, Clientset: cs}
}

func freePort() (int, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}
