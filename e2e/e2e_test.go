//go:build e2e

// Package e2e runs the driver end to end on a real cluster: the Helm chart
// installed with the helm CLI, a real Vault with kubernetes auth (TokenReview
// against the cluster's API server), real pods reading real files.
//
//	KUBECONFIG=... go test -tags e2e -count=1 -timeout 30m ./e2e/ -v
//
// hack/e2e.sh (make e2e) runs it on the local no-Docker cluster,
// hack/e2e-kind.sh (make e2e-kind) on kind. Settings (environment):
//
//	KUBECONFIG                     cluster to test (required)
//	VAULT_ADDR, VAULT_TOKEN        use this Vault instead of starting one (the outage scenario is skipped)
//	E2E_VAULT_LISTEN               where the suite's Vault listens (default 127.0.0.1:0; port 0: a free one)
//	E2E_VAULT_ADDR                 Vault address as the driver sees it (default http://$E2E_VAULT_LISTEN)
//	E2E_VAULT_KUBERNETES_HOST      API server address as Vault sees it (default: the kubeconfig's server)
//	E2E_IMAGE                      driver image (default vault-csi-driver:e2e), E2E_PULL_POLICY (Never)
//	E2E_UPGRADE_IMAGE              a second driver image for scenario 10 (helm upgrade while pods run)
//	E2E_BUSYBOX                    test pod image (default busybox:1.35)
//	E2E_KUBELET_DIR                kubelet root dir on the nodes (default /var/lib/kubelet)
//	E2E_STATE_DIR                  driver state dir on the nodes, must be tmpfs (default: the chart's)
//	E2E_HOST_NETWORK               driver with hostNetwork (default true)
//	E2E_KUBERNETES_SERVICE_HOST/PORT  API address for the driver when Service IPs do not route
//	E2E_NODE_LOCAL                 1: the (single) node is this machine; also check mounts in /proc
//	E2E_BULK_PODS                  pods in the burst scenario (default 50)
//	E2E_KIND                       1: the cluster is kind (hack/e2e-kind.sh); s.requireLocalCluster skips on it
//	E2E_VAULT_IMAGE                run Vault inside the cluster as a pod from this image (kind), not on this host
//	HELM_BIN, KUBECTL, VAULT_BIN   tools (default: built ones under .cache/tools)
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"vaultcsi.dev/driver/provider/vaulttest"
)

const (
	release     = "vcsi-e2e"
	releaseNS   = "vcsi-e2e-system"
	reviewerSA  = "vault-token-reviewer"
	reviewerCRB = "vcsi-e2e-vault-token-reviewer"
	// Access-policy rules the suite installs (scenario 9).
	ruleBlockedNS = "e2e-deny-blocked-namespace"
	ruleLabel     = "e2e-deny-labeled-pods"
)

