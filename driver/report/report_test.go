package report_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"vaultcsi.dev/driver/driver/ops"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver"
	"vaultcsi.dev/driver/driver/audit"
	"vaultcsi.dev/driver/driver/metrics"
	"vaultcsi.dev/driver/driver/report"
	"vaultcsi.dev/driver/provider"
)

type event struct{ ns, name, uid, typ, reason, msg string }

type fakeSink struct{ events []event }

func (f *fakeSink) Event(namespace, name, uid, eventType, reason, message string) {
	f.events = append(f.events, event{namespace, name, uid, eventType, reason, message})
}

var pod = provider.Identity{Namespace: "shop", PodName: "payment-1", PodUID: "uid-1", ServiceAccount: "payment"}

const rawLease = "database/creds/app/Abc123LeaseRaw"

var (
	kvInfo    = provider.SecretInfo{Path: "secret/data/db", Version: 4}
	leaseInfo = provider.SecretInfo{Path: "database/creds/app", LeaseID: rawLease, LeaseDuration: time.Hour, Renewable: true}
)

// series returns every non-zero sample of the driver's own metrics as
// "name{k=v,...} value"; histograms as _count (and _sum for the request
// histogram, whose values are whole numbers).
func series(t *testing.T, m *metrics.Metrics) []string {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range fams {
		name := f.GetName()
		if !strings.HasPrefix(name, "vault_csi_") {
			continue
		}
		for _, mt := range f.Metric {
			var ls []string
			for _, lp := range mt.Label {
				v := lp.GetValue()
				if lp.GetName() == "outcome" && v == "ok" {
					v = "OK" // see TestSuccessOutcomeIsGRPCCodeName
				}
				ls = append(ls, lp.GetName()+"="+v)
			}
			key := name + "{" + strings.Join(ls, ",") + "}"
			switch {
			case mt.Counter != nil && mt.Counter.GetValue() != 0:
				out = append(out, fmt.Sprintf("%s %g", key, mt.Counter.GetValue()))
			case mt.Gauge != nil && mt.Gauge.GetValue() != 0:
				out = append(out, fmt.Sprintf("%s %g", key, mt.Gauge.GetValue()))
			case mt.Histogram != nil && mt.Histogram.GetSampleCount() != 0:
				out = append(out, fmt.Sprintf("%s_count %d", key, mt.Histogram.GetSampleCount()))
				if name == "vault_csi_vault_requests_per_operation" && mt.Histogram.GetSampleSum() != 0 {
					out = append(out, fmt.Sprintf("%s_sum %g", key, mt.Histogram.GetSampleSum()))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

type line struct {
	Action, Namespace, Pod, PodUID, ServiceAccount, Role, Decision, Rule, Error string
	Node                                                                        string
	Paths                                                                       []string
	Versions                                                                    map[string]int64
	LeaseIDs                                                                    []string `json:"lease_ids"`
	VaultRequests                                                               int      `json:"vault_requests"`
	LatencyMS                                                                   float64  `json:"latency_ms"`
}

func auditOf(t *testing.T, buf *bytes.Buffer) []line {
	t.Helper()
	var out []line
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var x struct {
			line
			PodUID         string `json:"pod_uid"`
			ServiceAccount string `json:"service_account"`
		}
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		x.line.PodUID, x.line.ServiceAccount = x.PodUID, x.ServiceAccount
		out = append(out, x.line)
	}
	return out
}

// Each kind and outcome of driver.Op goes to the right metric series, audit
// action and Event reason, and nothing else.
func TestObserve(t *testing.T) {
	denied := status.Error(codes.PermissionDenied, `access policy denies role "payments" for shop/payment-1 (service account payment): denied by rule "no-paypal" (rule "no-paypal")`)
	notFound := status.Error(codes.NotFound, `secret/data/missing: not found`)
	unavailable := status.Error(codes.Unavailable, `vault: connection refused`)
	tests := []struct {
		name        string
		op          driver.Op
		series      []string
		action      ops.Action // "" = no audit line
		decision    ops.Decision
		eventType   string // "" = no Event
		eventReason string
		eventHas    []string
	}{
		{
			name: "first publish",
			op: driver.Op{Kind: "publish", Outcome: "ok", Pod: pod, Role: "payments", Rule: "shop", Decision: ops.DecisionAllow,
				Paths: []string{"secret/data/db", "database/creds/app"}, Secrets: []provider.SecretInfo{kvInfo, leaseInfo},
				Latency: 30 * time.Millisecond, Requests: 3, LoggedIn: true, Changed: true, MountedDelta: 1, LeasesDelta: 1},
			series: []string{
				"vault_csi_leases_held{} 1",
				"vault_csi_operation_duration_seconds{operation=publish,outcome=OK}_count 1",
				"vault_csi_vault_requests_per_operation{operation=publish}_count 1",
				"vault_csi_vault_requests_per_operation{operation=publish}_sum 3",
				"vault_csi_vault_tokens_total{source=login} 1",
				"vault_csi_volumes_mounted{} 1",
			},
			action: ops.ActionPublish, decision: ops.DecisionAllow,
			eventType: "Normal", eventReason: report.ReasonMounted,
			eventHas: []string{"secret/data/db (v4)", "database/creds/app (ttl 1h0m0s)", `role "payments"`},
		},
		{
			name: "policy denial",
			op: driver.Op{Kind: "deny", Outcome: "failed", Code: "PermissionDenied", Err: denied, Pod: pod, Role: "payments",
				Rule: "no-paypal", Paths: []string{"secret/data/paypal"}, Latency: time.Millisecond},
			series: []string{
				"vault_csi_operation_duration_seconds{operation=publish,outcome=PermissionDenied}_count 1",
				"vault_csi_policy_denials_total{rule=no-paypal} 1",
				"vault_csi_vault_requests_per_operation{operation=publish}_count 1",
			},
			action: ops.ActionDeny, decision: ops.DecisionDeny,
			eventType: "Warning", eventReason: report.ReasonDenied, eventHas: []string{"PermissionDenied", `rule "no-paypal"`},
		},
		{
			name: "policy denial, no rule matched",
			op: driver.Op{Kind: "deny", Outcome: "failed", Code: "PermissionDenied", Err: denied, Pod: pod, Role: "payments",
				Paths: []string{"secret/data/paypal"}},
			series: []string{
				"vault_csi_operation_duration_seconds{operation=publish,outcome=PermissionDenied}_count 1",
				"vault_csi_policy_denials_total{rule=} 1",
				"vault_csi_vault_requests_per_operation{operation=publish}_count 1",
			},
			action: ops.ActionDeny, decision: ops.DecisionDeny,
			eventType: "Warning", eventReason: report.ReasonDenied,
		},
		{
			name: "failed first publish",
			op: driver.Op{Kind: "publish", Outcome: "failed", Code: "NotFound", Err: notFound, Pod: pod, Role: "payments",
				Rule: "shop", Decision: ops.DecisionAllow, Paths: []string{"secret/data/missing"}},
			series: []string{
				"vault_csi_operation_duration_seconds{operation=publish,outcome=NotFound}_count 1",
				"vault_csi_vault_requests_per_operation{operation=publish}_count 1",
			},
			action: ops.ActionFail, decision: ops.DecisionAllow,
			eventType: "Warning", eventReason: report.ReasonMountFailed, eventHas: []string{"NotFound: secret/data/missing"},
		},
		{
			name: "rejected request (no pod known)",
			op:   driver.Op{Kind: ops.Reject, Outcome: "failed", Code: "InvalidArgument", Err: status.Error(codes.InvalidArgument, "role: required")},
			series: []string{
				"vault_csi_operation_duration_seconds{operation=publish,outcome=InvalidArgument}_count 1",
				"vault_csi_vault_requests_per_operation{operation=publish}_count 1",
			},
			action: ops.ActionReject, decision: "", // the access policy was never asked
		},
		{
			// The identity the volume context claims, even though it failed
			// validation; no Event, since that identity is unverified.
			name: "rejected request (pod claimed)",
			op: driver.Op{Kind: ops.Reject, Outcome: "failed", Code: "InvalidArgument", Pod: pod, Role: "payments",
				Err: status.Error(codes.InvalidArgument, "secrets[0].file: required")},
			series: []string{
				"vault_csi_operation_duration_seconds{operation=publish,outcome=InvalidArgument}_count 1",
				"vault_csi_vault_requests_per_operation{operation=publish}_count 1",
			},
			action: ops.ActionReject, decision: "",
		},
		{
			// A refresh the policy now refuses keeps its files (kept-old)
			// but its audit line says deny.
			name: "refresh denied by the policy",
			op: driver.Op{Kind: "refresh", Outcome: "kept-old", Code: "PermissionDenied", Err: denied, Reason: "period", Pod: pod,
				Role: "payments", Rule: "no-paypal", Decision: ops.DecisionDeny, Paths: []string{"secret/data/paypal"}},
			series: []string{
				"vault_csi_operation_duration_seconds{operation=refresh,outcome=kept-old}_count 1",
				"vault_csi_refresh_failures_total{reason=PermissionDenied} 1",
				"vault_csi_vault_requests_per_operation{operation=refresh}_count 1",
			},
			action: ops.ActionFail, decision: ops.DecisionDeny,
			eventType: "Warning", eventReason: report.ReasonRefreshFailed, eventHas: []string{"keeping the files already mounted", "PermissionDenied"},
		},
		{
			name: "republish not due",
			op:   driver.Op{Kind: "republish", Outcome: "skipped", Pod: pod, Role: "payments", Paths: []string{"secret/data/db"}},
			series: []string{
				"vault_csi_operation_duration_seconds{operation=refresh,outcome=skipped}_count 1",
				"vault_csi_vault_requests_per_operation{operation=refresh}_count 1",
			},
		},
		{
			name: "refresh that rotated",
			op: driver.Op{Kind: "refresh", Outcome: "ok", Changed: true, Reason: "period", Pod: pod, Role: "payments", Rule: "shop", Decision: ops.DecisionAllow,
				Paths: []string{"secret/data/db"}, Secrets: []provider.SecretInfo{{Path: "secret/data/db", Version: 5}}, Requests: 1},
			series: []string{
				"vault_csi_operation_duration_seconds{operation=refresh,outcome=OK}_count 1",
				"vault_csi_vault_requests_per_operation{operation=refresh}_count 1",
				"vault_csi_vault_requests_per_operation{operation=refresh}_sum 1",
				"vault_csi_vault_tokens_total{source=reused} 1",
			},
			action: ops.ActionRefresh, decision: ops.DecisionAllow,
			eventType: "Normal", eventReason: report.ReasonRotated, eventHas: []string{"period", "secret/data/db (v5)"},
		},
		{
			name: "refresh, nothing changed",
			op: driver.Op{Kind: "refresh", Outcome: "unchanged", Reason: "period", Pod: pod, Role: "payments", Decision: ops.DecisionAllow,
				Paths: []string{"secret/data/db"}, Secrets: []provider.SecretInfo{kvInfo}, Requests: 2, LoggedIn: true},
			series: []string{
				"vault_csi_operation_duration_seconds{operation=refresh,outcome=unchanged}_count 1",
				"vault_csi_vault_requests_per_operation{operation=refresh}_count 1",
				"vault_csi_vault_requests_per_operation{operation=refresh}_sum 2",
				"vault_csi_vault_tokens_total{source=login} 1",
			},
			action: ops.ActionRefresh, decision: ops.DecisionAllow,
		},
		{
			name: "refresh failed, old files kept",
			op: driver.Op{Kind: "refresh", Outcome: "kept-old", Code: "Unavailable", Err: unavailable, Reason: "period", Pod: pod,
				Role: "payments", Decision: ops.DecisionAllow, Paths: []string{"secret/data/db"}, Secrets: []provider.SecretInfo{kvInfo}, Requests: 1},
			series: []string{
				"vault_csi_operation_duration_seconds{operation=refresh,outcome=kept-old}_count 1",
				"vault_csi_refresh_failures_total{reason=Unavailable} 1",
				"vault_csi_vault_requests_per_operation{operation=refresh}_count 1",
				"vault_csi_vault_requests_per_operation{operation=refresh}_sum 1",
				"vault_csi_vault_tokens_total{source=reused} 1",
			},
			action: ops.ActionFail, decision: ops.DecisionAllow,
			eventType: "Warning", eventReason: report.ReasonRefreshFailed, eventHas: []string{"keeping the files already mounted", "Unavailable"},
		},
		{
			name: "unpublish",
			op: driver.Op{Kind: "unpublish", Outcome: "ok", Pod: pod, Role: "payments", Secrets: []provider.SecretInfo{kvInfo, leaseInfo},
				Requests: 1, MountedDelta: -1, LeasesDelta: -1},
			series: []string{
				"vault_csi_leases_held{} -1",
				"vault_csi_operation_duration_seconds{operation=unpublish,outcome=OK}_count 1",
				"vault_csi_vault_requests_per_operation{operation=unpublish}_count 1",
				"vault_csi_vault_requests_per_operation{operation=unpublish}_sum 1",
				"vault_csi_volumes_mounted{} -1",
			},
			action: ops.ActionRevoke, decision: "", // an unpublish asks no policy
		},
		{
			name: "background revocation retry failed",
			op:   driver.Op{Kind: ops.RevokeRetry, Outcome: ops.Failed, Err: unavailable, Pod: pod, Requests: 1, Reason: "unpublish"},
			series: []string{
				"vault_csi_revocation_retries_total{outcome=failed} 1",
			},
		},
		{
			name: "background revocation retry succeeded",
			op:   driver.Op{Kind: ops.RevokeRetry, Outcome: ops.OK, Pod: pod, Requests: 1, Reason: "unpublish"},
			series: []string{
				"vault_csi_revocation_retries_total{outcome=OK} 1", // "ok" is shown as OK by series()
			},
			action: ops.ActionRevoke,
		},
		{
			name: "background revocation dropped at the token's expiry",
			op:   driver.Op{Kind: ops.RevokeRetry, Outcome: ops.Expired, Pod: pod, Reason: "unpublish"},
			series: []string{
				"vault_csi_revocation_retries_total{outcome=expired} 1",
			},
			action: ops.ActionRevoke,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			m := metrics.New()
			sink := &fakeSink{}
			r := &report.Reporter{Metrics: m, Audit: audit.New(&buf, "node-1"), Events: sink}
			r.Observe(tt.op)

			sort.Strings(tt.series)
			if got := series(t, m); !slices.Equal(got, tt.series) {
				t.Errorf("metrics:\n got  %q\n want %q", got, tt.series)
			}

			lines := auditOf(t, &buf)
			if tt.action == "" {
				if len(lines) != 0 {
					t.Errorf("audit lines %+v, want none", lines)
				}
			} else if len(lines) != 1 {
				t.Fatalf("%d audit lines, want 1: %s", len(lines), buf.String())
			} else {
				l := lines[0]
				if l.Action != string(tt.action) || l.Decision != string(tt.decision) || l.Node != "node-1" {
					t.Errorf("audit action %q decision %q node %q, want %q %q", l.Action, l.Decision, l.Node, tt.action, tt.decision)
				}
				if l.Namespace != tt.op.Pod.Namespace || l.Pod != tt.op.Pod.PodName || l.PodUID != tt.op.Pod.PodUID ||
					l.ServiceAccount != tt.op.Pod.ServiceAccount || l.Role != tt.op.Role || l.Rule != tt.op.Rule {
					t.Errorf("audit identity %+v for op %+v", l, tt.op)
				}
				wantPaths := tt.op.Paths
				if len(wantPaths) == 0 {
					for _, s := range tt.op.Secrets {
						wantPaths = append(wantPaths, s.Path)
					}
				}
				if !slices.Equal(l.Paths, wantPaths) {
					t.Errorf("audit paths %v, want %v", l.Paths, wantPaths)
				}
				if l.VaultRequests != tt.op.Requests {
					t.Errorf("audit vault_requests %d, want %d", l.VaultRequests, tt.op.Requests)
				}
				if want := tt.op.Latency.Seconds() * 1000; l.LatencyMS != want {
					t.Errorf("audit latency_ms %v, want %v", l.LatencyMS, want)
				}
				for _, s := range tt.op.Secrets {
					if s.Version > 0 && l.Versions[s.Path] != s.Version {
						t.Errorf("audit versions %v lack %s v%d", l.Versions, s.Path, s.Version)
					}
					if s.LeaseID != "" && !slices.Contains(l.LeaseIDs, audit.HashLeaseID(s.LeaseID)) {
						t.Errorf("audit lease_ids %v lack the hash of %s", l.LeaseIDs, s.LeaseID)
					}
				}
				if tt.op.Err != nil && l.Error != status.Convert(tt.op.Err).Message() {
					t.Errorf("audit error %q", l.Error)
				}
			}
			if strings.Contains(buf.String(), rawLease) {
				t.Errorf("audit line carries a raw lease id: %s", buf.String())
			}

			if tt.eventReason == "" {
				if len(sink.events) != 0 {
					t.Errorf("events %+v, want none", sink.events)
				}
				return
			}
			if len(sink.events) != 1 {
				t.Fatalf("events %+v, want one %s", sink.events, tt.eventReason)
			}
			e := sink.events[0]
			if e.typ != tt.eventType || e.reason != tt.eventReason || e.ns != pod.Namespace || e.name != pod.PodName || e.uid != pod.PodUID {
				t.Errorf("event %+v, want %s/%s on %s/%s", e, tt.eventType, tt.eventReason, pod.Namespace, pod.PodName)
			}
			for _, s := range tt.eventHas {
				if !strings.Contains(e.msg, s) {
					t.Errorf("event message %q lacks %q", e.msg, s)
				}
			}
			if strings.Contains(e.msg, rawLease) {
				t.Errorf("event message carries a raw lease id: %q", e.msg)
			}
		})
	}
}

// The outcome label is documented as a gRPC code name ("OK",
// "PermissionDenied", ...) in metrics.ObservePublish, the metric's help and
// metrics_test.go; failures follow it, but successes are recorded as "ok".
// A dashboard that divides outcome="OK" by the total sees 0%.
func TestSuccessOutcomeIsGRPCCodeName(t *testing.T) {
	for _, kind := range []ops.Kind{ops.Publish, ops.Refresh, ops.Unpublish} {
		m := metrics.New()
		r := &report.Reporter{Metrics: m}
		r.Observe(driver.Op{Kind: kind, Outcome: "ok", Pod: pod, MountedDelta: map[ops.Kind]int{ops.Publish: 1, ops.Unpublish: -1}[kind]})
		fams, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() != "vault_csi_operation_duration_seconds" {
				continue
			}
			for _, mt := range f.Metric {
				for _, lp := range mt.Label {
					if lp.GetName() == "outcome" && lp.GetValue() != codes.OK.String() {
						t.Errorf("successful %s recorded with outcome=%q, want %q", kind, lp.GetValue(), codes.OK.String())
					}
				}
			}
		}
	}
}

// A Reporter with every part nil, or an Op without a pod, must not panic.
func TestObserveNilParts(t *testing.T) {
	(&report.Reporter{}).Observe(driver.Op{Kind: "publish", Outcome: "ok", Pod: pod})
	sink := &fakeSink{}
	(&report.Reporter{Events: sink}).Observe(driver.Op{Kind: "publish", Outcome: "failed", Err: errors.New("x")})
	if len(sink.events) != 0 {
		t.Errorf("event for an op without a pod: %+v", sink.events)
	}
}

// An error that is not a gRPC status is reported verbatim; a status error
// as "Code: message". The audit logger masks anything that looks like a
// credential in an error text (CVE-2025-7445 was an error echoing a secret);
// Events carry the same text and must be masked the same way.
func TestErrorTextsMaskCredentials(t *testing.T) {
	var buf bytes.Buffer
	sink := &fakeSink{}
	r := &report.Reporter{Audit: audit.New(&buf, "n"), Events: sink}
	jwt := "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
	vaultToken := "hvs.CAESIJ2x7rQ0aZ9Lk3mN4pQ5sT6uV7wX8yZ"
	r.Observe(driver.Op{Kind: "publish", Outcome: "failed", Code: "Unknown", Err: errors.New("plain failure " + jwt), Pod: pod})
	r.Observe(driver.Op{Kind: "refresh", Outcome: "kept-old", Code: "Unavailable", Pod: pod,
		Err: status.Error(codes.Unavailable, "vault said: bad token "+vaultToken)})
	if len(sink.events) != 2 || !strings.HasPrefix(sink.events[0].msg, "plain failure") ||
		!strings.Contains(sink.events[1].msg, "Unavailable: vault said") {
		t.Fatalf("events %+v", sink.events)
	}
	for _, cred := range []string{jwt, vaultToken} {
		if strings.Contains(buf.String(), cred) {
			t.Errorf("audit line carries a credential: %s", buf.String())
		}
		for _, e := range sink.events {
			if strings.Contains(e.msg, cred) {
				t.Errorf("%s event carries a credential the audit line masks: %q", e.reason, e.msg)
			}
		}
	}
}
