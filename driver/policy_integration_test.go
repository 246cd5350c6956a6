package driver_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"vaultcsi.dev/driver/provider/vaulttest"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// Rules for TestAccessPolicy. "legacy" and "nobody" are roles Vault does
// not know: a denial that names the policy proves Vault was never asked.
const accessPolicy = `
rules:
  - name: deny-legacy-role
    effect: deny
    roles: ["legacy"]
  - name: deny-debug-pods
    effect: deny
    podNames: ["debug-*"]
  - name: deny-default-sa
    effect: deny
    serviceAccounts: ["default"]
  - name: deny-other-team
    effect: deny
    paths: ["secret/data/other"]
  - name: shop-payment
    effect: allow
    namespaces: ["shop"]
    serviceAccounts: ["payment"]
    podNames: ["payment-*"]
    roles: ["payments"]
    paths: ["secret/data/*", "kv/api"]
`

func podAs(ns, name, sa string) vaulttest.Pod {
	return vaulttest.Pod{Namespace: ns, PodName: name, PodUID: vaulttest.PodUID(ns + "/" + name), ServiceAccount: sa}
}

// The access policy decides before any Vault call: each denial is
// PermissionDenied naming the rule (or "no rule matched"), sends nothing to
// Vault and leaves nothing mounted.
func TestAccessPolicy(t *testing.T) {
	d := startObservedDriver(t, vaultSrv, "--policy-file="+writePolicyFile(t, accessPolicy))

	t.Run("allowed", func(t *testing.T) {
		before := d.scrape(t).vaultRequests()
		target := newTarget(t)
		if _, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: shopPod, secrets: threeSecrets}.request()); err != nil {
			t.Fatalf("publish: %v", err)
		}
		if got := read(t, filepath.Join(target, "db/password")); got != dbPassword {
			t.Errorf("db/password = %q", got)
		}
		if after := d.scrape(t).vaultRequests(); after <= before {
			t.Errorf("an allowed publish made no Vault request (%v -> %v): the counter proves nothing", before, after)
		}
		unpublish(t, d.driverProc, target)
	})

	one := func(path string) string { return "- file: f\n  path: " + path + "\n  key: k\n" }
	for _, tt := range []struct {
		name    string
		pod     vaulttest.Pod
		role    string
		secrets string
		want    string
	}{
		{"namespace", podAs("elsewhere", "payment-1", "payment"), "", threeSecrets, "no rule matched"},
		{"service account by rule", podAs("shop", "payment-1", "default"), "", threeSecrets, `rule "deny-default-sa"`},
		{"service account unmatched", podAs("shop", "payment-1", "frontend"), "", threeSecrets, "no rule matched"},
		{"pod name by rule", podAs("shop", "debug-7", "payment"), "", threeSecrets, `rule "deny-debug-pods"`},
		{"pod name unmatched", podAs("shop", "web-7", "payment"), "", threeSecrets, "no rule matched"},
		{"path glob by rule", shopPod, "", threeSecrets + one("secret/data/other"), `rule "deny-other-team" for path "secret/data/other"`},
		{"path glob unmatched", shopPod, "", one("secret/data/shop/db"), `no rule matched for path "secret/data/shop/db"`},
		{"role by rule (unknown to Vault)", shopPod, "legacy", threeSecrets, `rule "deny-legacy-role"`},
		{"role unmatched (unknown to Vault)", shopPod, "nobody", threeSecrets, "no rule matched"},
	} {
		t.Run("denied by "+tt.name, func(t *testing.T) {
			before := d.scrape(t)
			target := newTarget(t)
			_, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: tt.pod, role: tt.role, secrets: tt.secrets}.request())
			msg := status.Convert(err).Message()
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("code %v (%v), want PermissionDenied", status.Code(err), err)
			}
			if !strings.HasPrefix(msg, "access policy denies") || !strings.Contains(msg, tt.want) {
				t.Errorf("message %q, want the access policy naming %s", msg, tt.want)
			}
			if strings.Contains(msg, "Vault answered") || strings.Contains(msg, "vault login") {
				t.Errorf("message %q comes from Vault, not the policy", msg)
			}
			after := d.scrape(t)
			if b, a := before.vaultRequests(), after.vaultRequests(); a != b {
				t.Errorf("a denied publish sent %v requests to Vault", a-b)
			}
			if b, a := before.value("vault_csi_policy_denials_total", nil), after.value("vault_csi_policy_denials_total", nil); a != b+1 {
				t.Errorf("policy_denials_total %v -> %v, want +1", b, a)
			}
			assertNothingMounted(t, target)
		})
	}
}