type config struct {
	kubeconfig                   string
	image, busybox, pullPolicy   string
	upgradeImage                 string // the image scenario 10 upgrades the release to
	kubeletDir, stateDir         string
	hostNetwork, nodeLocal       bool
	apiHost, apiPort             string
	externalVault                string
	vaultListen, vaultAddrForPod string
	kind                         bool   // E2E_KIND=1
	vaultImage                   string // E2E_VAULT_IMAGE: Vault as a pod in the cluster
	bulk                         int
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func loadConfig(t *testing.T) config {
	c := config{
		kubeconfig:    os.Getenv("KUBECONFIG"),
		image:         getenv("E2E_IMAGE", "vault-csi-driver:e2e"),
		upgradeImage:  os.Getenv("E2E_UPGRADE_IMAGE"),
		busybox:       getenv("E2E_BUSYBOX", "busybox:1.35"),
		pullPolicy:    getenv("E2E_PULL_POLICY", "Never"),
		kubeletDir:    getenv("E2E_KUBELET_DIR", "/var/lib/kubelet"),
		stateDir:      os.Getenv("E2E_STATE_DIR"),
		hostNetwork:   getenv("E2E_HOST_NETWORK", "true") == "true",
		nodeLocal:     os.Getenv("E2E_NODE_LOCAL") == "1",
		apiHost:       os.Getenv("E2E_KUBERNETES_SERVICE_HOST"),
		apiPort:       os.Getenv("E2E_KUBERNETES_SERVICE_PORT"),
		externalVault: os.Getenv("VAULT_ADDR"),
		vaultListen:   os.Getenv("E2E_VAULT_LISTEN"),
		kind:          os.Getenv("E2E_KIND") == "1",
		vaultImage:    os.Getenv("E2E_VAULT_IMAGE"),
	}
	if c.kubeconfig == "" {
		t.Fatal("KUBECONFIG must name the cluster to test (hack/e2e.sh sets it for the local cluster)")
	}
	c.bulk, _ = strconv.Atoi(getenv("E2E_BULK_PODS", "50"))
	if c.externalVault == "" && c.vaultImage == "" {
		// Empty: 127.0.0.1 and a free port; HOST:0: a free port on HOST.
		host, port := "127.0.0.1", "0"
		if c.vaultListen != "" {
			var err error
			if host, port, err = net.SplitHostPort(c.vaultListen); err != nil {
				t.Fatalf("E2E_VAULT_LISTEN: %v", err)
			}
		}
		if port == "0" {
			l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
			if err != nil {
				t.Fatalf("E2E_VAULT_LISTEN: %v", err)
			}
			port = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
			l.Close()
		}
		c.vaultListen = net.JoinHostPort(host, port)
	}
	c.vaultAddrForPod = getenv("E2E_VAULT_ADDR", c.externalVault)
	if c.vaultAddrForPod == "" && c.vaultImage == "" {
		c.vaultAddrForPod = "http://" + c.vaultListen
	}
	return c
}

type suite struct {
	cfg                     config
	kc                      kubernetes.Interface
	rc                      *rest.Config
	kubeconfig, kubectlPath string
	appNS, blockedNS        string
	vp                      *vaulttest.Server // nil with an external Vault, and on kind
	vr                      vaultRunner       // the Vault the suite can stop: vp, or a pod on kind
	vaultAddr               string            // as the suite reaches it
	vc                      *vault.Client
	setup                   *vaultSetup
	chart, valuesFile       string // what was installed: the packaged chart and its values

	mu      sync.Mutex
	results []string
}

// record adds a line to the summary printed at the end.
func (s *suite) record(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// One line each (Vault's error texts span lines).
	s.results = append(s.results, strings.Join(strings.Fields(fmt.Sprintf(format, args...)), " "))
}

func randSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func TestE2E(t *testing.T) {
	start := time.Now()
	s := newSuite(t)
	s.record("setup (Vault, RBAC, helm install, driver registered): %s", time.Since(start).Round(100*time.Millisecond))

	t.Run("1-2 pod reads its secrets (kubernetes auth, TokenReview)", s.testReadSecrets)
	t.Run("group", func(t *testing.T) {
		t.Run("2 wrong service account refused by Vault", s.testWrongServiceAccount)
		t.Run("3 rotation reaches the running pod", s.testRotation)
		t.Run("4 Vault policy denial, fixed without recreating the pod", s.testVaultDenialThenFix)
		t.Run("7 deleting a pod unmounts and revokes", s.testDeleteRevokes)
		t.Run("9 access policy denial names the rule", s.testAccessPolicy)
		t.Run("helm test", s.testHelmTest)
	})
	t.Run("11 rendered files and a keystore", s.testFormats)
	t.Run("12 reload signals", s.testReload)
	t.Run("6 driver pod deleted and back", s.testDriverRestart)
	t.Run("5 Vault down at start and during rotation", s.testVaultOutage)
	t.Run("8 burst of pods", s.testBurst)
	t.Run("13 HA Vault over TLS", s.testHAVault)
	// Last: it replaces the driver the other scenarios ran against.
	t.Run("10 helm upgrade to a new image while pods run", s.testUpgrade)

	s.record("suite total: %s", time.Since(start).Round(time.Second))
	t.Log("E2E SUMMARY\n  " + strings.Join(s.results, "\n  "))
}

func newSuite(t *testing.T) *suite {
	cfg := loadConfig(t)
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = 100, 200
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	s := &suite{cfg: cfg, kc: kc, rc: rc, kubeconfig: cfg.kubeconfig, kubectlPath: kubectlBin(t)}
	suffix := randSuffix()
	s.appNS, s.blockedNS = "vcsi-e2e-"+suffix, "vcsi-e2e-blocked-"+suffix
	helmEnv := []string{"KUBECONFIG=" + cfg.kubeconfig}

	// Leftovers of an interrupted run on a long-lived cluster (kind).
	if _, err := runHelm(t, helmEnv, "status", release, "-n", releaseNS); err == nil {
		t.Logf("removing a previous %s release", release)
		_, _ = runHelm(t, helmEnv, "uninstall", release, "-n", releaseNS, "--wait", "--timeout", "90s")
	}

	// Vault.
	if cfg.externalVault != "" {
		s.vaultAddr = cfg.externalVault
	} else if cfg.vaultImage != "" {
		pv := startPodVault(t, s, cfg.vaultImage)
		t.Cleanup(func() { _ = deleteNamespace(kc, kindVaultNS, 2*time.Minute) })
		s.vr, s.vaultAddr = pv, pv.addr
		if s.cfg.vaultAddrForPod == "" {
			s.cfg.vaultAddrForPod = pv.clusterURL
		}
		cfg = s.cfg
	} else {
		// A fixed address, so the outage scenario can stop Vault and start it
		// again where the driver looks for it.
		vp, err := vaulttest.RunWith(vaulttest.Options{Listen: cfg.vaultListen, Config: telemetryHCL})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(vp.Stop)
		s.vp, s.vr, s.vaultAddr = vp, vp, vp.Addr
	}
	if s.vc, err = rootClient(s.vaultAddr); err != nil {
		t.Fatal(err)
	}

	// Namespaces, service accounts, and the reviewer Vault uses for TokenReviews.
	for ns, sas := range map[string][]string{
		releaseNS:   {reviewerSA},
		s.appNS:     {"app", "rot", "denied", "revoke", "restart", "outage", "bulk", "upgrade", "fmt", reloadSA, refusedSA},
		s.blockedNS: {"app"},
	} {
		if err := ensureNamespace(kc, ns, sas...); err != nil {
			t.Fatalf("namespace %s: %v", ns, err)
		}
	}
	t.Cleanup(func() { s.teardown(t, helmEnv) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: reviewerCRB},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: reviewerSA, Namespace: releaseNS}},
	}
	if _, err := kc.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	tr, err := kc.CoreV1().ServiceAccounts(releaseNS).CreateToken(ctx, reviewerSA, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](4 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("reviewer token: %v", err)
	}
	ca := rc.CAData
	if len(ca) == 0 && rc.CAFile != "" {
		if ca, err = os.ReadFile(rc.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	k8sHost := rc.Host
	if cfg.vaultImage != "" {
		k8sHost = "https://kubernetes.default.svc" // Vault is a pod: the in-cluster address
	}
	s.setup = &vaultSetup{
		k8sHost: getenv("E2E_VAULT_KUBERNETES_HOST", k8sHost), k8sCA: string(ca),
		reviewerJWT: tr.Status.Token, audience: "vault",
		roles: map[string][2]string{
			"app": {s.appNS, "app"}, "rot": {s.appNS, "rot"}, "denied": {s.appNS, "denied"},
			"revoke": {s.appNS, "revoke"}, "restart": {s.appNS, "restart"}, "outage": {s.appNS, "outage"},
			"upgrade": {s.appNS, "upgrade"}, "fmt": {s.appNS, "fmt"}, reloadRole: {s.appNS, reloadSA},
			"bulk": {s.appNS, "bulk"}, "blocked": {s.blockedNS, "app"},
			// The chart's `helm test` pod mounts a Vault volume as this account.
			"helmtest": {releaseNS, release + "-vault-csi-driver-test"},
		},
		noPolicy: map[string]bool{"denied": true, "fmt": true}, // fmt's: setupFormatsVault
		secrets: map[string]map[string]any{
			"e2e/app/db":     {"password": "pw-1"},
			"e2e/app/api":    {"token": "tok-1"},
			"e2e/app/config": {"a": "1", "b": "two"},
			"e2e/rot/value":  {"value": "v1"},
			"e2e/denied/x":   {"value": "finally"},
			"e2e/revoke/x":   {"value": "r"},
			"e2e/restart/x":  {"value": "r1"},
			"e2e/outage/x":   {"value": "o1"},
			"e2e/upgrade/x":  {"value": "u1"},
			"e2e/bulk/a":     {"value": "a"},
			"e2e/bulk/b":     {"value": "b"},
			"e2e/bulk/c":     {"value": "c"},
			"e2e/blocked/x":  {"value": "never"},
			"e2e/helmtest/x": {"value": "helm"},
		},
	}
	for k, v := range reloadSecrets() {
		s.setup.secrets[k] = v
	}
	if err := s.setup.apply(s.vc); err != nil {
		t.Fatal(err)
	}

	// The chart, installed once for every scenario.
	values := map[string]any{
		"image":          map[string]any{"repository": strings.Split(cfg.image, ":")[0], "tag": tagOf(cfg.image), "pullPolicy": cfg.pullPolicy},
		"vault":          map[string]any{"address": cfg.vaultAddrForPod},
		"auth":           map[string]any{"method": "kubernetes"},
		"rotationPeriod": "10s",
		"kubeletDir":     cfg.kubeletDir,
		"hostNetwork":    cfg.hostNetwork,
		"accessPolicy": map[string]any{"rules": append(append([]any{
			map[string]any{"name": ruleBlockedNS, "effect": "deny", "namespaces": []string{s.blockedNS}},
			map[string]any{"name": ruleLabel, "effect": "deny", "podLabels": "vault-csi-e2e/deny=true"},
		}, reloadRules(s.appNS)...),
			map[string]any{"name": "e2e-allow-the-rest", "effect": "allow", "paths": []string{"secret/data/e2e/**", fmtPKIIssue}},
		)},
		"reloadSignals": map[string]any{"enabled": true}, // scenario 12
		"test": map[string]any{
			"image": map[string]any{"repository": strings.Split(cfg.busybox, ":")[0], "tag": tagOf(cfg.busybox), "pullPolicy": cfg.pullPolicy},
			"role":  "helmtest", "secrets": oneSecret("helmtest"),
		},
	}
	// No Prometheus Operator CRDs here: the chart's render tests cover these on.
	values["podMonitor"] = map[string]any{"enabled": false}
	values["prometheusRule"] = map[string]any{"enabled": false}
	if cfg.hostNetwork {
		// Keep health and metrics on the node's loopback, off the usual ports.
		values["listenAddress"], values["healthPort"], values["metricsPort"] = "127.0.0.1", e2eHealthPort, 19809
	}
	if cfg.stateDir != "" {
		values["stateDir"] = cfg.stateDir
	}
	if cfg.apiHost != "" || cfg.apiPort != "" {
		values["kubernetesService"] = map[string]any{"host": cfg.apiHost, "port": cfg.apiPort}
	}
	vb, err := yaml.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	valuesFile := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(valuesFile, vb, 0o600); err != nil {
		t.Fatal(err)
	}
	// What users install: the packaged chart, not the folder.
	pkg := packageChart(t)
	installStart := time.Now()
	// --wait: every driver pod Ready, i.e. (readiness probe on /readyz) kubelet
	// registered the plugin and Vault answered its health endpoint.
	if out, err := runHelm(t, helmEnv, "install", release, pkg, "-n", releaseNS,
		"-f", valuesFile, "--wait", "--timeout", "3m"); err != nil {
		t.Fatalf("%v\n%s\ndriver pods:\n%s", err, out, s.driverLogs())
	}
	if cfg.hostNetwork && cfg.nodeLocal {
		// Polled: helm's --wait counts a DaemonSet ready once NumberReady reaches
		// desired - maxUnavailable, which is 0 on one node with maxUnavailable 1,
		// so it can return before the driver pod is up.
		var body string
		if err := poll(90*time.Second, 200*time.Millisecond, func() (bool, error) {
			var err error
			body, err = httpGet(fmt.Sprintf("http://127.0.0.1:%d/readyz", e2eHealthPort))
			return err == nil && body == "ok\n", nil
		}); err != nil {
			t.Errorf("driver /readyz after install: %q %v", body, err)
		}
	}
	s.chart, s.valuesFile = pkg, valuesFile
	s.record("installed %s", filepath.Base(pkg))
	if err := poll(60*time.Second, 200*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		nodes, err := kc.StorageV1().CSINodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) == 0 {
			return false, nil
		}
		for _, n := range nodes.Items {
			found := false
			for _, d := range n.Spec.Drivers {
				found = found || d.Name == driverName
			}
			if !found {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Fatalf("kubelet did not register %s on every node within 60s\n%s", driverName, s.driverLogs())
	}
	s.record("helm install to driver registered on every node: %s", time.Since(installStart).Round(100*time.Millisecond))
	return s
}

// e2eHealthPort is the driver's health port on the node (hostNetwork).
const e2eHealthPort = 19808

// packageChart runs `helm package` on the chart and returns the archive.
func packageChart(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := runHelm(t, nil, "package", filepath.Join(repoRoot(t), chartDir), "-d", dir); err != nil {
		t.Fatalf("helm package: %v\n%s", err, out)
	}
	pkgs, err := filepath.Glob(filepath.Join(dir, "*.tgz"))
	if err != nil || len(pkgs) != 1 {
		t.Fatalf("helm package wrote %v (%v), want one .tgz", pkgs, err)
	}
	return pkgs[0]
}

// httpGet returns the body of a 200 answer.
func httpGet(url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s", resp.Status)
	}
	return string(b), err
}

func tagOf(image string) string {
	if i := strings.LastIndex(image, ":"); i > 0 && !strings.Contains(image[i:], "/") {
		return image[i+1:]
	}
	return "latest"
}

func (s *suite) teardown(t *testing.T, helmEnv []string) {
	if t.Failed() {
		t.Logf("driver logs:\n%s", s.driverLogs())
		if s.vr != nil {
			logs := s.vr.Logs()
			if len(logs) > 4000 {
				logs = logs[len(logs)-4000:]
			}
			t.Logf("vault logs (tail):\n%s", logs)
		}
	}
	start := time.Now()
	// Deleting the namespaces unpublishes every volume while the driver runs.
	var wg sync.WaitGroup
	for _, ns := range []string{s.appNS, s.blockedNS} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := deleteNamespace(s.kc, ns, 3*time.Minute); err != nil {
				t.Errorf("namespace %s not deleted: %v", ns, err)
			}
		}()
	}
	wg.Wait()
	if s.cfg.nodeLocal {
		var left []string
		for _, m := range hostMounts(filepath.Join(s.cfg.kubeletDir, "pods")) {
			if strings.Contains(m, "/volumes/kubernetes.io~csi/") {
				left = append(left, m)
			}
		}
		if len(left) > 0 {
			t.Errorf("CSI mounts left on the node after every test pod is gone: %v", left)
		}
	}
	if _, err := runHelm(t, helmEnv, "uninstall", release, "-n", releaseNS, "--wait", "--timeout", "90s"); err != nil && !strings.Contains(err.Error(), "not found") {
		t.Errorf("helm uninstall: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.kc.RbacV1().ClusterRoleBindings().Delete(ctx, reviewerCRB, metav1.DeleteOptions{})
	if err := deleteNamespace(s.kc, releaseNS, 90*time.Second); err != nil {
		t.Errorf("namespace %s not deleted: %v", releaseNS, err)
	}
	t.Logf("teardown: %s", time.Since(start).Round(100*time.Millisecond))
}

// driverPods lists the driver's pods.
func (s *suite) driverPods() ([]corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := s.kc.CoreV1().Pods(releaseNS).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/instance=" + release + ",app.kubernetes.io/component=node",
	})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func (s *suite) driverLogs() string {
	pods, err := s.driverPods()
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods {
		fmt.Fprintf(&b, "--- %s (%s)\n", p.Name, phaseOf(&p))
		out, err := s.kubectl(20*time.Second, "logs", "-n", releaseNS, p.Name, "--tail", "150")
		b.WriteString(out)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
		}
	}
	return b.String()
}

