package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	vault "github.com/hashicorp/vault/api"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// Auth methods the bench can publish with.
const (
	authJWT        = "jwt"        // tokens the bench signs; Vault checks the signature only
	authKubernetes = "kubernetes" // TokenRequest tokens bound to real pods; Vault does a TokenReview per login
)

const (
	kubeAuthMount = "kubernetes"
	reviewerSA    = "vault-reviewer"
	benchNode     = "bench-node"
)

// kubeSide is the control plane of --auth kubernetes: the project's own
// etcd + kube-apiserver (hack/cluster/up.sh --control-plane) on ports of
// the bench's own, torn down at the end.
type kubeSide struct {
	dir        string
	env        []string
	script     string // hack/cluster
	kubeconfig string
	cs         kubernetes.Interface
	host       string
	ca         []byte
}

func startKube(ctx context.Context) (*kubeSide, error) {
	root, err := vaulttest.ModuleRoot()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, ".cache/tools/k8s/kube-apiserver")); err != nil {
		return nil, fmt.Errorf("the Kubernetes binaries are not built (bash hack/k8s/build.sh): %w", err)
	}
	dir, err := os.MkdirTemp("", "vcsi-bench-kube-")
	if err != nil {
		return nil, err
	}
	k := &kubeSide{dir: dir, script: filepath.Join(root, "hack/cluster"), env: append(os.Environ(), "CLUSTER_DIR="+dir)}
	for _, name := range []string{"APISERVER_PORT", "ETCD_PORT", "ETCD_PEER_PORT"} {
		port, err := freePort()
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		k.env = append(k.env, name+"="+strconv.Itoa(port))
	}
	if out, err := k.run(ctx, "up.sh", "--control-plane"); err != nil {
		k.stop()
		return nil, fmt.Errorf("hack/cluster/up.sh --control-plane: %w\n%s", err, out)
	}
	k.kubeconfig = filepath.Join(dir, "kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", k.kubeconfig)
	if err != nil {
		k.stop()
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	if k.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		k.stop()
		return nil, err
	}
	k.host, k.ca = cfg.Host, cfg.CAData
	if len(k.ca) == 0 && cfg.CAFile != "" {
		if k.ca, err = os.ReadFile(cfg.CAFile); err != nil {
			k.stop()
			return nil, err
		}
	}
	return k, nil
}

func (k *kubeSide) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(k.script, name)}, args...)...) //nolint:gosec // the repo's own cluster scripts
	cmd.Env, cmd.WaitDelay = k.env, 5*time.Second
	return cmd.CombinedOutput()
}

func (k *kubeSide) stop() {
	if k == nil || k.dir == "" {
		return
	}
	if out, err := k.run(context.Background(), "down.sh", "--purge"); err != nil {
		logf("hack/cluster/down.sh: %v\n%s", err, out)
	}
	_ = os.RemoveAll(k.dir)
	k.dir = ""
}

// configureVault creates the pods' namespace and service account, a
// reviewer with system:auth-delegator, and Vault's kubernetes auth with
// the reviewer's token and the bench role.
func (k *kubeSide) configureVault(ctx context.Context, v *vaultSide, c *config) error {
	for _, ns := range []string{c.namespace} {
		if _, err := k.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
	}
	for _, sa := range []string{c.sa, reviewerSA} {
		if _, err := k.cs.CoreV1().ServiceAccounts(c.namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("service account %s: %w", sa, err)
		}
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-csi-bench-reviewer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: reviewerSA, Namespace: c.namespace}},
	}
	if _, err := k.cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("reviewer binding: %w", err)
	}
	tr, err := k.cs.CoreV1().ServiceAccounts(c.namespace).CreateToken(ctx, reviewerSA, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](4 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("reviewer token: %w", err)
	}
	auths, err := v.root.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("list auth: %w", err)
	}
	if _, ok := auths[kubeAuthMount+"/"]; !ok {
		if err := v.root.Sys().EnableAuthWithOptionsWithContext(ctx, kubeAuthMount, &vault.EnableAuthOptions{Type: "kubernetes"}); err != nil {
			return fmt.Errorf("enable kubernetes auth: %w", err)
		}
	}
	// A pod token (audience vault) cannot call the API server itself, so
	// Vault reviews with the reviewer's token.
	if _, err := v.root.Logical().WriteWithContext(ctx, "auth/"+kubeAuthMount+"/config", map[string]any{
		"kubernetes_host": k.host, "kubernetes_ca_cert": string(k.ca), "token_reviewer_jwt": tr.Status.Token, "disable_local_ca_jwt": true,
	}); err != nil {
		return fmt.Errorf("configure kubernetes auth: %w", err)
	}
	if _, err := v.root.Logical().WriteWithContext(ctx, "auth/"+kubeAuthMount+"/role/"+c.role, map[string]any{
		"bound_service_account_names": []string{c.sa}, "bound_service_account_namespaces": []string{c.namespace},
		"audience": c.audience, "token_policies": []string{c.role}, "token_ttl": "1h",
	}); err != nil {
		return fmt.Errorf("kubernetes auth role: %w", err)
	}
	v.authMount = kubeAuthMount
	return nil
}

// createPod creates the pod as an API object (never scheduled: there is
// no kubelet) and returns its UID, so TokenRequest can bind a token to it.
func (k *kubeSide) createPod(ctx context.Context, ns, name, sa string) (string, error) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "vault-csi-bench"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa, NodeName: benchNode, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "bench/pause", ImagePullPolicy: corev1.PullNever}},
		},
	}
	got, err := k.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}
	return string(got.UID), nil
}

// token is kubelet's TokenRequest for the pod: audience, bound to the pod.
func (k *kubeSide) token(ctx context.Context, p vaulttest.Pod, audience string) (string, error) {
	tr, err := k.cs.CoreV1().ServiceAccounts(p.Namespace).CreateToken(ctx, p.ServiceAccount, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{
			Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](3600),
			BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.PodName, UID: types.UID(p.PodUID)},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for pod %s/%s: %w", p.Namespace, p.PodName, err)
	}
	return tr.Status.Token, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
