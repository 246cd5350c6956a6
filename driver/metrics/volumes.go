package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Kinds of credential for the expiry gauge.
const (
	ExpiryLease = "lease"
	ExpiryToken = "token"
)

// VolumeHealth is what the node's volume records say about refreshes that
// are failing. It is computed at scrape time from the records themselves, so
// it is right after a driver restart and cannot drift from them.
type VolumeHealth struct {
	// RefreshFailing counts volumes whose last refresh failed: their pods
	// read the files of an earlier fetch.
	RefreshFailing int
	// LeaseExpiry is the earliest expiry of a leased secret, and TokenExpiry
	// of a Vault token that holds leases, among the failing volumes (zero:
	// none). Leases die with their token.
	LeaseExpiry, TokenExpiry time.Time
}

var (
	refreshFailingDesc = prometheus.NewDesc(namespace+"_volumes_refresh_failing",
		"Volumes whose last refresh failed: their pods read the files of an earlier fetch until a refresh succeeds.",
		nil, nil)
	failingExpiryDesc = prometheus.NewDesc(namespace+"_refresh_failing_expiry_timestamp_seconds",
		"Earliest expiry (Unix time) of a lease (kind=lease), or of the Vault token holding leases (kind=token), among volumes whose refresh is failing; 0 when there is none.",
		[]string{"kind"}, nil)
)

// volumeCollector asks for a VolumeHealth on every scrape.
type volumeCollector struct {
	health func() (VolumeHealth, error)
}

func (c volumeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- refreshFailingDesc
	ch <- failingExpiryDesc
}

func (c volumeCollector) Collect(ch chan<- prometheus.Metric) {
	h, err := c.health()
	if err != nil {
		// A scrape error, not a made-up 0: an alert must not resolve because
		// the records could not be read.
		ch <- prometheus.NewInvalidMetric(refreshFailingDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(refreshFailingDesc, prometheus.GaugeValue, float64(h.RefreshFailing))
	ch <- prometheus.MustNewConstMetric(failingExpiryDesc, prometheus.GaugeValue, unixOrZero(h.LeaseExpiry), ExpiryLease)
	ch <- prometheus.MustNewConstMetric(failingExpiryDesc, prometheus.GaugeValue, unixOrZero(h.TokenExpiry), ExpiryToken)
}

func unixOrZero(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// WatchVolumes exports the refresh-health gauges, computed by health on
// every scrape. Call it once.
func (m *Metrics) WatchVolumes(health func() (VolumeHealth, error)) error {
	if m == nil {
		return nil
	}
	return m.reg.Register(volumeCollector{health: health})
}
