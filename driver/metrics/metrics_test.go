package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"vaultcsi.dev/driver/driver/ops"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// startServer runs serve on a loopback port until the test ends and returns
// its base URL.
func startServer(t *testing.T, m *Metrics, extra map[string]http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, ln, m, extra) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serve did not return after cancel")
		}
	})
	return "http://" + ln.Addr().String()
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return fams
}

// value finds the sample of family name whose labels include want; for a
// histogram it returns the sample count.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, lp := range m.Label {
			got[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("%s%v: no sample", name, want)
	return 0
}

func TestScrape(t *testing.T) {
	m := New()
	health := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	url := startServer(t, m, map[string]http.Handler{"/healthz": health})

	m.ObservePublish(ops.Publish, "OK", 12*time.Millisecond)
	m.ObservePublish(ops.Publish, "OK", 3*time.Millisecond)
	m.ObservePublish(ops.Publish, "PermissionDenied", 200*time.Microsecond)
	m.ObservePublish(ops.Refresh, "OK", 5*time.Second)
	m.VaultRequest(VaultLogin, StatusClass(200))
	m.VaultRequest(VaultRead, StatusClass(204))
	m.VaultRequest(VaultRead, StatusClass(403))
	m.VaultRequest(VaultRenew, StatusClass(0))
	m.SetMounted(5)
	m.SetMounted(3)
	m.AddLeases(4)
	m.AddLeases(-1)
	m.PolicyDenied("paypal-nobody-else")
	m.PolicyDenied("")
	m.TokenReused()
	m.TokenReused()
	m.LoggedIn()
	m.RefreshFailed("unavailable")
	m.PolicyReload(true)
	m.PolicyReload(false)
	m.PolicyReload(true)
	m.RevocationRetry(ops.Failed)
	m.RevocationRetry(ops.Failed)
	m.RevocationRetry(ops.OK)

	fams := scrape(t, url)
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"vault_csi_operation_duration_seconds", map[string]string{"operation": "publish", "outcome": "OK"}, 2},
		{"vault_csi_operation_duration_seconds", map[string]string{"operation": "publish", "outcome": "PermissionDenied"}, 1},
		{"vault_csi_operation_duration_seconds", map[string]string{"operation": "refresh", "outcome": "OK"}, 1},
		{"vault_csi_vault_requests_total", map[string]string{"operation": "login", "status": "2xx"}, 1},
		{"vault_csi_vault_requests_total", map[string]string{"operation": "read", "status": "2xx"}, 1},
		{"vault_csi_vault_requests_total", map[string]string{"operation": "read", "status": "4xx"}, 1},
		{"vault_csi_vault_requests_total", map[string]string{"operation": "renew", "status": "error"}, 1},
		{"vault_csi_volumes_mounted", nil, 3},
		{"vault_csi_leases_held", nil, 3},
		{"vault_csi_policy_denials_total", map[string]string{"rule": "paypal-nobody-else"}, 1},
		{"vault_csi_policy_denials_total", map[string]string{"rule": ""}, 1},
		{"vault_csi_vault_tokens_total", map[string]string{"source": "reused"}, 2},
		{"vault_csi_vault_tokens_total", map[string]string{"source": "login"}, 1},
		{"vault_csi_refresh_failures_total", map[string]string{"reason": "unavailable"}, 1},
		{"vault_csi_policy_reloads_total", map[string]string{"result": "success"}, 2},
		{"vault_csi_policy_reloads_total", map[string]string{"result": "failure"}, 1},
		{"vault_csi_revocation_retries_total", map[string]string{"outcome": "failed"}, 2},
		{"vault_csi_revocation_retries_total", map[string]string{"outcome": "ok"}, 1},
	}
	for _, tt := range tests {
		if got := value(t, fams, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}

	if n := len(fams["vault_csi_policy_denials_total"].Metric); n != 2 {
		t.Errorf("policy denials: %d series, want 2", n)
	}
	// The histogram's finite buckets span 0.1 ms .. 10 s (the parser adds +Inf).
	b := fams["vault_csi_operation_duration_seconds"].Metric[0].Histogram.Bucket
	if b[0].GetUpperBound() != 0.0001 || b[len(b)-2].GetUpperBound() != 10 {
		t.Errorf("buckets %v .. %v", b[0].GetUpperBound(), b[len(b)-2].GetUpperBound())
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("collector metric %s missing", name)
		}
	}
	for name := range fams {
		if !strings.HasPrefix(name, "vault_csi_") && !strings.HasPrefix(name, "go_") &&
			!strings.HasPrefix(name, "process_") && !strings.HasPrefix(name, "promhttp_") {
			t.Errorf("unexpected metric %s", name)
		}
	}

	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		t.Errorf("/healthz = %q", body)
	}
}

// Series that alerts divide by are present before the first event.
func TestInitialSeries(t *testing.T) {
	fams := scrape(t, startServer(t, New(), nil))
	for _, l := range []map[string]string{{"source": "reused"}, {"source": "login"}} {
		if got := value(t, fams, "vault_csi_vault_tokens_total", l); got != 0 {
			t.Errorf("tokens%v = %v", l, got)
		}
	}
	if got := value(t, fams, "vault_csi_policy_reloads_total", map[string]string{"result": "failure"}); got != 0 {
		t.Errorf("reload failures = %v", got)
	}
}

