package report_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"vaultcsi.dev/driver/driver"
	"vaultcsi.dev/driver/driver/audit"
	"vaultcsi.dev/driver/driver/metrics"
	"vaultcsi.dev/driver/driver/ops"
	"vaultcsi.dev/driver/driver/report"
)

// A reload signal is a metric, an audit line with "action":"signal" and an
// Event: Normal when sent, Warning when not.
func TestObserveReloadSignal(t *testing.T) {
	for _, tt := range []struct {
		name      string
		op        driver.Op
		series    string
		eventType string
		reason    string
		eventHas  []string
		auditErr  string
	}{
		{"sent", driver.Op{Kind: ops.Signal, Outcome: ops.OK, Pod: pod, Role: "payments", Container: "app", Signal: ops.SIGHUP, Latency: time.Millisecond},
			"vault_csi_reload_signals_total{outcome=OK,signal=SIGHUP} 1", "Normal", report.ReasonReloadSignalled, []string{"SIGHUP", `"app"`}, ""},
		{"not running", driver.Op{Kind: ops.Signal, Outcome: ops.NotRunning, Pod: pod, Role: "payments", Container: "app", Signal: ops.SIGTERM,
			Err: errors.New(`container "app" is not running`)},
			"vault_csi_reload_signals_total{outcome=not-running,signal=SIGTERM} 1", "Warning", report.ReasonReloadFailed,
			[]string{"no SIGTERM sent", `"app"`, "not running", "the files were rotated"}, "not-running: container"},
		{"not found", driver.Op{Kind: ops.Signal, Outcome: ops.NotFound, Pod: pod, Role: "payments", Container: "app", Signal: ops.SIGUSR1,
			Err: errors.New(`container "app": no process of the container on this node`)},
			"vault_csi_reload_signals_total{outcome=not-found,signal=SIGUSR1} 1", "Warning", report.ReasonReloadFailed,
			[]string{"no SIGUSR1 sent", "not-found"}, "not-found: container"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, sink, buf := metrics.New(), &fakeSink{}, &bytes.Buffer{}
			r := &report.Reporter{Metrics: m, Audit: audit.New(buf, "node-1"), Events: sink}
			r.Observe(tt.op)
			if got := series(t, m); !slices.Equal(got, []string{tt.series}) {
				t.Errorf("series = %q, want only %q", got, tt.series)
			}
			if len(sink.events) != 1 || sink.events[0].typ != tt.eventType || sink.events[0].reason != tt.reason {
				t.Fatalf("events = %+v, want one %s %s", sink.events, tt.eventType, tt.reason)
			}
			for _, w := range tt.eventHas {
				if !strings.Contains(sink.events[0].msg, w) {
					t.Errorf("event %q does not contain %q", sink.events[0].msg, w)
				}
			}
			var l struct {
				Action    string `json:"action"`
				Container string `json:"container"`
				Signal    string `json:"signal"`
				Pod       string `json:"pod"`
				Error     string `json:"error"`
			}
			if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &l); err != nil {
				t.Fatalf("audit %q: %v", buf, err)
			}
			if l.Action != "signal" || l.Container != "app" || l.Signal != string(tt.op.Signal) || l.Pod != pod.PodName ||
				!strings.HasPrefix(l.Error, tt.auditErr) || (tt.auditErr == "") != (l.Error == "") {
				t.Errorf("audit line %+v", l)
			}
		})
	}
}
