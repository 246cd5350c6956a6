//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// Kind mode (hack/e2e-kind.sh, make e2e-kind): E2E_KIND=1. Vault runs inside the
// cluster as a pod (E2E_VAULT_IMAGE, dev mode), the suite reaches it through a
// NodePort on the node's address, the driver through its Service.
//
// A scenario that cannot run on kind says so first thing, by name and reason:
//
//	s.requireLocalCluster(t, "Vault runs on this host over TLS; kind pods cannot reach 127.0.0.1")
//
// It is skipped on kind with that reason (hack/e2e-kind.sh prints every skipped
// scenario at the end) and runs everywhere else.

const (
	kindVaultNS   = "vcsi-e2e-vault"
	kindVaultName = "vault"
	kindVaultPort = 8200
)

// vaultRunner is the Vault the suite started: a process on this host
// (vaulttest) or a pod in the cluster (kind). The outage scenario stops and
// starts it at the same address.
type vaultRunner interface {
	Stop()
	Start() error
	Logs() string
}

// requireLocalCluster skips t on kind, with the reason printed.
func (s *suite) requireLocalCluster(t *testing.T, reason string) {
	t.Helper()
	if s.cfg.kind {
		s.record("skipped on kind: %s: %s", t.Name(), reason)
		t.Skipf("skipped on kind: %s: %s", t.Name(), reason)
	}
}

// podVault is dev-mode Vault as a Deployment in the cluster.
type podVault struct {
	kc         kubernetes.Interface
	s          *suite
	addr       string // as this process reaches it: http://NODE-IP:NODEPORT
	clusterURL string // as pods reach it: the Service's DNS name
}

// startPodVault deploys Vault (image: a scratch image with the vault binary)
// and waits until it answers.
func startPodVault(t *testing.T, s *suite, image string) *podVault {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kc := s.kc
	if err := ensureNamespace(kc, kindVaultNS); err != nil {
		t.Fatalf("namespace %s: %v", kindVaultNS, err)
	}
	labels := map[string]string{"app": kindVaultName}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: kindVaultName, Namespace: kindVaultNS},
		Data:       map[string]string{"telemetry.hcl": telemetryHCL + "disable_mlock = true\n"},
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: kindVaultName, Namespace: kindVaultNS},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](2),
					Containers: []corev1.Container{{
						Name: "vault", Image: image, ImagePullPolicy: corev1.PullPolicy(s.cfg.pullPolicy),
						Args: []string{"server", "-dev", "-dev-root-token-id=" + vaulttest.RootToken,
							"-dev-listen-address=0.0.0.0:" + strconv.Itoa(kindVaultPort), "-config=/etc/vault/telemetry.hcl"},
						Env:          []corev1.EnvVar{{Name: "HOME", Value: "/tmp"}},
						Ports:        []corev1.ContainerPort{{ContainerPort: kindVaultPort, Name: "http"}},
						VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/vault"}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/v1/sys/health", Port: intstr.FromInt32(kindVaultPort)}},
							PeriodSeconds: 1,
						},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
						ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: kindVaultName}},
					}}},
				},
			},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: kindVaultName, Namespace: kindVaultNS},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort, Selector: labels,
			Ports: []corev1.ServicePort{{Name: "http", Port: kindVaultPort, TargetPort: intstr.FromInt32(kindVaultPort)}},
		},
	}
	if _, err := kc.CoreV1().ConfigMaps(kindVaultNS).Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("vault config: %v", err)
	}
	if _, err := kc.AppsV1().Deployments(kindVaultNS).Create(ctx, dep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("vault deployment: %v", err)
	}
	got, err := kc.CoreV1().Services(kindVaultNS).Create(ctx, svc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = kc.CoreV1().Services(kindVaultNS).Get(ctx, kindVaultName, metav1.GetOptions{})
	}
	if err != nil {
		t.Fatalf("vault service: %v", err)
	}
	nodeIP, err := firstNodeIP(ctx, kc)
	if err != nil {
		t.Fatal(err)
	}
	v := &podVault{kc: kc, s: s,
		addr:       "http://" + net.JoinHostPort(nodeIP, strconv.Itoa(int(got.Spec.Ports[0].NodePort))),
		clusterURL: fmt.Sprintf("http://%s.%s.svc:%d", kindVaultName, kindVaultNS, kindVaultPort)}
	if err := v.waitUp(3 * time.Minute); err != nil {
		t.Logf("vault logs:\n%s", v.Logs())
		t.Fatalf("in-cluster Vault: %v", err)
	}
	return v
}

func firstNodeIP(ctx context.Context, kc kubernetes.Interface) (string, error) {
	nodes, err := kc.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("list nodes: %w", err)
	}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && net.ParseIP(a.Address).To4() != nil {
				return a.Address, nil
			}
		}
	}
	return "", fmt.Errorf("no node with an IPv4 InternalIP")
}

// waitUp waits until Vault answers on its NodePort (unsealed: dev mode).
func (v *podVault) waitUp(limit time.Duration) error {
	c := &http.Client{Timeout: 2 * time.Second}
	return poll(limit, 500*time.Millisecond, func() (bool, error) {
		resp, err := c.Get(v.addr + "/v1/sys/health")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

func (v *podVault) scale(n int32) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, err := v.kc.AppsV1().Deployments(kindVaultNS).GetScale(ctx, kindVaultName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("vault scale: %w", err)
	}
	sc.Spec.Replicas = n
	if _, err := v.kc.AppsV1().Deployments(kindVaultNS).UpdateScale(ctx, kindVaultName, sc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("vault scale to %d: %w", n, err)
	}
	return nil
}

// Stop scales Vault to zero and waits until its pod is gone (dev mode: its
// storage goes with it, as with a restarted vaulttest process).
func (v *podVault) Stop() {
	if err := v.scale(0); err != nil {
		v.s.record("stopping in-cluster Vault: %v", err)
		return
	}
	_ = poll(2*time.Minute, 250*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l, err := v.kc.CoreV1().Pods(kindVaultNS).List(ctx, metav1.ListOptions{LabelSelector: "app=" + kindVaultName})
		return err == nil && len(l.Items) == 0, nil
	})
}

// Start brings Vault back at the same Service and NodePort.
func (v *podVault) Start() error {
	if err := v.scale(1); err != nil {
		return err
	}
	return v.waitUp(3 * time.Minute)
}

func (v *podVault) Logs() string {
	out, err := v.s.kubectl(20*time.Second, "logs", "-n", kindVaultNS, "deploy/"+kindVaultName, "--tail=100")
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(out)
}

// TestRequireLocalCluster: on kind a scenario that declares it needs the local
// cluster is skipped with its reason recorded for the summary; elsewhere it runs.
func TestRequireLocalCluster(t *testing.T) {
	for _, tc := range []struct {
		name        string
		kind        bool
		wantSkipped bool
	}{
		{"kind skips", true, true},
		{"local cluster runs", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &suite{cfg: config{kind: tc.kind}}
			ran := false
			inner := t.Run("scenario", func(t *testing.T) {
				s.requireLocalCluster(t, "needs this host's 127.0.0.1")
				ran = true
			})
			if !inner {
				t.Fatal("the scenario failed")
			}
			if ran == tc.wantSkipped {
				t.Errorf("kind=%v: ran=%v, want skipped=%v", tc.kind, ran, tc.wantSkipped)
			}
			if tc.wantSkipped && (len(s.results) != 1 || !strings.Contains(s.results[0], "needs this host's 127.0.0.1")) {
				t.Errorf("the skip and its reason must be recorded for the summary: %q", s.results)
			}
		})
	}
}