// ---------------------------------------------------------------- scenarios

const threeSecrets = `- file: db/password
  path: secret/data/e2e/app/db
  key: password
- file: api-token
  path: secret/data/e2e/app/api
  key: token
- file: config.json
  path: secret/data/e2e/app/config
`

func oneSecret(role string) string {
	return fmt.Sprintf("- file: value\n  path: secret/data/e2e/%s/x\n  key: value\n", role)
}

// 1 and 2: files, modes, group from fsGroup, read-only tmpfs; logged in with
// kubernetes auth, which Vault checks with a TokenReview.
func (s *suite) testReadSecrets(t *testing.T) {
	ns := s.appNS
	s.createPod(t, podSpec{name: "reader", ns: ns, sa: "app", role: "app", secrets: threeSecrets})
	first := s.waitReady(t, ns, "reader", 2*time.Minute)
	s.createPod(t, podSpec{name: "reader-2", ns: ns, sa: "app", role: "app", secrets: threeSecrets})
	second := s.waitReady(t, ns, "reader-2", 2*time.Minute)
	s.record("1: pod-to-Ready with a 3-secret volume: first pod %s, second %s", first.Round(time.Millisecond), second.Round(time.Millisecond))

	for file, want := range map[string]string{"/secrets/db/password": "pw-1", "/secrets/api-token": "tok-1"} {
		if out, err := s.exec(ns, "reader", "cat "+file); err != nil || out != want {
			t.Errorf("%s = %q (%v), want %q", file, out, err, want)
		}
	}
	out, err := s.exec(ns, "reader", "cat /secrets/config.json")
	var m map[string]any
	if err != nil || json.Unmarshal([]byte(out), &m) != nil || m["a"] != "1" || m["b"] != "two" {
		t.Errorf("config.json = %q (%v), want the whole data map as JSON", out, err)
	}
	out, err = s.exec(ns, "reader", "stat -L -c '%a %g %n' /secrets/db/password /secrets/api-token /secrets/config.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "440 2000 ") {
			t.Errorf("mode and group: %q, want 440 and the pod's fsGroup 2000", line)
		}
	}
	if out, _ := s.exec(ns, "reader", "id -u; id -G"); !strings.Contains(out, "1000") || !strings.Contains(out, "2000") {
		t.Errorf("the pod runs as uid 1000 with supplementary group 2000: %q", out)
	}
	if out, err := s.exec(ns, "reader", "touch /secrets/new 2>&1; echo rc=$?"); err != nil || strings.Contains(out, "rc=0") {
		t.Errorf("writing into the volume should fail: %q (%v)", out, err)
	}
	out, err = s.exec(ns, "reader", "grep ' /secrets ' /proc/mounts")
	if err != nil || !strings.HasPrefix(strings.Fields(out + " x x x x")[2], "tmpfs") || !strings.Contains(out, " ro,") {
		t.Errorf("/secrets should be a read-only tmpfs: %q (%v)", out, err)
	}
	msg := s.waitEvent(t, ns, "reader", "VaultSecretsMounted", 30*time.Second, `role "app"`)
	t.Logf("event: %s", msg)
	// Vault issued the token through kubernetes auth, to this service account.
	if accs, err := tokensOf(s.vc, ns, "app"); err != nil || len(accs) < 2 {
		t.Errorf("Vault tokens from kubernetes auth for %s/app: %v (%v), want one per volume", ns, accs, err)
	}
}