// pollPublish retries a publish until it succeeds or the bound passes: the
// policy file is polled every 2s.
func pollPublish(t *testing.T, d *driverProc, req func() *csi.NodePublishVolumeRequest, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		_, err := d.node.NodePublishVolume(ctxT(t), req())
		if err == nil {
			return time.Since(start)
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("publish: %v", err)
		}
		if time.Since(start) > within {
			t.Fatalf("still denied %v after the policy changed: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const (
	paypalOnlyPolicy = `
rules:
  - name: paypal-only
    effect: allow
    namespaces: ["shop"]
    paths: ["secret/data/paypal"]
`
	dbNotPaypalPolicy = `
rules:
  - name: no-paypal
    effect: deny
    paths: ["secret/data/paypal"]
  - name: db
    effect: allow
    namespaces: ["shop"]
    paths: ["secret/data/db"]
`
	dbOnly     = "- file: db\n  path: secret/data/db\n  key: password\n"
	paypalOnly = "- file: t\n  path: secret/data/paypal\n  key: token\n"
)

// A changed file applies within the poll interval; a malformed one keeps
// the last good policy in force, says so in the log and counts a failure.
func TestAccessPolicyReload(t *testing.T) {
	t.Parallel()
	pol := writePolicyFile(t, paypalOnlyPolicy)
	d := startObservedDriver(t, vaultSrv, "--policy-file="+pol)
	publish := func(secrets string) (string, error) {
		target := newTarget(t)
		_, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: shopPod, secrets: secrets}.request())
		return target, err
	}
	target, err := publish(dbOnly)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no rule matched") {
		t.Fatalf("before reload: %v, want PermissionDenied (no rule matched)", err)
	}
	assertNothingMounted(t, target)

	replacePolicyFile(t, pol, dbNotPaypalPolicy)
	target = newTarget(t)
	took := pollPublish(t, d.driverProc, func() *csi.NodePublishVolumeRequest {
		return volume{target: target, pod: shopPod, secrets: dbOnly}.request()
	}, 6*time.Second)
	t.Logf("new policy in force %v after the write", took.Round(10*time.Millisecond))
	unpublish(t, d.driverProc, target)
	s := d.scrape(t)
	if got := s.value("vault_csi_policy_reloads_total", map[string]string{"result": "success"}); got != 1 {
		t.Errorf("policy_reloads_total{result=success} = %v, want 1", got)
	}

	// Malformed: unknown field. The last good policy (db allowed, paypal
	// denied by rule) stays: neither fail-open nor fail-closed.
	replacePolicyFile(t, pol, "rules:\n  - name: oops\n    effect: allow\n    pathz: [\"**\"]\n")
	deadline := time.Now().Add(6 * time.Second)
	for d.scrape(t).value("vault_csi_policy_reloads_total", map[string]string{"result": "failure"}) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("malformed policy never counted as a failed reload\n%s", tail(d.logs.String(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	logs := d.logs.String()
	if !strings.Contains(logs, "keeping the last good policy") || !strings.Contains(logs, `unknown field \"pathz\"`) {
		t.Errorf("log does not say the last good policy was kept, naming the error:\n%s", tail(logs, 3000))
	}
	target, err = publish(dbOnly)
	if err != nil {
		t.Errorf("db after a malformed reload: %v (the last good policy allowed it)", err)
	} else {
		unpublish(t, d.driverProc, target)
	}
	target, err = publish(paypalOnly)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `rule "no-paypal"`) {
		t.Errorf("paypal after a malformed reload: %v, want denied by the last good policy's rule \"no-paypal\"", err)
	}
	assertNothingMounted(t, target)
	s = d.scrape(t)
	if got := s.value("vault_csi_policy_reloads_total", map[string]string{"result": "success"}); got != 1 {
		t.Errorf("policy_reloads_total{result=success} = %v after the bad file, want still 1", got)
	}
}

// A ConfigMap volume updates by writing a new timestamped dir and swapping
// the ..data symlink; the file path the driver reads is itself a symlink
// through ..data. The watcher must follow the swap.
func TestAccessPolicyConfigMapSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeVersion := func(name, content string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "policy.yaml"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeVersion("..2026_01_01_00_00_00.000000001", paypalOnlyPolicy)
	if err := os.Symlink("..2026_01_01_00_00_00.000000001", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.Symlink("..data/policy.yaml", pol); err != nil {
		t.Fatal(err)
	}
	d := startObservedDriver(t, vaultSrv, "--policy-file="+pol)
	target := newTarget(t)
	req := func() *csi.NodePublishVolumeRequest {
		return volume{target: target, pod: shopPod, secrets: dbOnly}.request()
	}
	if _, err := d.node.NodePublishVolume(ctxT(t), req()); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("before the swap: %v, want PermissionDenied", err)
	}

	// What kubelet's AtomicWriter does.
	writeVersion("..2026_01_01_00_01_00.000000002", dbNotPaypalPolicy)
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink("..2026_01_01_00_01_00.000000002", tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.000000001")); err != nil {
		t.Fatal(err)
	}
	took := pollPublish(t, d.driverProc, req, 6*time.Second)
	t.Logf("swapped policy in force %v after the swap", took.Round(10*time.Millisecond))
	unpublish(t, d.driverProc, target)
	s := d.scrape(t)
	if got := s.value("vault_csi_policy_reloads_total", map[string]string{"result": "success"}); got != 1 {
		t.Errorf("policy_reloads_total{result=success} = %v, want 1", got)
	}
	if got := s.value("vault_csi_policy_reloads_total", map[string]string{"result": "failure"}); got != 0 {
		t.Errorf("policy_reloads_total{result=failure} = %v during a clean swap, want 0", got)
	}
}

const labelPolicy = `
rules:
  - name: payment-label
    effect: allow
    namespaces: ["shop"]
    podLabels: "app=payment"
    paths: ["secret/data/db"]
`

// A rule on pod labels with no API access is a clear FailedPrecondition,
// before any Vault call, not a silent allow or a generic denial.
func TestAccessPolicyLabelsWithoutAPI(t *testing.T) {
	t.Parallel()
	if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		need.Missing(t, "KUBERNETES_SERVICE_HOST is set: the driver would use in-cluster API access")
	}
	d := startObservedDriver(t, vaultSrv, "--policy-file="+writePolicyFile(t, labelPolicy))
	target := newTarget(t)
	_, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: shopPod, secrets: dbOnly}.request())
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "no Kubernetes API access") {
		t.Fatalf("err = %v, want FailedPrecondition naming the missing API access", err)
	}
	if n := d.scrape(t).vaultRequests(); n != 0 {
		t.Errorf("%v Vault requests for a publish the policy could not decide", n)
	}
	assertNothingMounted(t, target)
}

