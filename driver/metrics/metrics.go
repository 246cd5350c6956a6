// Package metrics holds the driver's Prometheus metrics on a registry of its
// own (so that a library's global metrics do not leak into the driver's
// exposition) and serves them over HTTP.
//
// Labels are bounded by construction: operation names, outcome and status
// classes, and policy rule names (the admin writes those). Pod names,
// namespaces and Vault paths are never labels: with thousands of pods they
// would multiply series without bound, and paths belong in the audit log.
//
// The recording methods are no-ops on a nil *Metrics, so tests and tools can run the
// driver without metrics.
package metrics

import (
	"net/http"
	"strconv"
	"time"
	"vaultcsi.dev/driver/driver/ops"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "vault_csi"

// Vault request operations for VaultRequest.
const (
	VaultLogin  = "login"
	VaultRead   = "read"
	VaultWrite  = "write"
	VaultRenew  = "renew"
	VaultRevoke = "revoke"
	VaultLookup = "lookup"
)

// initialRefreshReasons are the refresh-failure reasons exported at 0 from
// the start: a Vault that cannot be reached, and one that refuses.
var initialRefreshReasons = []string{"Unavailable", "PermissionDenied"}

// Buckets from 0.1 ms (an unchanged republish) to 10 s (a Vault that is
// slow to answer), about 2.5x apart.
var durationBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
	0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// Metrics is the driver's set of metrics.
type Metrics struct {
	reg            *prometheus.Registry
	operations     *prometheus.HistogramVec
	vaultRequests  *prometheus.CounterVec
	mounted        prometheus.Gauge
	leases         prometheus.Gauge
	policyDenials  *prometheus.CounterVec
	tokens         *prometheus.CounterVec
	refreshFailure *prometheus.CounterVec
	policyReloads  *prometheus.CounterVec
	reloadFailing  prometheus.Gauge
	perOperation   *prometheus.HistogramVec
	revokeRetries  *prometheus.CounterVec
	reloadSignals  *prometheus.CounterVec
}

// New creates the metrics and registers them, with the Go and process
// collectors, on a new registry.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		operations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "operation_duration_seconds",
			Help:      "Duration of CSI node operations by operation (publish, unpublish, refresh) and outcome: a gRPC code name (OK, PermissionDenied, ...), or for re-publishes unchanged, skipped (nothing due) or kept-old (refresh failed, files kept). Its _count is the number of operations.",
			Buckets:   durationBuckets,
		}, []string{"operation", "outcome"}),
		vaultRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "vault_requests_total",
			Help:      "HTTP requests sent to Vault by operation and status class (2xx, 4xx, 5xx, error).",
		}, []string{"operation", "status"}),
		mounted: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "volumes_mounted",
			Help:      "Volumes currently mounted by this node's driver.",
		}),
		leases: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "leases_held",
			Help:      "Vault leases currently held for mounted volumes.",
		}),
		policyDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "policy_denials_total",
			Help:      `Publishes refused by the access policy, by rule name ("" when no rule matched).`,
		}, []string{"rule"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "vault_tokens_total",
			Help:      "Vault tokens used for a fetch, by source: reused (a cached session) or login.",
		}, []string{"source"}),
		refreshFailure: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "refresh_failures_total",
			Help:      "Refreshes that failed and kept the old files, by reason class.",
		}, []string{"reason"}),
		policyReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "policy_reloads_total",
			Help:      "Access policy reloads by result (success, failure).",
		}, []string{"result"}),
		reloadFailing: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "policy_reload_failing",
			Help:      "1 while the access-policy file on the node is not the policy in force (its last reload failed: bad content or unreadable), else 0.",
		}),
		perOperation: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "vault_requests_per_operation",
			Help:      "Vault requests one CSI operation made, by operation (publish, refresh, unpublish): the Vault load each pod causes.",
			Buckets:   []float64{0, 1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128, 256},
		}, []string{"operation"}),
		revokeRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "revocation_retries_total",
			Help:      "Background retries of Vault token revocations that failed at first (Vault unreachable), by outcome: ok (revoked), failed (retried later with backoff), expired (dropped: the token's TTL passed, so Vault revoked it).",
		}, []string{"outcome"}),
		reloadSignals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "reload_signals_total",
			Help:      "Reload signals after a refresh that changed files, by signal and outcome: ok (sent), not-running (the container is not running), not-found (no such container or process), failed.",
		}, []string{"signal", "outcome"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.operations, m.vaultRequests, m.mounted, m.leases,
		m.policyDenials, m.tokens, m.refreshFailure, m.policyReloads, m.reloadFailing, m.perOperation, m.revokeRetries,
		m.reloadSignals,
	)
	// Series a dashboard divides by or alerts on exist from the start at 0,
	// so that rate() and absent() behave before the first event.
	for _, s := range []string{"reused", "login"} {
		m.tokens.WithLabelValues(s)
	}
	for _, r := range []string{"success", "failure"} {
		m.policyReloads.WithLabelValues(r)
	}
	// The alerts and the dashboard (charts/vault-csi-driver) query these:
	// "no rule matched", and the refresh failures that page.
	m.policyDenials.WithLabelValues("")
	for _, r := range initialRefreshReasons {
		m.refreshFailure.WithLabelValues(r)
	}
	return m
}

