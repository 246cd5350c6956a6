package refresh

import (
	"reflect"
	"sort"
	"testing"
	"time"

	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider"
)

// planRefresh decides what a due re-publish does per path: static secrets
// are re-read after the period, leases renewed (or re-fetched when they
// cannot be), the token renewed or replaced.
func TestPlanRefresh(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	kv := func(path string, age time.Duration) provider.SecretInfo {
		return provider.SecretInfo{Path: path, Version: 3, FetchedAt: now.Add(-age)}
	}
	lease := func(path string, ttl, age time.Duration, renewable bool) provider.SecretInfo {
		id := ""
		if renewable {
			id = path + "/lease"
		}
		return provider.SecretInfo{Path: path, LeaseID: id, LeaseDuration: ttl, IssuedTTL: ttl, Renewable: renewable, FetchedAt: now.Add(-age)}
	}
	session := func(life, age time.Duration, renewable bool) *provider.Session {
		return &provider.Session{Token: "t", Renewable: renewable, IssuedAt: now.Add(-age), ExpiresAt: now.Add(life - age)}
	}
	rec := func(secrets []provider.SecretInfo, s *provider.Session) *state.Volume {
		return &state.Volume{RequestHash: "h", FetchedAt: now.Add(-time.Minute), RotationPeriod: 2 * time.Minute, Secrets: secrets, Session: s}
	}
	tests := []struct {
		name       string
		rec        *state.Volume
		reason     Reason
		full       bool
		fetch      []string
		renew      []int
		renewToken bool
	}{
		{"nothing due", rec([]provider.SecretInfo{kv("secret/data/a", time.Minute), lease("database/creds/r", time.Hour, 10*time.Minute, true)}, session(2*time.Hour, time.Minute, true)),
			"", false, nil, nil, false},
		{"KV period passed: only the KV path, not the lease", rec([]provider.SecretInfo{kv("secret/data/a", 3*time.Minute), lease("database/creds/r", time.Hour, 3*time.Minute, true)}, session(2*time.Hour, time.Minute, true)),
			"period", false, []string{"secret/data/a"}, nil, false},
		{"renewable lease two thirds through: renew, do not re-read", rec([]provider.SecretInfo{kv("secret/data/a", time.Minute), lease("database/creds/r", time.Hour, 41*time.Minute, true)}, session(4*time.Hour, time.Minute, true)),
			"lease", false, nil, []int{1}, false},
		{"certificate (no lease id) two thirds through: issue anew", rec([]provider.SecretInfo{lease("pki/issue/web", time.Hour, 41*time.Minute, false)}, session(4*time.Hour, time.Minute, true)),
			"lease", false, []string{"pki/issue/web"}, nil, false},
		{"renewable token two thirds through with leases: renew it", rec([]provider.SecretInfo{lease("database/creds/r", 24*time.Hour, time.Minute, true)}, session(time.Hour, 41*time.Minute, true)),
			"token", false, nil, nil, true},
		{"non-renewable token two thirds through with leases: everything anew", rec([]provider.SecretInfo{lease("database/creds/r", 24*time.Hour, time.Minute, true)}, session(time.Hour, 41*time.Minute, false)),
			"token", true, nil, nil, false},
		{"old token without leases does not matter", rec([]provider.SecretInfo{kv("secret/data/a", time.Minute)}, session(time.Hour, 59*time.Minute, false)),
			"", false, nil, nil, false},
		{"request changed", func() *state.Volume { r := rec(nil, nil); r.RequestHash = "old"; return r }(),
			"request-changed", true, nil, nil, false},
		// Durations near time.Duration's limit must mean "far future": a
		// wrapped sum used to make every re-publish read Vault.
		{"huge period plus jitter is not due", func() *state.Volume {
			r := rec([]provider.SecretInfo{kv("secret/data/a", time.Hour)}, nil)
			r.RotationPeriod, r.Jitter = maxDuration, maxDuration/10
			return r
		}(), "", false, nil, nil, false},
		{"huge period, no secrets recorded, is not due", func() *state.Volume {
			r := rec(nil, nil)
			r.RotationPeriod, r.Jitter = maxDuration, maxDuration/10
			return r
		}(), "", false, nil, nil, false},
		{"certificate valid until 9999 (TTL saturated) is not due", rec([]provider.SecretInfo{lease("pki/issue/web", maxDuration, time.Hour, false)}, nil),
			"", false, nil, nil, false},
		{"token with a saturated life is not due", rec([]provider.SecretInfo{lease("database/creds/r", 24*time.Hour, time.Minute, true)},
			&provider.Session{Token: "t", Renewable: true, IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Hour).Add(maxDuration)}),
			"", false, nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := For(tt.rec, "h", now)
			var fetch []string
			for path := range p.Fetch {
				fetch = append(fetch, path)
			}
			sort.Strings(fetch)
			if p.Reason != tt.reason || p.Full != tt.full || p.RenewToken != tt.renewToken ||
				!reflect.DeepEqual(fetch, tt.fetch) || !reflect.DeepEqual(p.Renew, tt.renew) {
				t.Errorf("plan = {reason %q full %v fetch %v renew %v renewToken %v}, want {%q %v %v %v %v}",
					p.Reason, p.Full, fetch, p.Renew, p.RenewToken, tt.reason, tt.full, tt.fetch, tt.renew, tt.renewToken)
			}
		})
	}
}

