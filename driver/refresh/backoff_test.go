package refresh

import (
	"testing"
	"time"

	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider"
)

func TestDueReason(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	const hash = "h1"
	// rec is a healthy volume fetched at t0 with a 2m period and 10s jitter;
	// edit tweaks it per case.
	rec := func(edit func(*state.Volume)) *state.Volume {
		v := &state.Volume{RequestHash: hash, FetchedAt: t0, RotationPeriod: 2 * time.Minute, Jitter: 10 * time.Second}
		if edit != nil {
			edit(v)
		}
		return v
	}
	// leased gives the volume a 30m lease read at start and a long period,
	// so that only the lease and token rules can fire.
	leased := func(start time.Time, edit func(*state.Volume)) *state.Volume {
		return rec(func(v *state.Volume) {
			v.RotationPeriod = 24 * time.Hour
			v.Secrets = []provider.SecretInfo{
				{Path: "secret/data/static"},
				{Path: "database/creds/app", LeaseID: "l1", LeaseDuration: 30 * time.Minute, FetchedAt: start},
			}
			if edit != nil {
				edit(v)
			}
		})
	}
	session := func(issued, expires time.Time) *provider.Session {
		return &provider.Session{IssuedAt: issued, ExpiresAt: expires}
	}

	tests := []struct {
		name string
		rec  *state.Volume
		hash string
		now  time.Time
		want Reason
	}{
		{"no record", nil, hash, t0, "no-state"},
		{"request changed", rec(nil), "h2", t0.Add(time.Second), "request-changed"},
		// A changed request beats a pending backoff: the old files are wrong.
		{"request changed during backoff", rec(func(v *state.Volume) { v.Failures, v.NextAttempt = 3, t0.Add(time.Hour) }),
			"h2", t0.Add(time.Second), "request-changed"},
		{"nothing due", rec(nil), hash, t0.Add(time.Minute), ""},

		// Failures: wait out the backoff even when the period has passed.
		{"within backoff", rec(func(v *state.Volume) { v.Failures, v.NextAttempt = 1, t0.Add(time.Hour) }),
			hash, t0.Add(59 * time.Minute), ""},
		{"retry at backoff end", rec(func(v *state.Volume) { v.Failures, v.NextAttempt = 1, t0.Add(time.Hour) }),
			hash, t0.Add(time.Hour), "retry"},
		{"retry after backoff, period not passed", rec(func(v *state.Volume) { v.Failures, v.NextAttempt = 2, t0.Add(5*time.Second) }),
			hash, t0.Add(6 * time.Second), "retry"},

		// Period plus this volume's jitter.
		{"period passed, jitter not", rec(nil), hash, t0.Add(2*time.Minute + 9*time.Second), ""},
		{"period and jitter passed", rec(nil), hash, t0.Add(2*time.Minute + 10*time.Second), "period"},
		{"period, no jitter", rec(func(v *state.Volume) { v.Jitter = 0 }), hash, t0.Add(2 * time.Minute), "period"},
		{"period passed for a static secret", rec(func(v *state.Volume) { v.Secrets = []provider.SecretInfo{{Path: "secret/data/a"}} }),
			hash, t0.Add(2*time.Minute + 10*time.Second), "period"},
		{"period not passed for a static secret", rec(func(v *state.Volume) { v.Secrets = []provider.SecretInfo{{Path: "secret/data/a"}} }),
			hash, t0.Add(2 * time.Minute), ""},

		// Leases: due at two thirds of their duration, from their own read.
		{"lease not yet due", leased(t0, nil), hash, t0.Add(20*time.Minute - time.Second), ""},
		{"lease two-thirds through", leased(t0, nil), hash, t0.Add(20 * time.Minute), "lease"},
		{"lease renewed later is measured from its read", leased(t0.Add(10*time.Minute), nil),
			hash, t0.Add(25 * time.Minute), ""},
		{"lease without its own time uses the volume's", leased(time.Time{}, nil), hash, t0.Add(20 * time.Minute), "lease"},

		// Token: only matters when a lease hangs on it.
		{"token two-thirds through with a lease", leased(t0, func(v *state.Volume) {
			v.Secrets[1].LeaseDuration = 24 * time.Hour
			v.Session = session(t0, t0.Add(30*time.Minute))
		}), hash, t0.Add(20 * time.Minute), "token"},
		{"token not yet two-thirds", leased(t0, func(v *state.Volume) {
			v.Secrets[1].LeaseDuration = 24 * time.Hour
			v.Session = session(t0, t0.Add(30*time.Minute))
		}), hash, t0.Add(20*time.Minute - time.Second), ""},
		{"token two-thirds through without leases", rec(func(v *state.Volume) {
			v.RotationPeriod = 24 * time.Hour
			v.Secrets = []provider.SecretInfo{{Path: "secret/data/static"}}
			v.Session = session(t0, t0.Add(30*time.Minute))
		}), hash, t0.Add(25 * time.Minute), ""},
		{"token that never expires", leased(t0, func(v *state.Volume) {
			v.Secrets[1].LeaseDuration = 24 * time.Hour
			v.Session = session(t0, time.Time{})
		}), hash, t0.Add(15 * time.Hour), ""},
		{"no session", leased(t0, func(v *state.Volume) { v.Secrets[1].LeaseDuration = 24 * time.Hour }),
			hash, t0.Add(15 * time.Hour), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := dueReason(tt.rec, tt.hash, tt.now); got != tt.want {
				t.Errorf("dueReason = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	// r = 0.5 is the midpoint: no jitter.
	tests := []struct {
		n    int
		want time.Duration
	}{
		{0, 5 * time.Second},
		{1, 5 * time.Second},
		{2, 10 * time.Second},
		{3, 20 * time.Second},
		{4, 40 * time.Second},
		{5, 80 * time.Second},
		{6, 160 * time.Second},
		{7, 5 * time.Minute}, // 320s capped
		{8, 5 * time.Minute},
		{1000, 5 * time.Minute}, // no overflow
	}
	for _, tt := range tests {
		if got := Backoff(tt.n, 0.5); got != tt.want {
			t.Errorf("Backoff(%d, 0.5) = %v, want %v", tt.n, got, tt.want)
		}
	}
}

func TestBackoffJitter(t *testing.T) {
	rs := []float64{0, 0.01, 0.25, 0.5, 0.75, 0.99, 0.999999999}
	for n := 1; n <= 12; n++ {
		mid := Backoff(n, 0.5)
		lo, hi := mid*8/10, mid*12/10
		for _, r := range rs {
			if got := Backoff(n, r); got < lo || got >= hi {
				t.Errorf("Backoff(%d, %g) = %v, want in [%v, %v)", n, r, got, lo, hi)
			}
		}
		// The ends of the range are reached: the jitter is really ±20%.
		if got := Backoff(n, 0); got != lo {
			t.Errorf("Backoff(%d, 0) = %v, want %v", n, got, lo)
		}
		// Larger r never waits less.
		for i := 1; i < len(rs); i++ {
			if Backoff(n, rs[i]) < Backoff(n, rs[i-1]) {
				t.Errorf("Backoff(%d, r) decreases between r=%g and r=%g", n, rs[i-1], rs[i])
			}
		}
	}
}

// dueReason is the planner's verdict alone: why a mounted volume needs
// Vault now, or "" when not.
func dueReason(rec *state.Volume, hash string, now time.Time) Reason {
	return For(rec, hash, now).Reason
}