// 2: Vault's kubernetes auth refuses a pod whose service account is not the
// one bound to the role (the TokenReview names the real account).
func (s *suite) testWrongServiceAccount(t *testing.T) {
	t.Parallel()
	ns := s.appNS
	s.createPod(t, podSpec{name: "impostor", ns: ns, sa: "rot", role: "app", secrets: threeSecrets})
	msg := s.waitEvent(t, ns, "impostor", "VaultSecretsMountFailed", time.Minute, "PermissionDenied")
	s.record("2: service account rot asking for role app: %s", msg)
	s.deletePod(t, ns, "impostor", time.Minute)
}

// 3: a Vault value change appears in the running pod after the rotation period.
func (s *suite) testRotation(t *testing.T) {
	t.Parallel()
	ns := s.appNS
	s.createPod(t, podSpec{name: "rotating", ns: ns, sa: "rot", role: "rot",
		secrets: "- file: value\n  path: secret/data/e2e/rot/value\n  key: value\n"})
	s.waitReady(t, ns, "rotating", 2*time.Minute)
	s.waitContent(t, ns, "rotating", "/secrets/value", "v1", 10*time.Second)
	if err := s.setup.putSecret(s.vc, "e2e/rot/value", map[string]any{"value": "v2"}); err != nil {
		t.Fatal(err)
	}
	took := s.waitContent(t, ns, "rotating", "/secrets/value", "v2", 90*time.Second)
	msg := s.waitEvent(t, ns, "rotating", "VaultSecretsRotated", 30*time.Second, "secret/data/e2e/rot/value")
	s.record("3: Vault change seen in the running pod after %s (rotationPeriod 10s, kubelet syncFrequency 10s); event: %s", took.Round(100*time.Millisecond), msg)
}