const maxDuration = time.Duration(1<<63 - 1)

// addSat and provider.RenewDue never wrap: a positive duration never moves a time
// into the past, however large.
func TestSaturatingDueTime(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	mono := time.Now() // carries a monotonic reading, which Add also moves
	tests := []struct {
		name string
		t    time.Time
		ds   []time.Duration
		want time.Time // zero: only "not before t" is checked
	}{
		{"nothing", t0, nil, t0},
		{"plain sum", t0, []time.Duration{time.Hour, 6 * time.Minute}, t0.Add(66 * time.Minute)},
		{"max plus max", t0, []time.Duration{maxDuration, maxDuration}, time.Time{}},
		{"max plus a tenth", t0, []time.Duration{maxDuration, maxDuration / 10}, time.Time{}},
		{"the pod attribute of the issue", t0, []time.Duration{2562047 * time.Hour, 256204 * time.Hour}, time.Time{}},
		{"monotonic clock, max plus max", mono, []time.Duration{maxDuration, maxDuration}, time.Time{}},
		{"negative stays exact", t0, []time.Duration{-time.Hour}, t0.Add(-time.Hour)},
	}
	for _, tt := range tests {
		got := addSat(tt.t, tt.ds...)
		if !tt.want.IsZero() && !got.Equal(tt.want) {
			t.Errorf("%s: addSat = %v, want %v", tt.name, got, tt.want)
		}
		positive := len(tt.ds) > 0 && tt.ds[0] > 0
		if positive && !got.After(tt.t) {
			t.Errorf("%s: addSat(%v, %v) = %v, not after the start", tt.name, tt.t, tt.ds, got)
		}
		if positive && !got.After(tt.t.Add(100*365*24*time.Hour)) && tt.want.IsZero() {
			t.Errorf("%s: addSat = %v, want far future", tt.name, got)
		}
	}
	for _, d := range []time.Duration{0, 3, time.Hour, 90 * time.Minute, maxDuration, maxDuration - 1, maxDuration / 2} {
		got := renewIn(d)
		if got < 0 || got > d {
			t.Errorf("RenewDue(%d) = %d, outside [0, d]", d, got)
		}
		if d < 1<<40 && got != d*2/3 && got != d*2/3+1 {
			t.Errorf("RenewDue(%v) = %v, want %v", d, got, d*2/3)
		}
	}
	if got := renewIn(time.Hour); got != 40*time.Minute {
		// The one renewal rule: two thirds of the life.
		t.Errorf("RenewDue(1h) = %v, want 40m", got)
	}
}

// renewIn is how long after its start something living d is due for
// renewal, by the provider's one rule.
func renewIn(d time.Duration) time.Duration {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	return provider.RenewDue(t0, d).Sub(t0)
}
