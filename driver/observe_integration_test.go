package driver_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"vaultcsi.dev/driver/driver/ops"

	"github.com/container-storage-interface/spec/lib/go/csi"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"

	"vaultcsi.dev/driver/driver/audit"
	"vaultcsi.dev/driver/driver/report"
	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// ---------------------------------------------------------------- helpers

// observedDriver is a driver process with its /metrics endpoint.
type observedDriver struct {
	*driverProc
	metricsURL string
}

// startObservedDriver starts the driver against v with --metrics-addr on a
// free port and waits until /metrics answers.
func startObservedDriver(t *testing.T, v *vaulttest.Server, extra ...string) *observedDriver {
	t.Helper()
	addr, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	d := startDriverFor(t, v, append([]string{"--metrics-addr=" + addr}, extra...)...)
	od := &observedDriver{driverProc: d, metricsURL: "http://" + addr + "/metrics"}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(od.metricsURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return od
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never answered: %v\n%s", err, tail(d.logs.String(), 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// promSnapshot is one scrape: parsed families and the raw exposition.
type promSnapshot struct {
	fams map[string]*dto.MetricFamily
	raw  string
}

func (d *observedDriver) scrape(t *testing.T) promSnapshot {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(d.metricsURL)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s %v", resp.Status, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return promSnapshot{fams: fams, raw: string(body)}
}

// value sums the series of a family whose labels include want: a counter's
// or gauge's value, a histogram's sample count.
func (s promSnapshot) value(name string, want map[string]string) float64 {
	f := s.fams[name]
	if f == nil {
		return 0
	}
	var sum float64
next:
	for _, m := range f.Metric {
		for k, v := range want {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// vaultRequests is the total of vault_csi_vault_requests_total.
func (s promSnapshot) vaultRequests() float64 {
	return s.value("vault_csi_vault_requests_total", nil)
}

// ops counts operations of one kind and outcome. A success is recorded as
// "OK" by the documented contract; the reporter currently writes "ok" (see
// report_test.go TestSuccessOutcomeIsGRPCCodeName), so both are counted here.
func (s promSnapshot) ops(op, outcome string) float64 {
	n := s.value("vault_csi_operation_duration_seconds", map[string]string{"operation": op, "outcome": outcome})
	if outcome == "OK" {
		n += s.value("vault_csi_operation_duration_seconds", map[string]string{"operation": op, "outcome": "ok"})
	}
	return n
}

// auditRecord is one audit line; decoding rejects unknown fields, so a new
// field (a place a secret could go) fails these tests until it is reviewed.
type auditRecord struct {
	Time           string           `json:"time"`
	Node           string           `json:"node"`
	Action         string           `json:"action"`
	Namespace      string           `json:"namespace"`
	Pod            string           `json:"pod"`
	PodUID         string           `json:"pod_uid"`
	ServiceAccount string           `json:"service_account"`
	Role           string           `json:"role"`
	Paths          []string         `json:"paths"`
	Versions       map[string]int64 `json:"versions"`
	LeaseIDs       []string         `json:"lease_ids"`
	Decision       string           `json:"decision"`
	Rule           string           `json:"rule"`
	Error          string           `json:"error"`
	LatencyMS      *float64         `json:"latency_ms"`
	VaultRequests  *int             `json:"vault_requests"`
}

// auditLines parses the driver's output lines that are JSON objects (the
// audit trail on stdout; klog's lines on stderr are not).
func auditLines(t *testing.T, logs string) []auditRecord {
	t.Helper()
	var out []auditRecord
	for _, line := range strings.Split(logs, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		var r auditRecord
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// writePolicyFile writes a policy into a new temp dir and returns its path.
func writePolicyFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	replacePolicyFile(t, p, content)
	return p
}

// replacePolicyFile swaps the file's content atomically (a reader never
// sees half a file).
func replacePolicyFile(t *testing.T, p, content string) {
	t.Helper()
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// assertNothingMounted checks a failed publish left no mount and no dir.
func assertNothingMounted(t *testing.T, target string) {
	t.Helper()
	if _, _, ok := mountOptions(t, target); ok {
		t.Errorf("%s left mounted", target)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", target, err)
	}
}

func unpublish(t *testing.T, d *driverProc, target string) {
	t.Helper()
	if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
		t.Fatalf("unpublish %s: %v", target, err)
	}
}

// ---------------------------------------------------------------- audit + metrics

const (
	obsSecret    = "obs-Secret-Value-8c1f2e"
	obsOldSecret = "obs-OLD-Value-55d0a1"
)

const obsPolicy = `
rules:
  - name: no-forbidden
    effect: deny
    paths: ["secret/data/forbidden/**"]
  - name: shop-apps
    effect: allow
    namespaces: ["shop"]
    paths: ["secret/data/*", "pki/issue/web"]
`

const obsSecrets = `
- file: password
  path: secret/data/app
  key: password
- file: tls.key
  path: pki/issue/web
  key: private_key
  args: {common_name: obs.shop.svc.cluster.local, ttl: 1h}
`

// One volume's life seen through the audit trail and the metrics: publish,
// refresh, a policy denial, a failed publish and the unpublish each leave
// one audit line with the right fields, move the right series, and never
// show a secret value, a token or a raw lease id.
func TestAuditTrailAndMetrics(t *testing.T) {
	v := vaulttest.Start(t)
	if _, err := v.ConfigurePKI("pki", "web", time.Hour, true); err != nil { // with leases
		t.Fatal(err)
	}
	v.PutKV2(t, "app", map[string]any{"password": obsOldSecret})
	version := v.PutKV2(t, "app", map[string]any{"password": obsSecret})
	v.Policy(t, "obs", vaulttest.ReadPolicy("secret/data/app", "secret/data/missing")+
		`path "pki/issue/web" { capabilities = ["create", "update"] }`)
	v.Role(t, "obs", "shop", "payment", "obs")
	d := startObservedDriver(t, v, "--policy-file="+writePolicyFile(t, obsPolicy))
	pod := vaulttest.Pod{Namespace: "shop", PodName: "payment-obs-5c8d", PodUID: "0b5e1c55-0b50-4b7e-8f0a-000000000042", ServiceAccount: "payment"}
	targetA, targetB, targetC := newTarget(t), newTarget(t), newTarget(t)
	volA := volume{target: targetA, pod: pod, role: "obs", secrets: obsSecrets}

	// Each step: what the audit line must say, and the Vault requests the
	// metrics saw during it.
	type step struct {
		action string
		delta  float64
	}
	var steps []step
	var secrets []string // everything that must never be printed
	var leaseIDs [][]string
	before := d.scrape(t).vaultRequests()
	did := func(action ops.Action) promSnapshot {
		s := d.scrape(t)
		steps = append(steps, step{string(action), s.vaultRequests() - before})
		before = s.vaultRequests()
		return s
	}
	remember := func() {
		st, err := state.Open(d.stateDir)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := st.Get(targetA)
		if err != nil || rec == nil || rec.Session == nil {
			t.Fatalf("state of %s: %v %v", targetA, rec, err)
		}
		var ids []string
		for _, s := range rec.Secrets {
			if s.LeaseID != "" {
				ids = append(ids, s.LeaseID)
				secrets = append(secrets, s.LeaseID)
			}
		}
		leaseIDs = append(leaseIDs, ids)
		secrets = append(secrets, rec.Session.Token, rec.Session.Accessor)
		key := read(t, filepath.Join(targetA, "tls.key"))
		secrets = append(secrets, strings.Split(key, "\n")[1]) // a line of the private key's base64
	}

	// 1. publish
	reqA := requestFor(v, volA)
	secrets = append(secrets, obsSecret, obsOldSecret, jwtOf(t, reqA))
	if _, err := d.node.NodePublishVolume(ctxT(t), reqA); err != nil {
		t.Fatalf("publish: %v", err)
	}
	s := did(ops.ActionPublish)
	if got := s.value("vault_csi_volumes_mounted", nil); got != 1 {
		t.Errorf("volumes_mounted after publish = %v, want 1", got)
	}
	if got := s.value("vault_csi_leases_held", nil); got != 1 {
		t.Errorf("leases_held after publish = %v, want 1", got)
	}
	remember()
	if len(leaseIDs[0]) != 1 {
		t.Fatalf("want one PKI lease in the state, got %v", len(leaseIDs[0]))
	}

	// 2. refresh: the rotation period has passed.
	age(t, d.stateDir, targetA, 15*time.Second)
	if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, volA)); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	did(ops.ActionRefresh)
	remember()
	// A republish that is not due touches no secret: no audit line.
	if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, volA)); err != nil {
		t.Fatalf("republish: %v", err)
	}
	if s := did(""); steps[len(steps)-1].delta != 0 {
		t.Errorf("a skipped republish made %v Vault requests", steps[len(steps)-1].delta)
	} else if got := s.ops("refresh", "skipped"); got != 1 {
		t.Errorf("refresh{outcome=skipped} = %v, want 1", got)
	}
	steps = steps[:len(steps)-1]

	// 3. deny
	_, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, volume{target: targetB, pod: pod, role: "obs",
		secrets: "- file: x\n  path: secret/data/forbidden/x\n  key: k\n"}))
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("deny: %v", err)
	}
	did(ops.ActionDeny)
	assertNothingMounted(t, targetB)

	// 4. fail: allowed by the policy, the path does not exist in Vault.
	_, err = d.node.NodePublishVolume(ctxT(t), requestFor(v, volume{target: targetC, pod: pod, role: "obs",
		secrets: "- file: x\n  path: secret/data/missing\n  key: k\n"}))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("fail: %v", err)
	}
	did(ops.ActionFail)
	assertNothingMounted(t, targetC)

	// 5. unpublish: token (and with it the lease) revoked.
	unpublish(t, d.driverProc, targetA)
	final := did(ops.ActionRevoke)

	logs := d.logs.String()
	lines := auditLines(t, logs)
	var actions []string
	for _, l := range lines {
		actions = append(actions, l.Action)
	}
	wantActions := []string{"publish", "refresh", "deny", "fail", "revoke"}
	if !slices.Equal(actions, wantActions) {
		t.Fatalf("audit actions = %v, want %v\n%s", actions, wantActions, logs)
	}
	hashRE := regexp.MustCompile(`^sha256:[0-9a-f]{16}$`)
	hashed := func(ids []string) []string {
		out := make([]string, len(ids))
		for i, id := range ids {
			out[i] = audit.HashLeaseID(id)
		}
		sort.Strings(out)
		return out
	}
	for _, l := range lines {
		t.Run("audit "+l.Action, func(t *testing.T) {
			if ts, err := time.Parse(time.RFC3339Nano, l.Time); err != nil || time.Since(ts) > time.Minute {
				t.Errorf("time %q: %v", l.Time, err)
			}
			if l.Node != "node-1" || l.Namespace != "shop" || l.Pod != pod.PodName || l.PodUID != pod.PodUID ||
				l.ServiceAccount != "payment" || l.Role != "obs" {
				t.Errorf("identity fields: %+v", l)
			}
			if l.LatencyMS == nil || *l.LatencyMS <= 0 || *l.LatencyMS > 20000 {
				t.Errorf("latency_ms = %v", l.LatencyMS)
			}
			if l.VaultRequests == nil {
				t.Fatal("vault_requests missing")
			}
			wantDecision, wantRule := "allow", "shop-apps"
			switch l.Action {
			case "deny":
				wantDecision, wantRule = "deny", "no-forbidden"
			case "revoke":
				wantDecision, wantRule = "", "" // an unpublish is not a policy decision
			}
			if l.Decision != wantDecision || l.Rule != wantRule {
				t.Errorf("decision %q rule %q, want %q %q", l.Decision, l.Rule, wantDecision, wantRule)
			}
			for _, id := range l.LeaseIDs {
				if !hashRE.MatchString(id) {
					t.Errorf("lease id %q is not hashed", id)
				}
			}
			got := append([]string(nil), l.LeaseIDs...)
			sort.Strings(got)
			switch l.Action {
			case "publish", "refresh":
				want := []string{"secret/data/app", "pki/issue/web"}
				if !slices.Equal(l.Paths, want) {
					t.Errorf("paths %v, want %v", l.Paths, want)
				}
				if l.Versions["secret/data/app"] != version || len(l.Versions) != 1 {
					t.Errorf("versions %v, want secret/data/app: %d", l.Versions, version)
				}
				if l.Error != "" {
					t.Errorf("error %q on a success", l.Error)
				}
				idx := map[string]int{"publish": 0, "refresh": 1}[l.Action]
				if want := hashed(leaseIDs[idx]); !slices.Equal(got, want) {
					t.Errorf("lease_ids %v, want %v", got, want)
				}
				if *l.VaultRequests < 1 {
					t.Errorf("vault_requests = %d, want >= 1", *l.VaultRequests)
				}
			case "deny":
				if !slices.Equal(l.Paths, []string{"secret/data/forbidden/x"}) {
					t.Errorf("paths %v", l.Paths)
				}
				if !strings.Contains(l.Error, `rule "no-forbidden"`) {
					t.Errorf("error %q does not name the rule", l.Error)
				}
				if *l.VaultRequests != 0 {
					t.Errorf("a denial made %d Vault requests", *l.VaultRequests)
				}
			case "fail":
				if !slices.Equal(l.Paths, []string{"secret/data/missing"}) {
					t.Errorf("paths %v", l.Paths)
				}
				if !strings.Contains(l.Error, "secret/data/missing") {
					t.Errorf("error %q does not name the path", l.Error)
				}
			case "revoke":
				if want := hashed(leaseIDs[1]); !slices.Equal(got, want) {
					t.Errorf("lease_ids %v, want the held lease %v", got, want)
				}
				if *l.VaultRequests < 1 {
					t.Errorf("vault_requests = %d, want >= 1 (revoke)", *l.VaultRequests)
				}
			}
		})
	}
	// audit.Event: "the latency and request count, which a reader should be
	// able to sum": vault_requests must be what the operation sent to
	// Vault, failures included (a crash-looping pod's Vault load).
	t.Run("audit vault_requests match the Vault traffic", func(t *testing.T) {
		for i, l := range lines {
			if l.VaultRequests != nil && float64(*l.VaultRequests) != steps[i].delta {
				t.Errorf("%s: vault_requests = %d, but the driver sent %v requests to Vault during it",
					l.Action, *l.VaultRequests, steps[i].delta)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		for _, c := range []struct {
			name string
			got  float64
			want float64
		}{
			{"publish OK", final.ops("publish", "OK"), 1},
			{"publish PermissionDenied", final.ops("publish", "PermissionDenied"), 1},
			{"publish NotFound", final.ops("publish", "NotFound"), 1},
			{"refresh fetched", final.ops("refresh", "OK") + final.ops("refresh", "unchanged"), 1},
			{"refresh skipped", final.ops("refresh", "skipped"), 1},
			{"unpublish OK", final.ops("unpublish", "OK"), 1},
			{"policy denials no-forbidden", final.value("vault_csi_policy_denials_total", map[string]string{"rule": "no-forbidden"}), 1},
			{"policy denials total", final.value("vault_csi_policy_denials_total", nil), 1},
			{"tokens reused", final.value("vault_csi_vault_tokens_total", map[string]string{"source": "reused"}), 1},
			{"volumes mounted after unpublish", final.value("vault_csi_volumes_mounted", nil), 0},
			{"leases held after unpublish", final.value("vault_csi_leases_held", nil), 0},
			{"policy reloads", final.value("vault_csi_policy_reloads_total", nil), 0},
		} {
			if c.got != c.want {
				t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
			}
		}
		for _, c := range []struct{ op, status string }{
			{"login", "2xx"}, {"read", "2xx"}, {"revoke", "2xx"},
		} {
			if final.value("vault_csi_vault_requests_total", map[string]string{"operation": c.op, "status": c.status}) < 1 {
				t.Errorf("vault_requests_total{operation=%q,status=%q} not counted", c.op, c.status)
			}
		}
		if got := final.value("vault_csi_vault_tokens_total", map[string]string{"source": "login"}); got < 1 {
			t.Errorf("vault_tokens_total{source=login} = %v, want >= 1", got)
		}
		if n := final.value("vault_csi_vault_requests_per_operation", map[string]string{"operation": "publish"}); n != 3 {
			t.Errorf("vault_requests_per_operation{publish} has %v observations, want 3", n)
		}
		// Cardinality and privacy: no pod, namespace, uid, path or target
		// is a label value or appears anywhere in the exposition.
		for _, bad := range []string{pod.PodName, pod.PodUID, `"shop"`, "secret/data", "pki/issue", targetA, "payment", obsSecret} {
			if strings.Contains(final.raw, bad) {
				t.Errorf("exposition contains %q", bad)
			}
		}
		for name, f := range final.fams {
			if !strings.HasPrefix(name, "vault_csi_") {
				continue
			}
			for _, m := range f.Metric {
				for _, lp := range m.Label {
					if strings.Contains(lp.GetValue(), "/") || lp.GetValue() == pod.Namespace {
						t.Errorf("%s has label %s=%q", name, lp.GetName(), lp.GetValue())
					}
				}
			}
		}
	})

	// The failed publish read a path Vault answered 404 for: the status
	// label is the HTTP status class, so that read is a 4xx, not a 2xx.
	t.Run("a 404 read is counted as 4xx", func(t *testing.T) {
		if got := final.value("vault_csi_vault_requests_total", map[string]string{"operation": "read", "status": "4xx"}); got != 1 {
			t.Errorf("vault_requests_total{operation=read,status=4xx} = %v, want 1 (secret/data/missing answered 404); 2xx reads = %v",
				got, final.value("vault_csi_vault_requests_total", map[string]string{"operation": "read", "status": "2xx"}))
		}
	})

	t.Run("nothing secret in any output", func(t *testing.T) {
		for _, sec := range secrets {
			if sec == "" {
				continue
			}
			if strings.Contains(logs, sec) {
				t.Errorf("driver output contains a secret (%.12s...)", sec)
			}
			if strings.Contains(final.raw, sec) {
				t.Errorf("metrics contain a secret (%.12s...)", sec)
			}
		}
		for _, pat := range []string{"eyJ", "hvs.", "BEGIN RSA PRIVATE KEY", "BEGIN PRIVATE KEY", "BEGIN EC PRIVATE KEY"} {
			if strings.Contains(logs, pat) {
				t.Errorf("driver output contains %q", pat)
			}
		}
	})
}

// ---------------------------------------------------------------- Events (real API server)

const eventsSecret = "ev-Secret-Value-ae93"

// testPodEvents: a publish, a policy denial and a failed refresh each leave
// an Event on the pod in the real API server, with the right type, reason
// and message, and no secret value.
func testPodEvents(t *testing.T, c *kubeCluster) {
	v := vaulttest.Start(t)
	v.PutKV2(t, "app", map[string]any{"k": eventsSecret})
	v.Policy(t, "ev", vaulttest.ReadPolicy("secret/data/app"))
	v.Role(t, "ev", "shop", "payment", "ev")
	pod := c.createPod(t, "shop", "payment-events", "payment", map[string]string{"app": "payment"})
	pol := writePolicyFile(t, obsPolicy)
	d := startDriverFor(t, v, "--kubeconfig="+c.kubeconfig, "--policy-file="+pol)

	target := newTarget(t)
	vol := volume{target: target, pod: pod, role: "ev", secrets: "- file: k\n  path: secret/data/app\n  key: k\n"}
	if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
		t.Fatalf("publish: %v", err)
	}
	denied := newTarget(t)
	_, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, volume{target: denied, pod: pod, role: "ev",
		secrets: "- file: x\n  path: secret/data/forbidden/x\n  key: k\n"}))
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("deny: %v", err)
	}
	// Vault stops granting the path: the next due refresh fails, keeps the files.
	v.Policy(t, "ev", vaulttest.ReadPolicy("secret/data/nothing"))
	age(t, d.stateDir, target, 15*time.Second)
	if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
		t.Fatalf("republish with a failing refresh must succeed: %v", err)
	}
	if got := read(t, filepath.Join(target, "k")); got != eventsSecret {
		t.Errorf("file after failed refresh = %q", got)
	}

	want := map[string]struct {
		typ      string
		contains []string
	}{
		report.ReasonMounted:       {corev1.EventTypeNormal, []string{"secret/data/app (v1)", `role "ev"`}},
		report.ReasonDenied:        {corev1.EventTypeWarning, []string{"PermissionDenied", `rule "no-forbidden"`, "secret/data/forbidden/x"}},
		report.ReasonRefreshFailed: {corev1.EventTypeWarning, []string{"keeping the files already mounted", "PermissionDenied"}},
	}
	var events []corev1.Event
	deadline := time.Now().Add(15 * time.Second)
	for {
		events = c.podEvents(t, pod)
		got := map[string]bool{}
		for _, e := range events {
			got[e.Reason] = true
		}
		if len(got) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	seen := map[string]bool{}
	for _, e := range events {
		t.Logf("event %s %s x%d: %s", e.Type, e.Reason, e.Count, e.Message)
		w, ok := want[e.Reason]
		if !ok {
			t.Errorf("unexpected event %s: %s", e.Reason, e.Message)
			continue
		}
		seen[e.Reason] = true
		if e.Type != w.typ {
			t.Errorf("%s: type %s, want %s", e.Reason, e.Type, w.typ)
		}
		for _, s := range w.contains {
			if !strings.Contains(e.Message, s) {
				t.Errorf("%s: message %q lacks %q", e.Reason, e.Message, s)
			}
		}
		if e.Source.Component != "vault-csi-driver" || e.Source.Host != "node-1" {
			t.Errorf("%s: source %+v", e.Reason, e.Source)
		}
		if e.InvolvedObject.Kind != "Pod" || string(e.InvolvedObject.UID) != pod.PodUID || e.InvolvedObject.Name != pod.PodName {
			t.Errorf("%s: involved object %+v", e.Reason, e.InvolvedObject)
		}
		for _, sec := range []string{eventsSecret, "eyJ", "hvs."} {
			if strings.Contains(e.Message, sec) {
				t.Errorf("%s: message carries a secret: %q", e.Reason, e.Message)
			}
		}
	}
	for r := range want {
		if !seen[r] {
			t.Errorf("no %s event on the pod (got %d events)", r, len(events))
		}
	}
	unpublish(t, d, target)
}

