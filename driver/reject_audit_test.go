package driver_test

// Issue 9 item 11: requests refused before authorization are audited as
// rejects, and the audit decision is what the policy answered.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Item 11. A publish refused before authorization is audited as
// "action":"reject" with no decision and the identity the volume context
// claims; a refresh the policy refuses says "decision":"deny"; an unpublish
// carries no decision.
func TestRejectedRequestsAudited(t *testing.T) {
	auditFile := filepath.Join(t.TempDir(), "audit.log")
	pol := writePolicyFile(t, `
rules:
  - name: shop
    effect: allow
    namespaces: ["shop"]
    paths: ["secret/data/*"]
`)
	d := startObservedDriver(t, vaultSrv, "--audit-log="+auditFile, "--policy-file="+pol)
	const oneSecret = "- file: p\n  path: secret/data/db\n  key: password\n"
	long := strings.Repeat("x", 400) + "\n"

	// A foreign tmpfs (say an emptyDir with medium Memory) at a target.
	foreign := newTarget(t)
	if err := os.Mkdir(foreign, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", foreign, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign, "data"), []byte("not ours"), 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		req      *csi.NodePublishVolumeRequest
		code     codes.Code
		pod      string // the claimed pod name on the audit line
		role     string
		errField string
	}{
		{"missing role", volume{target: newTarget(t), pod: shopPod, secrets: oneSecret, extra: map[string]string{"role": "<delete>"}}.request(),
			codes.InvalidArgument, shopPod.PodName, "", "role"},
		{"bad file name", volume{target: newTarget(t), pod: shopPod, secrets: "- file: ../x\n  path: secret/data/db\n"}.request(),
			codes.InvalidArgument, shopPod.PodName, "payments", "secrets[0].file"},
		{"bad rotation period", volume{target: newTarget(t), pod: shopPod, secrets: oneSecret, extra: map[string]string{"rotationPeriod": "2562047h"}}.request(),
			codes.InvalidArgument, shopPod.PodName, "payments", "rotationPeriod"},
		{"relative target", volume{target: "relative/mount", pod: shopPod, secrets: oneSecret}.request(),
			codes.InvalidArgument, shopPod.PodName, "payments", "target_path"},
		{"a mount the driver did not make", volume{target: foreign, pod: shopPod, secrets: oneSecret}.request(),
			codes.FailedPrecondition, shopPod.PodName, "payments", "target_path"},
		{"hostile pod name", volume{target: newTarget(t), pod: shopPod, secrets: oneSecret,
			extra: map[string]string{"csi.storage.k8s.io/pod.name": long}}.request(),
			codes.InvalidArgument, strings.Repeat("x", 253) + "...", "payments", "csi.storage.k8s.io/pod.name"},
	}
	r0 := d.scrape(t).vaultRequests()
	for _, c := range cases {
		if _, err := d.node.NodePublishVolume(ctxT(t), c.req); status.Code(err) != c.code {
			t.Errorf("%s: %v, want %v", c.name, err, c.code)
		}
	}
	if got := d.scrape(t).vaultRequests() - r0; got != 0 {
		t.Errorf("rejected requests sent %v requests to Vault", got)
	}
	if b, err := os.ReadFile(filepath.Join(foreign, "data")); err != nil || string(b) != "not ours" {
		t.Errorf("the foreign tmpfs was touched: %q %v", b, err)
	}

	// A publish, then a refresh the policy now refuses, then the unpublish.
	vol := volume{target: newTarget(t), pod: shopPod, secrets: oneSecret}
	if _, err := d.node.NodePublishVolume(ctxT(t), vol.request()); err != nil {
		t.Fatal(err)
	}
	replacePolicyFile(t, pol, `
rules:
  - name: nothing-for-shop
    effect: deny
    namespaces: ["shop"]
`)
	// The policy file is polled every 2s: refresh until the denial shows.
	denied := false
	for i := 0; i < 100 && !denied; i++ {
		age(t, d.stateDir, vol.target, time.Minute)
		if _, err := d.node.NodePublishVolume(ctxT(t), vol.request()); err != nil {
			t.Fatalf("a refused refresh must still answer success: %v", err)
		}
		denied = d.scrape(t).value("vault_csi_refresh_failures_total", map[string]string{"reason": "PermissionDenied"}) > 0
		if !denied {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !denied {
		t.Fatal("the refresh was never denied by the new policy")
	}
	unpublish(t, d.driverProc, vol.target)

	b, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := auditLines(t, string(b))
	var raw []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		raw = append(raw, m)
	}
	if len(lines) < len(cases)+3 {
		t.Fatalf("%d audit lines, want at least %d:\n%s", len(lines), len(cases)+3, b)
	}
	for i, c := range cases {
		l := lines[i]
		if l.Action != "reject" {
			t.Errorf("%s: action %q, want reject", c.name, l.Action)
		}
		if _, ok := raw[i]["decision"]; ok {
			t.Errorf("%s: a reject carries a decision: %v", c.name, raw[i]["decision"])
		}
		if l.Pod != c.pod || l.Namespace != shopPod.Namespace || l.PodUID != shopPod.PodUID ||
			l.ServiceAccount != shopPod.ServiceAccount || l.Role != c.role {
			t.Errorf("%s: identity %s/%s uid %s sa %s role %q, want the claimed one", c.name, l.Namespace, l.Pod, l.PodUID, l.ServiceAccount, l.Role)
		}
		if !strings.Contains(l.Error, c.errField) {
			t.Errorf("%s: error %q does not name %s", c.name, l.Error, c.errField)
		}
		if l.VaultRequests == nil || *l.VaultRequests != 0 {
			t.Errorf("%s: vault_requests %v", c.name, l.VaultRequests)
		}
	}
	rest := lines[len(cases):]
	want := []struct{ action, decision string }{{"publish", "allow"}, {"fail", "deny"}, {"revoke", ""}}
	// Refreshes before the reload are allowed ones; keep the first and the
	// last two lines of the tail.
	got := []auditRecord{rest[0], rest[len(rest)-2], rest[len(rest)-1]}
	for i, w := range want {
		if got[i].Action != w.action || got[i].Decision != w.decision {
			t.Errorf("line %d: action %q decision %q, want %q %q", i, got[i].Action, got[i].Decision, w.action, w.decision)
		}
	}
	if !strings.Contains(got[1].Error, `rule "nothing-for-shop"`) {
		t.Errorf("denied refresh error %q does not name the rule", got[1].Error)
	}
}