// Registry is the registry behind Handler, for collectors owned elsewhere
// (gRPC interceptors, for example).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:            m.reg, // counts scrape errors on the same registry
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// ObservePublish records one CSI operation (ops.Publish, ops.Unpublish,
// ops.Refresh: see ops.Kind.MetricOperation) with its outcome, a gRPC code name such as "OK" or
// "PermissionDenied", or another bounded word such as "unchanged".
func (m *Metrics) ObservePublish(op ops.Kind, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.operations.WithLabelValues(string(op), outcome).Observe(d.Seconds())
}

// VaultRequest counts one HTTP request to Vault. status is a class, see
// StatusClass; never pass a path or a raw error text.
func (m *Metrics) VaultRequest(op, status string) {
	if m == nil {
		return
	}
	m.vaultRequests.WithLabelValues(op, status).Inc()
}

// StatusClass maps an HTTP status code to the status label of VaultRequest:
// "2xx", "4xx", "5xx" and so on, or "error" when no response came back
// (pass 0: connection refused, timeout, TLS failure).
func StatusClass(code int) string {
	if code < 100 || code > 599 {
		return "error"
	}
	return strconv.Itoa(code/100) + "xx"
}

// SetMounted sets the number of mounted volumes.
func (m *Metrics) SetMounted(n int) {
	if m == nil {
		return
	}
	m.mounted.Set(float64(n))
}

// ObserveRequests records how many Vault requests one operation made.
func (m *Metrics) ObserveRequests(op ops.Kind, n int) {
	if m == nil {
		return
	}
	m.perOperation.WithLabelValues(string(op)).Observe(float64(n))
}

// AddMounted moves the mounted-volume gauge by delta.
func (m *Metrics) AddMounted(delta int) {
	if m == nil {
		return
	}
	m.mounted.Add(float64(delta))
}

// AddLeases adds delta (negative on revoke) to the leases held.
func (m *Metrics) AddLeases(delta int) {
	if m == nil {
		return
	}
	m.leases.Add(float64(delta))
}

// PolicyDenied counts a publish the access policy refused; rule is the
// deciding rule's name, "" when no rule matched.
func (m *Metrics) PolicyDenied(rule string) {
	if m == nil {
		return
	}
	m.policyDenials.WithLabelValues(rule).Inc()
}

// TokenReused counts a fetch that reused a cached Vault session.
func (m *Metrics) TokenReused() {
	if m == nil {
		return
	}
	m.tokens.WithLabelValues("reused").Inc()
}

// LoggedIn counts a fetch that had to log in to Vault.
func (m *Metrics) LoggedIn() {
	if m == nil {
		return
	}
	m.tokens.WithLabelValues("login").Inc()
}

// RefreshFailed counts a failed refresh by reason: the gRPC code name of
// the failure (Unavailable, PermissionDenied, ...), a bounded set.
func (m *Metrics) RefreshFailed(reason string) {
	if m == nil {
		return
	}
	m.refreshFailure.WithLabelValues(reason).Inc()
}

// PolicyReload counts a policy reload attempt; fits Watcher's onReload as
// func(err error) { m.PolicyReload(err == nil) }.
func (m *Metrics) PolicyReload(ok bool) {
	if m == nil {
		return
	}
	result, failing := "failure", 1.0
	if ok {
		result, failing = "success", 0
	}
	m.policyReloads.WithLabelValues(result).Inc()
	m.reloadFailing.Set(failing)
}

// RevocationRetry counts one background revocation attempt by outcome:
// ok, failed or expired.
func (m *Metrics) RevocationRetry(outcome ops.Outcome) {
	if m == nil {
		return
	}
	m.revokeRetries.WithLabelValues(string(outcome)).Inc()
}

// ReloadSignal counts one reload signal by signal name (SIGHUP, ...) and
// outcome (ok, not-running, not-found, failed): bounded sets.
func (m *Metrics) ReloadSignal(signal ops.ReloadSignal, outcome ops.Outcome) {
	if m == nil {
		return
	}
	m.reloadSignals.WithLabelValues(string(signal), string(outcome)).Inc()
}