// testEventRateLimit: a pod whose publish fails 50 times in a row gets a
// bounded number of Events (client-go's correlator: identical events are
// folded into one with a count, and at most 10 per pod and type pass before
// the 1-per-30s refill).
func testEventRateLimit(t *testing.T, c *kubeCluster) {
	pod := c.createPod(t, "shop", "payment-flood", "payment", nil)
	d := startDriver(t, "--kubeconfig="+c.kubeconfig)
	const attempts = 50
	start := time.Now()
	for i := range attempts {
		target := newTarget(t)
		_, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: pod,
			secrets: "- file: x\n  path: secret/data/missing\n  key: k\n"}.request())
		if status.Code(err) != codes.NotFound {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	spent := time.Since(start)
	// Wait until the broadcaster has written what it is going to write.
	var events []corev1.Event
	var objects, count int
	stable, deadline := time.Now(), time.Now().Add(10*time.Second)
	for time.Now().Before(deadline) {
		events = c.podEvents(t, pod)
		n, sum := len(events), 0
		for _, e := range events {
			sum += int(max(e.Count, 1))
		}
		if n != objects || sum != count {
			objects, count, stable = n, sum, time.Now()
		} else if n > 0 && time.Since(stable) > 1500*time.Millisecond {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, e := range events {
		t.Logf("event %s %s count=%d: %s", e.Type, e.Reason, e.Count, e.Message)
	}
	t.Logf("%d failed publishes in %v -> %d Event objects, summed count %d", attempts, spent.Round(time.Millisecond), objects, count)
	if objects == 0 {
		t.Fatal("no Event for a failing pod")
	}
	for _, e := range events {
		if e.Reason != report.ReasonMountFailed || e.Type != corev1.EventTypeWarning {
			t.Errorf("event %s/%s, want Warning/%s", e.Type, e.Reason, report.ReasonMountFailed)
		}
	}
	// Burst 10, then one more per 30 s of the run: the bound follows from
	// how long the publishes took, not from an assumption about it.
	refill := int(spent / (30 * time.Second))
	if maxObjects, maxCount := 2+refill, 11+refill; objects > maxObjects || count > maxCount {
		t.Errorf("%d failed publishes in %v made %d Event objects with summed count %d: not rate-limited (want <= %d objects, count <= %d)",
			attempts, spent.Round(time.Millisecond), objects, count, maxObjects, maxCount)
	}
}