// No label of any vault_csi_ metric may be one that carries a pod, a
// namespace or a path.
func TestNoHighCardinalityLabels(t *testing.T) {
	m := New()
	m.ObservePublish(ops.Publish, "OK", time.Millisecond)
	m.VaultRequest(VaultRead, "2xx")
	m.PolicyDenied("r")
	m.RefreshFailed("other")
	m.RevocationRetry(ops.OK)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), "vault_csi_") {
			continue
		}
		for _, s := range f.Metric {
			for _, lp := range s.Label {
				switch lp.GetName() {
				case "pod", "namespace", "path", "pod_name", "pod_uid", "lease_id":
					t.Errorf("%s has label %s", f.GetName(), lp.GetName())
				}
			}
		}
	}
}

func TestStatusClass(t *testing.T) {
	tests := []struct {
		code int
		want string
	}{{200, "2xx"}, {204, "2xx"}, {307, "3xx"}, {403, "4xx"}, {429, "4xx"}, {503, "5xx"}, {0, "error"}, {-1, "error"}, {999, "error"}}
	for _, tt := range tests {
		if got := StatusClass(tt.code); got != tt.want {
			t.Errorf("StatusClass(%d) = %q, want %q", tt.code, got, tt.want)
		}
	}
}

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.ObservePublish(ops.Publish, "OK", time.Millisecond)
	m.VaultRequest(VaultRead, "2xx")
	m.SetMounted(1)
	m.AddLeases(1)
	m.PolicyDenied("r")
	m.TokenReused()
	m.LoggedIn()
	m.RefreshFailed("x")
	m.PolicyReload(true)
	if err := Serve(context.Background(), "127.0.0.1:0", nil, nil); err == nil {
		t.Error("Serve(nil metrics): no error")
	}
}

func TestServeErrors(t *testing.T) {
	// A port already in use is reported, not swallowed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := Serve(context.Background(), ln.Addr().String(), New(), nil); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Serve on a busy port = %v", err)
	}
	shadow := map[string]http.Handler{"/metrics": http.NotFoundHandler()}
	if err := Serve(context.Background(), "127.0.0.1:0", New(), shadow); err == nil {
		t.Error("Serve with a shadowing /metrics handler: no error")
	}
}

// Serve itself (not just serve) stops when its context ends.
func TestServeStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, "127.0.0.1:0", New(), nil) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop")
	}
}

// The refresh-health gauges come from the function given to WatchVolumes at
// every scrape; an error there is a scrape error, never a made-up 0.
func TestWatchVolumes(t *testing.T) {
	lease := time.Unix(1_900_000_000, 0)
	var (
		h   VolumeHealth
		err error
	)
	m := New()
	if e := m.WatchVolumes(func() (VolumeHealth, error) { return h, err }); e != nil {
		t.Fatal(e)
	}
	url := startServer(t, m, nil)
	tests := []struct {
		name               string
		h                  VolumeHealth
		failing, lease, tk float64
	}{
		{"healthy", VolumeHealth{}, 0, 0, 0},
		{"failing with a lease", VolumeHealth{RefreshFailing: 2, LeaseExpiry: lease}, 2, 1_900_000_000, 0},
	}
	for _, tt := range tests {
		h = tt.h
		fams := scrape(t, url)
		if got := value(t, fams, "vault_csi_volumes_refresh_failing", nil); got != tt.failing {
			t.Errorf("%s: failing = %v, want %v", tt.name, got, tt.failing)
		}
		if got := value(t, fams, "vault_csi_refresh_failing_expiry_timestamp_seconds", map[string]string{"kind": ExpiryLease}); got != tt.lease {
			t.Errorf("%s: lease expiry = %v, want %v", tt.name, got, tt.lease)
		}
		if got := value(t, fams, "vault_csi_refresh_failing_expiry_timestamp_seconds", map[string]string{"kind": ExpiryToken}); got != tt.tk {
			t.Errorf("%s: token expiry = %v, want %v", tt.name, got, tt.tk)
		}
	}
	err = errors.New("state dir unreadable")
	resp, gerr := http.Get(url + "/metrics")
	if gerr != nil {
		t.Fatal(gerr)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "vault_csi_volumes_refresh_failing ") {
		t.Errorf("an unreadable state still exported a value:\n%s", body)
	}
}

// PolicyReload raises the failing gauge on a failure and lowers it on the
// next success; the series that alerts and dashboards query exist at 0.
func TestPolicyReloadFailingAndInitialSeries(t *testing.T) {
	m := New()
	url := startServer(t, m, nil)
	fams := scrape(t, url)
	for name, labels := range map[string]map[string]string{
		"vault_csi_policy_reload_failing":  nil,
		"vault_csi_policy_denials_total":   {"rule": ""},
		"vault_csi_refresh_failures_total": {"reason": "Unavailable"},
	} {
		if got := value(t, fams, name, labels); got != 0 {
			t.Errorf("%s%v = %v at start", name, labels, got)
		}
	}
	for _, step := range []struct {
		ok   bool
		want float64
	}{{false, 1}, {false, 1}, {true, 0}} {
		m.PolicyReload(step.ok)
		if got := value(t, scrape(t, url), "vault_csi_policy_reload_failing", nil); got != step.want {
			t.Errorf("after reload ok=%v: failing = %v, want %v", step.ok, got, step.want)
		}
	}
}
