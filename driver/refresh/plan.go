// Package refresh plans and carries out the work on a volume's secrets:
// the first publish and kubelet's periodic re-publish. The planner (For) is
// pure; the Executor follows the plan it is given through a Fetcher (Vault)
// and a Target (the volume on disk and its record), so every branch runs in
// tests with a fake of each and a fake clock.
package refresh

import (
	"time"

	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider"
)

// Reason is why a re-publish goes to Vault; ReasonNone: nothing is due.
type Reason string

// Reasons, as reported in Op.Reason.
const (
	ReasonNone           Reason = ""
	ReasonNoState        Reason = "no-state"
	ReasonRequestChanged Reason = "request-changed"
	ReasonRetry          Reason = "retry"
	ReasonPeriod         Reason = "period"
	ReasonLease          Reason = "lease"
	ReasonToken          Reason = "token"
)

// Backoff bounds for failed refreshes.
const (
	BackoffBase = 5 * time.Second
	BackoffMax  = 5 * time.Minute
)

// Plan is what a publish or re-publish must do. Static secrets (KV) are
// read again when the rotation period has passed; leased secrets (dynamic
// credentials, certificates) are renewed when two thirds through their TTL
// and fetched anew only when they cannot be renewed: re-reading a dynamic
// path mints a new credential, which is what peers get wrong.
type Plan struct {
	Reason Reason
	// Full fetches every path; otherwise only Fetch, and any file missing.
	Full  bool
	Fetch map[string]bool
	// Renew indexes the record's Secrets: leases to renew, each fetched
	// anew when Vault will not renew it (capped, denied, gone).
	Renew []int
	// RenewToken renews the session's token first; when Vault will not,
	// the executor follows Anew instead.
	RenewToken bool
	// First is a first publish: a new mount, no earlier payload to prune.
	First bool
}

// Due reports whether the plan has anything to do.
func (p Plan) Due() bool { return p.Reason != ReasonNone || p.First }

// Publish is the plan of a first publish: every path, on a new mount.
func Publish() Plan { return Plan{Full: true, First: true} }

// Anew replaces p once its partial work cannot stand: a new token (a
// re-login) makes every lease of the old one die with it, and unreadable
// files cannot be kept. Every path is fetched, for the same reason.
func Anew(p Plan) Plan { return Plan{Reason: p.Reason, Full: true, First: p.First} }

// For decides a re-publish of the volume recorded as rec (nil: no record)
// whose request now hashes to hash.
func For(rec *state.Volume, hash string, now time.Time) Plan {
	switch {
	case rec == nil:
		return Plan{Reason: ReasonNoState, Full: true}
	case rec.RequestHash != hash:
		return Plan{Reason: ReasonRequestChanged, Full: true}
	case rec.Failures > 0 && now.Before(rec.NextAttempt):
		return Plan{}
	}
	p := due(rec, now)
	if rec.Failures > 0 {
		// A retry does what is due, no more: fetching every path would mint
		// new credentials for leases that are still valid (a leader blip in
		// an HA Vault re-issued every database user) and leave the old ones
		// alive until unpublish. With nothing left due, the retry records
		// success and the volume stops counting as failing.
		p.Reason = ReasonRetry
	}
	return p
}

// due is what is due on a volume whose last refresh did not fail (or
// whose backoff has passed): each path on its own clock.
func due(rec *state.Volume, now time.Time) Plan {
	periodDue := !now.Before(addSat(rec.FetchedAt, rec.RotationPeriod, rec.Jitter))
	if len(rec.Secrets) == 0 {
		if periodDue {
			return Plan{Reason: ReasonPeriod, Full: true}
		}
		return Plan{}
	}
	p := Plan{Fetch: map[string]bool{}}
	leased := false
	for i, s := range rec.Secrets {
		start := s.FetchedAt
		if start.IsZero() {
			start = rec.FetchedAt
		}
		if s.LeaseDuration <= 0 {
			if !now.Before(addSat(start, rec.RotationPeriod, rec.Jitter)) {
				p.Fetch[s.Path] = true
				p.Reason = first(p.Reason, ReasonPeriod)
			}
			continue
		}
		leased = true
		if now.Before(provider.RenewDue(start, s.LeaseDuration)) {
			continue
		}
		p.Reason = first(p.Reason, ReasonLease)
		if s.Renewable && s.LeaseID != "" {
			p.Renew = append(p.Renew, i)
		} else {
			p.Fetch[s.Path] = true
		}
	}
	// Leases die with the token that created them: a token two thirds
	// through its life is renewed, or replaced with every lease under it.
	if sess := rec.Session; leased && sess != nil && !sess.ExpiresAt.IsZero() && !sess.IssuedAt.IsZero() {
		if !now.Before(provider.RenewDue(sess.IssuedAt, sess.ExpiresAt.Sub(sess.IssuedAt))) {
			p.Reason = first(p.Reason, ReasonToken)
			if sess.Renewable {
				p.RenewToken = true
			} else {
				p.Full = true
			}
		}
	}
	return p
}

// addSat is t plus each d without ever summing durations: a rotation
// period near time.Duration's limit plus its jitter wrapped negative and
// made every re-publish read Vault. time.Time.Add itself saturates at the
// ends of Time's range, so a huge d means "far future", never the past.
func addSat(t time.Time, ds ...time.Duration) time.Time {
	for _, d := range ds {
		t = t.Add(d)
	}
	return t
}

func first(a, b Reason) Reason {
	if a != ReasonNone {
		return a
	}
	return b
}

// Backoff is the wait after the n-th consecutive failure: exponential from
// BackoffBase, capped, with ±20% jitter (r in [0,1)) so failed volumes do
// not retry in step.
func Backoff(n int, r float64) time.Duration {
	d := BackoffBase
	for i := 1; i < n && d < BackoffMax; i++ {
		d *= 2
	}
	if d > BackoffMax {
		d = BackoffMax
	}
	return time.Duration(float64(d) * (0.8 + 0.4*r))
}

// Failed records a failed refresh on rec: the files stay as they are and
// the next attempt waits Backoff (r in [0,1) is its jitter).
func Failed(rec *state.Volume, err error, now time.Time, r float64) {
	rec.Failures++
	rec.NextAttempt = now.Add(Backoff(rec.Failures, r))
	rec.LastError = err.Error()
}