// 4: a pod whose role's Vault policy denies the path waits in
// ContainerCreating with an Event saying why; fixing the policy lets the
// same pod start.
func (s *suite) testVaultDenialThenFix(t *testing.T) {
	t.Parallel()
	ns := s.appNS
	pod := s.createPod(t, podSpec{name: "denied", ns: ns, sa: "denied", role: "denied", secrets: oneSecret("denied")})
	msg := s.waitEvent(t, ns, "denied", "VaultSecretsMountFailed", time.Minute, "PermissionDenied")
	time.Sleep(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := s.kc.CoreV1().Pods(ns).Get(ctx, "denied", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if podReady(p) || phaseOf(p) != "Pending/ContainerCreating" {
		t.Errorf("denied pod: %s, want Pending/ContainerCreating", phaseOf(p))
	}
	fixed := time.Now()
	s.setup.mu.Lock()
	delete(s.setup.noPolicy, "denied")
	s.setup.mu.Unlock()
	if err := s.vc.Sys().PutPolicy("denied", `path "secret/data/e2e/denied/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	s.waitReady(t, ns, "denied", 3*time.Minute)
	if p, err := s.kc.CoreV1().Pods(ns).Get(ctx, "denied", metav1.GetOptions{}); err != nil || p.UID != pod.UID {
		t.Errorf("the pod was recreated (%v)", err)
	}
	s.waitContent(t, ns, "denied", "/secrets/value", "finally", 10*time.Second)
	s.record("4: denied pod event: %s; Ready %s after the Vault policy was fixed (kubelet's mount retry backoff)", msg, time.Since(fixed).Round(100*time.Millisecond))
}

// 7: deleting a pod unmounts its volume and revokes its Vault token.
func (s *suite) testDeleteRevokes(t *testing.T) {
	t.Parallel()
	ns := s.appNS
	pod := s.createPod(t, podSpec{name: "revoked", ns: ns, sa: "revoke", role: "revoke", secrets: oneSecret("revoke")})
	s.waitReady(t, ns, "revoked", 2*time.Minute)
	accs, err := tokensOf(s.vc, ns, "revoke")
	if err != nil || len(accs) != 1 {
		t.Fatalf("want one Vault token for the volume, got %v (%v)", accs, err)
	}
	podDir := filepath.Join(s.cfg.kubeletDir, "pods", string(pod.UID))
	if s.cfg.nodeLocal {
		if m := hostMounts(podDir + "/volumes/kubernetes.io~csi/"); len(m) != 1 {
			t.Errorf("want one CSI mount under %s, got %v", podDir, m)
		}
	}
	deleted := time.Now()
	s.deletePod(t, ns, "revoked", time.Minute)
	if err := poll(30*time.Second, 250*time.Millisecond, func() (bool, error) {
		a, err := tokensOf(s.vc, ns, "revoke")
		return err == nil && len(a) == 0, nil
	}); err != nil {
		t.Errorf("the volume's Vault token %v was not revoked", accs)
	}
	if _, err := s.vc.Auth().Token().LookupAccessor(accs[0]); err == nil {
		t.Errorf("accessor %s still valid", accs[0])
	}
	checks := "token revoked (accessor lookup fails)"
	if s.cfg.nodeLocal {
		if m := hostMounts(podDir); len(m) != 0 {
			t.Errorf("mounts left after the pod was deleted: %v", m)
		}
		checks += ", no mount left under the pod's dir on the node"
	}
	s.record("7: pod deleted: %s, %s after the delete", checks, time.Since(deleted).Round(100*time.Millisecond))
}

// 9: the access policy (a ConfigMap from the chart) denies before any Vault call.
func (s *suite) testAccessPolicy(t *testing.T) {
	t.Parallel()
	s.createPod(t, podSpec{name: "blocked", ns: s.blockedNS, sa: "app", role: "blocked", secrets: oneSecret("blocked")})
	s.createPod(t, podSpec{name: "labeled", ns: s.appNS, sa: "app", role: "app", secrets: threeSecrets,
		labels: map[string]string{"vault-csi-e2e/deny": "true"}})
	msg := s.waitEvent(t, s.blockedNS, "blocked", "VaultSecretsDenied", time.Minute, ruleBlockedNS)
	msg2 := s.waitEvent(t, s.appNS, "labeled", "VaultSecretsDenied", time.Minute, ruleLabel)
	if accs, err := tokensOf(s.vc, s.blockedNS, "app"); err != nil || len(accs) != 0 {
		t.Errorf("a denied pod reached Vault: tokens %v (%v)", accs, err)
	}
	s.record("9: namespace rule: %s", msg)
	s.record("9: pod-label rule (driver reads labels from the API): %s", msg2)
	s.deletePod(t, s.appNS, "labeled", time.Minute)
}

func (s *suite) testHelmTest(t *testing.T) {
	t.Parallel()
	// The test pod checks the driver's sockets on its node and mounts a Vault
	// volume (test.role/test.secrets); it is deleted when it succeeds.
	start := time.Now()
	out, err := runHelm(t, []string{"KUBECONFIG=" + s.kubeconfig}, "test", release, "-n", releaseNS, "--timeout", "2m")
	if err != nil {
		t.Fatalf("%v\n%s\nevents:\n%s", err, out, s.describeEvents(releaseNS, release+"-vault-csi-driver-test"))
	}
	if !strings.Contains(out, "Phase:          Succeeded") || strings.Contains(out, "Phase:          Failed") {
		t.Errorf("helm test output:\n%s", out)
	}
	s.record("helm test (driver sockets on the node + a Vault volume as the test's service account): passed in %s", time.Since(start).Round(100*time.Millisecond))
}

// 6: the driver pod is deleted and comes back: running pods keep their
// files, rotation resumes, and a later unpublish still revokes (the state
// dir survived).
func (s *suite) testDriverRestart(t *testing.T) {
	ns := s.appNS
	s.createPod(t, podSpec{name: "survivor", ns: ns, sa: "restart", role: "restart", secrets: oneSecret("restart")})
	s.waitReady(t, ns, "survivor", 2*time.Minute)
	s.waitContent(t, ns, "survivor", "/secrets/value", "r1", 10*time.Second)
	old, err := s.driverPods()
	if err != nil || len(old) == 0 {
		t.Fatalf("driver pods: %v (%v)", old, err)
	}
	// So far the liveness probe (/healthz, a CSI Probe) never failed.
	for _, p := range old {
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount != 0 {
				t.Errorf("driver container %s/%s restarted %d times before this test", p.Name, cs.Name, cs.RestartCount)
			}
		}
	}
	restart := time.Now()
	for _, p := range old {
		if out, err := s.kubectl(90*time.Second, "delete", "pod", "-n", releaseNS, p.Name, "--wait=true"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	gone := time.Since(restart)
	// No driver is running on the node now (or a new one is starting).
	if out, err := s.exec(ns, "survivor", "cat /secrets/value"); err != nil || out != "r1" {
		t.Errorf("files while the driver is away: %q (%v)", out, err)
	}
	if err := s.waitDriversReplaced(old, ""); err != nil {
		t.Fatalf("the DaemonSet did not bring the driver back: %v\n%s", err, s.driverLogs())
	}
	back := time.Since(restart)
	if err := s.setup.putSecret(s.vc, "e2e/restart/x", map[string]any{"value": "r2"}); err != nil {
		t.Fatal(err)
	}
	took := s.waitContent(t, ns, "survivor", "/secrets/value", "r2", 2*time.Minute)
	if accs, err := tokensOf(s.vc, ns, "restart"); err != nil || len(accs) != 1 {
		t.Errorf("want the volume's one Vault token, got %v (%v)", accs, err)
	}
	s.deletePod(t, ns, "survivor", time.Minute)
	if err := poll(30*time.Second, 250*time.Millisecond, func() (bool, error) {
		a, err := tokensOf(s.vc, ns, "restart")
		return err == nil && len(a) == 0, nil
	}); err != nil {
		t.Errorf("after a driver restart, unpublish did not revoke the volume's token")
	}
	s.record("6: driver pod deleted in %s, new one Ready %s after the delete; files kept; new value in the pod %s later; unpublish after the restart revoked the token",
		gone.Round(100*time.Millisecond), back.Round(100*time.Millisecond), took.Round(100*time.Millisecond))
}

// 5: Vault down when a pod starts (it starts once Vault is back); Vault down
// during rotation (the pod keeps the old values, then gets the new ones).
func (s *suite) testVaultOutage(t *testing.T) {
	if s.vr == nil {
		t.Skip("VAULT_ADDR given: the suite cannot stop that Vault")
	}
	ns := s.appNS
	s.createPod(t, podSpec{name: "steady", ns: ns, sa: "outage", role: "outage", secrets: oneSecret("outage")})
	s.waitReady(t, ns, "steady", 2*time.Minute)
	s.waitContent(t, ns, "steady", "/secrets/value", "o1", 10*time.Second)

	down := time.Now()
	s.vr.Stop()
	s.createPod(t, podSpec{name: "late", ns: ns, sa: "outage", role: "outage", secrets: oneSecret("outage")})
	msgLate := s.waitEvent(t, ns, "late", "VaultSecretsMountFailed", time.Minute, "Unavailable")
	msgSteady := s.waitEvent(t, ns, "steady", "VaultSecretsRefreshFailed", 90*time.Second)
	if out, err := s.exec(ns, "steady", "cat /secrets/value"); err != nil || out != "o1" {
		t.Errorf("during the outage the pod must keep the old value: %q (%v)", out, err)
	}
	// The same Vault again: same address, same configuration, a new value.
	s.setup.mu.Lock()
	s.setup.secrets["e2e/outage/x"] = map[string]any{"value": "o2"}
	s.setup.mu.Unlock()
	if err := s.vr.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.setup.apply(s.vc); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	outage := up.Sub(down)
	lateReady := s.waitReady(t, ns, "late", 3*time.Minute)
	lateAfterUp := time.Since(up)
	s.waitContent(t, ns, "late", "/secrets/value", "o2", 10*time.Second)
	s.waitContent(t, ns, "steady", "/secrets/value", "o2", 3*time.Minute)
	steadyAfterUp := time.Since(up)
	s.record("5: Vault down %s; pod started while down: %q; Ready %s after Vault was back (%s after creation)",
		outage.Round(100*time.Millisecond), msgLate, lateAfterUp.Round(100*time.Millisecond), lateReady.Round(100*time.Millisecond))
	s.record("5: running pod during the outage kept its files (%q); new value in the pod %s after Vault was back (new Vault: old tokens gone)",
		msgSteady, steadyAfterUp.Round(100*time.Millisecond))
}

// 8: a burst of pods with volumes, started together: time to all Ready and
// the Vault requests it took (Vault's own metrics).
func (s *suite) testBurst(t *testing.T) {
	ns, n := s.appNS, s.cfg.bulk
	// Quiesce: only the burst should talk to Vault.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.kc.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := poll(2*time.Minute, 500*time.Millisecond, func() (bool, error) {
		l, err := s.kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 0, nil
	}); err != nil {
		t.Fatalf("earlier pods not gone: %v", err)
	}
	secrets := "- file: a\n  path: secret/data/e2e/bulk/a\n  key: value\n" +
		"- file: b\n  path: secret/data/e2e/bulk/b\n  key: value\n" +
		"- file: c\n  path: secret/data/e2e/bulk/c\n  key: value\n"
	before, err := vaultMetrics(s.vaultAddr, s.vc.Token())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			// rotationPeriod 1h (a volume may lengthen the driver's period):
			// no refresh reads inside the measurement.
			p := s.podObject(podSpec{name: fmt.Sprintf("bulk-%02d", i), ns: ns, sa: "bulk", role: "bulk", secrets: secrets, rotationPeriod: "1h"})
			cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer ccancel()
			if _, err := s.kc.CoreV1().Pods(ns).Create(cctx, p, metav1.CreateOptions{}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("create: %v", err)
	}
	created := time.Since(start)
	var ready int
	var readyAt []time.Duration
	seen := map[string]bool{}
	err = poll(5*time.Minute, 250*time.Millisecond, func() (bool, error) {
		l, err := s.kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready = 0
		for i := range l.Items {
			if podReady(&l.Items[i]) {
				ready++
				if !seen[l.Items[i].Name] {
					seen[l.Items[i].Name] = true
					readyAt = append(readyAt, time.Since(start))
				}
			}
		}
		return ready == n, nil
	})
	all := time.Since(start)
	if err != nil {
		t.Fatalf("%d of %d pods Ready after %s", ready, n, all)
	}
	after, err := vaultMetrics(s.vaultAddr, s.vc.Token())
	if err != nil {
		t.Fatal(err)
	}
	delta := func(name string) int { return int(after[name] - before[name]) }
	var routes []string
	for name := range after {
		if strings.HasPrefix(name, "vault_route_") && delta(name) > 0 {
			routes = append(routes, fmt.Sprintf("%s=%d", strings.TrimSuffix(strings.TrimPrefix(name, "vault_route_"), "_count"), delta(name)))
		}
	}
	sort.Strings(routes)
	sort.Slice(readyAt, func(i, j int) bool { return readyAt[i] < readyAt[j] })
	if out, err := s.exec(ns, "bulk-07", "cat /secrets/a /secrets/b /secrets/c"); err != nil || out != "abc" {
		t.Errorf("bulk-07 files: %q (%v)", out, err)
	}
	// Vault counts logins apart from other requests; the suite's own
	// metrics read is in handle_request.
	reqs, logins := delta("vault_core_handle_request_count"), delta("vault_core_handle_login_request_count")
	s.record("8: %d pods (3 secrets each) created in %s, all Ready %s after the first create (median pod %s); Vault requests: %d (%d logins + %d others) = %.1f per pod; by route: %s",
		n, created.Round(100*time.Millisecond), all.Round(100*time.Millisecond), readyAt[len(readyAt)/2].Round(100*time.Millisecond),
		reqs+logins, logins, reqs, float64(reqs+logins)/float64(n), strings.Join(routes, " "))
}
