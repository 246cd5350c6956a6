package driver

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
		reason     string
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planRefresh(tt.rec, "h", now)
			var fetch []string
			for path := range p.fetch {
				fetch = append(fetch, path)
			}
			sort.Strings(fetch)
			if p.reason != tt.reason || p.full != tt.full || p.renewToken != tt.renewToken ||
				!reflect.DeepEqual(fetch, tt.fetch) || !reflect.DeepEqual(p.renew, tt.renew) {
				t.Errorf("plan = {reason %q full %v fetch %v renew %v renewToken %v}, want {%q %v %v %v %v}",
					p.reason, p.full, fetch, p.renew, p.renewToken, tt.reason, tt.full, tt.fetch, tt.renew, tt.renewToken)
			}
		})
	}
}
