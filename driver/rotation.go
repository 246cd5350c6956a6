package driver

import (
	"context"
	"errors"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"vaultcsi.dev/driver/driver/atomicwriter"
	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider"
)

// Backoff bounds for failed refreshes.
const (
	backoffBase = 5 * time.Second
	backoffMax  = 5 * time.Minute
)

// refreshPlan is what a republish must do. Static secrets (KV) are read
// again when the rotation period has passed; leased secrets (dynamic
// credentials, certificates) are renewed when two thirds through their TTL
// and fetched anew only when they cannot be renewed: re-reading a dynamic
// path mints a new credential, which is what peers get wrong.
type refreshPlan struct {
	reason     string          // "" when nothing is due
	full       bool            // fetch every path
	fetch      map[string]bool // paths to fetch anew (when not full)
	renew      []int           // indexes into rec.Secrets of leases to renew
	renewToken bool
}

// planRefresh decides a republish. It is pure so every rule is unit-tested.
func planRefresh(rec *state.Volume, hash string, now time.Time) refreshPlan {
	switch {
	case rec == nil:
		return refreshPlan{reason: "no-state", full: true}
	case rec.RequestHash != hash:
		return refreshPlan{reason: "request-changed", full: true}
	case rec.Failures > 0 && now.Before(rec.NextAttempt):
		return refreshPlan{}
	case rec.Failures > 0:
		return refreshPlan{reason: "retry", full: true}
	}
	periodDue := !now.Before(addSat(rec.FetchedAt, rec.RotationPeriod, rec.Jitter))
	if len(rec.Secrets) == 0 {
		if periodDue {
			return refreshPlan{reason: "period", full: true}
		}
		return refreshPlan{}
	}
	p := refreshPlan{fetch: map[string]bool{}}
	leased := false
	for i, s := range rec.Secrets {
		start := s.FetchedAt
		if start.IsZero() {
			start = rec.FetchedAt
		}
		if s.LeaseDuration <= 0 {
			if !now.Before(addSat(start, rec.RotationPeriod, rec.Jitter)) {
				p.fetch[s.Path] = true
				p.reason = firstNonEmpty(p.reason, "period")
			}
			continue
		}
		leased = true
		if now.Before(addSat(start, twoThirds(s.LeaseDuration))) {
			continue
		}
		p.reason = firstNonEmpty(p.reason, "lease")
		if s.Renewable && s.LeaseID != "" {
			p.renew = append(p.renew, i)
		} else {
			p.fetch[s.Path] = true
		}
	}
	// Leases die with the token that created them: a token two thirds
	// through its life is renewed, or replaced with every lease under it.
	if sess := rec.Session; leased && sess != nil && !sess.ExpiresAt.IsZero() && !sess.IssuedAt.IsZero() {
		life := sess.ExpiresAt.Sub(sess.IssuedAt)
		if !now.Before(addSat(sess.IssuedAt, twoThirds(life))) {
			p.reason = firstNonEmpty(p.reason, "token")
			if sess.Renewable {
				p.renewToken = true
			} else {
				p.full = true
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

// twoThirds is d*2/3 without the overflow of d*2: a certificate valid until
// 9999 has a TTL that saturates time.Duration, and doubling it wrapped to a
// negative due time (a new certificate on every re-publish).
func twoThirds(d time.Duration) time.Duration {
	return d - d/3
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// backoff is the wait after the n-th consecutive failure: exponential from
// backoffBase, capped, with ±20% jitter so failed volumes do not retry in step.
func backoff(n int, r float64) time.Duration {
	d := backoffBase
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	if d > backoffMax {
		d = backoffMax
	}
	return time.Duration(float64(d) * (0.8 + 0.4*r))
}

// republish handles kubelet's periodic NodePublishVolume on a mounted
// target. It always answers success: an error here makes kubelet (before
// 1.37) drop the mount dir and leave the pod on stale files for good
// (kubernetes#121271). Failures are reported and retried with backoff.
func (d *Driver) republish(ctx context.Context, after *afterLock, a *publishArgs, rec *state.Volume, start time.Time) *csi.NodePublishVolumeResponse {
	now := time.Now()
	if rec == nil || rec.PrunePending {
		if err := atomicwriter.Prune(a.dir); err != nil {
			klog.ErrorS(err, "prune old payloads", "target", a.target)
		} else if rec != nil {
			rec.PrunePending = false
			if err := d.store.Put(rec); err != nil {
				klog.ErrorS(err, "save volume state", "target", a.target)
			}
		}
	}
	op := Op{Kind: "refresh", Target: a.target, Pod: a.vol.Request.Pod, Role: a.vol.Request.Role, Paths: paths(a.vol)}
	plan := planRefresh(rec, a.hash, now)
	if plan.reason == "" {
		op.Kind, op.Outcome, op.Latency = "republish", "skipped", time.Since(start)
		after.observe(op)
		return &csi.NodePublishVolumeResponse{}
	}
	if rec == nil {
		rec = &state.Volume{Target: a.target, VolumeID: a.volID, Pod: a.vol.Request.Pod, Role: a.vol.Request.Role,
			RotationPeriod: a.vol.RotationPeriod, Jitter: time.Duration(d.rand() * float64(a.vol.RotationPeriod) / 10)}
	}
	op.Reason = plan.reason
	heldBefore := leases(rec.Secrets)
	r := &refresh{d: d, after: after, a: a, rec: rec, plan: plan, now: now, session: rec.Session}
	err := d.decide(ctx, a, &op)
	if err == nil {
		var release func()
		if release, a.vol.Request.Memory, err = d.acquire(ctx); err == nil {
			err = r.run(ctx)
			release()
		}
	}
	op.Requests, op.LoggedIn, op.Secrets = r.requests, r.loggedIn, r.rec.Secrets
	if err != nil {
		err = toStatus(err)
		rec.Failures++
		rec.NextAttempt = now.Add(backoff(rec.Failures, d.rand()))
		rec.LastError = err.Error()
		if serr := d.store.Put(rec); serr != nil {
			klog.ErrorS(serr, "save volume state", "target", a.target)
		}
		klog.ErrorS(err, "refresh failed; keeping the files already mounted", "target", a.target,
			"pod", podRef(a.vol.Request.Pod), "reason", plan.reason, "failures", rec.Failures,
			"retryAfter", rec.NextAttempt.Sub(now).Round(time.Second))
		op.Outcome, op.Code, op.Err, op.Latency = "kept-old", status.Code(err).String(), err, time.Since(start)
		after.observe(op)
		return &csi.NodePublishVolumeResponse{}
	}
	op.Outcome, op.Changed, op.Latency = "unchanged", r.changed, time.Since(start)
	op.LeasesDelta = leases(rec.Secrets) - heldBefore
	if r.changed {
		op.Outcome = "ok"
	}
	klog.V(2).InfoS("volume refreshed", "target", a.target, "pod", podRef(a.vol.Request.Pod),
		"reason", plan.reason, "changed", r.changed, "vaultRequests", r.requests)
	after.observe(op)
	return &csi.NodePublishVolumeResponse{}
}

// refresh carries one republish's work.
type refresh struct {
	d        *Driver
	after    *afterLock // revokes tokens the refresh let go, after the lock
	a        *publishArgs
	rec      *state.Volume
	plan     refreshPlan
	now      time.Time
	session  *provider.Session
	requests int
	loggedIn bool
	changed  bool
}

func (r *refresh) run(ctx context.Context) error {
	infos := append([]provider.SecretInfo(nil), r.rec.Secrets...)
	if r.plan.renewToken {
		ns, n, err := r.d.fetcher.RenewToken(ctx, r.session)
		r.requests += n
		switch {
		case err == nil:
			r.session = ns
		case errors.Is(err, provider.ErrCapped), errors.Is(err, provider.ErrDenied):
			// Log in again; every lease must then move under the new token.
			r.session, r.plan.full = nil, true
		default:
			return err
		}
	}
	if !r.plan.full {
		for _, i := range r.plan.renew {
			s := infos[i]
			ttl, n, err := r.d.fetcher.RenewLease(ctx, r.session, s.LeaseID, s.IssuedTTL)
			r.requests += n
			switch {
			case err == nil:
				infos[i].FetchedAt, infos[i].LeaseDuration = r.now, ttl
			case errors.Is(err, provider.ErrCapped), errors.Is(err, provider.ErrDenied), errors.Is(err, provider.ErrNotFound):
				r.plan.fetch[s.Path] = true // near max TTL or gone: a fresh credential
			default:
				return err
			}
		}
	}
	if r.plan.full || len(r.plan.fetch) > 0 {
		var err error
		if infos, err = r.fetch(ctx, infos); err != nil {
			return err
		}
	}
	old := r.rec.Session
	r.rec.VolumeID, r.rec.Pod, r.rec.Role, r.rec.RequestHash = r.a.volID, r.a.vol.Request.Pod, r.a.vol.Request.Role, r.a.hash
	r.rec.Secrets, r.rec.Session, r.rec.RotationPeriod = infos, r.session, r.a.vol.RotationPeriod
	if r.plan.full || len(r.plan.fetch) > 0 {
		r.rec.FetchedAt = r.now
	}
	r.rec.Failures, r.rec.NextAttempt, r.rec.LastError = 0, time.Time{}, ""
	if r.changed {
		r.rec.PrunePending = true
	}
	if err := r.d.store.Put(r.rec); err != nil {
		klog.ErrorS(err, "save volume state", "target", r.a.target)
	}
	if old != nil && r.session != nil && old.Token != r.session.Token {
		// The new token's files are in place; the old token and the leases
		// it made are no longer needed by anyone.
		r.revoke(old, revokeReplaced)
	}
	return nil
}

// revoke hands a token the refresh no longer needs over for revocation
// once the target is unlocked and the Vault slot released.
func (r *refresh) revoke(s *provider.Session, why string) {
	r.after.revoke(s, why, who{r.a.target, r.a.vol.Request.Pod})
}

// recordIncoming puts a token the refresh just logged in for on record
// before it is used, so a driver killed mid-refresh cannot lose it.
func (r *refresh) recordIncoming(s *provider.Session) error {
	c := *r.rec
	c.Incoming = s
	return r.d.store.Put(&c)
}

// fetch reads the planned paths, keeps the other files as they are, and
// writes the merged set (only if it changed).
func (r *refresh) fetch(ctx context.Context, infos []provider.SecretInfo) ([]provider.SecretInfo, error) {
	current := map[string]atomicwriter.File{}
	if !r.plan.full {
		files, err := atomicwriter.Read(r.a.dir)
		if err != nil {
			r.plan.full = true
		}
		for _, f := range files {
			current[f.Name] = f
			// The files kept are in memory until the merged set is written.
			// Charged beyond the reservation, they also keep this fetch from
			// waiting for room (no hold-and-wait): when the budget is short,
			// the refresh fails and is retried with backoff.
			if err := r.a.vol.Request.Memory.Charge(int64(len(f.Data))); err != nil {
				return nil, err
			}
		}
	}
	specs := r.a.vol.Request.Secrets
	pick := func() []provider.SecretSpec {
		if r.plan.full {
			return specs
		}
		var out []provider.SecretSpec
		for _, s := range specs {
			_, have := current[s.File]
			if r.plan.fetch[s.Path] || !have {
				out = append(out, s)
			}
		}
		return out
	}
	req := r.a.vol.Request
	req.Session = r.session
	req.Secrets = pick()
	req.OnLogin = r.recordIncoming
	res, err := r.d.fetcher.Fetch(ctx, &req)
	if res != nil {
		r.requests += res.VaultRequests
		r.loggedIn = r.loggedIn || res.LoggedIn
		r.revoke(res.Orphan, revokeFailedRefresh)
	}
	if err != nil {
		return nil, err
	}
	if res.LoggedIn && !r.plan.full {
		// A new token: leases made by the old one die when it is revoked,
		// so every path moves under the new token now.
		r.loggedIn = true
		r.plan.full = true
		r.session = res.Session
		req.Session, req.Secrets = res.Session, specs
		res, err = r.d.fetcher.Fetch(ctx, &req)
		if res != nil {
			r.requests += res.VaultRequests
			r.revoke(res.Orphan, revokeFailedRefresh)
		}
		if err != nil {
			r.revoke(r.session, revokeFailedRefresh)
			return nil, err
		}
	}
	if res.LoggedIn {
		r.loggedIn = true
	}
	r.session = res.Session

	fetched := map[string]provider.File{}
	for _, f := range res.Files {
		fetched[f.Name] = f
	}
	merged := make([]provider.File, 0, len(specs))
	for _, s := range specs {
		if f, ok := fetched[s.File]; ok {
			merged = append(merged, f)
		} else {
			c := current[s.File]
			merged = append(merged, provider.File{Name: c.Name, Data: c.Data, Mode: s.Mode})
		}
	}
	files, err := r.d.files(merged, r.a.gid)
	if err == nil {
		r.changed, err = writeFiles(r.a.dir, files, r.a.gid)
	}
	if err != nil {
		if r.session != nil && (r.rec.Session == nil || r.session.Token != r.rec.Session.Token) {
			r.revoke(r.session, revokeFailedRefresh) // a new token the volume will not keep
		}
		return nil, err
	}
	// New infos: fetched paths replace their old entries.
	byPath := map[string]provider.SecretInfo{}
	if !r.plan.full {
		for _, s := range infos {
			byPath[s.Path] = s
		}
	}
	for _, s := range res.Secrets {
		byPath[s.Path] = s
	}
	out := make([]provider.SecretInfo, 0, len(byPath))
	for _, p := range paths(r.a.vol) {
		if s, ok := byPath[p]; ok {
			out = append(out, s)
		}
	}
	return out, nil
}