// testPolicyPodLabels (under TestAPIServer): label rules read the real pod
// from the API server and check its UID.
func testPolicyPodLabels(t *testing.T, c *kubeCluster) {
	labeled := c.createPod(t, "shop", "payment-labeled", "payment", map[string]string{"app": "payment"})
	other := c.createPod(t, "shop", "payment-web", "payment", map[string]string{"app": "web"})
	d := startObservedDriver(t, vaultSrv, "--kubeconfig="+c.kubeconfig, "--policy-file="+writePolicyFile(t, labelPolicy))
	publish := func(p vaulttest.Pod) (string, error) {
		target := newTarget(t)
		_, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: p, secrets: dbOnly}.request())
		return target, err
	}

	target, err := publish(labeled)
	if err != nil {
		t.Fatalf("labels match: %v", err)
	}
	if got := read(t, filepath.Join(target, "db")); got != dbPassword {
		t.Errorf("db = %q", got)
	}
	unpublish(t, d.driverProc, target)

	forged := labeled
	forged.PodUID = "6f1c2d3e-0000-4000-8000-00000000beef"
	missing := podAs("shop", "payment-gone", "payment")
	for _, tt := range []struct {
		name string
		pod  vaulttest.Pod
		want string
	}{
		{"labels do not match", other, "no rule matched"},
		{"uid differs from the real pod", forged, "mismatch"},
		{"pod does not exist", missing, "mismatch"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := d.scrape(t).vaultRequests()
			target, err := publish(tt.pod)
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want PermissionDenied with %q", err, tt.want)
			}
			if after := d.scrape(t).vaultRequests(); after != before {
				t.Errorf("denied publish sent %v Vault requests", after-before)
			}
			assertNothingMounted(t, target)
		})
	}

	// Labels are read on every publish: relabeling the pod changes the answer.
	patch := []byte(`{"metadata":{"labels":{"app":"payment"}}}`)
	if _, err := c.cs.CoreV1().Pods("shop").Patch(ctxT(t), other.PodName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	target, err = publish(other)
	if err != nil {
		t.Fatalf("after relabeling: %v", err)
	}
	unpublish(t, d.driverProc, target)
}
