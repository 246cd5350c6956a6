package driver

import (
	"context"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"vaultcsi.dev/driver/driver/state"
)

// Backoff bounds for failed refreshes.
const (
	backoffBase = 5 * time.Second
	backoffMax  = 5 * time.Minute
)

// dueReason says why a mounted volume must be fetched again now, or "" when
// it need not be. It is pure so that every rule is unit-tested.
func dueReason(rec *state.Volume, hash string, now time.Time) string {
	switch {
	case rec == nil:
		return "no-state"
	case rec.RequestHash != hash:
		return "request-changed"
	case rec.Failures > 0 && now.Before(rec.NextAttempt):
		return ""
	case rec.Failures > 0:
		return "retry"
	case !now.Before(rec.FetchedAt.Add(rec.RotationPeriod + rec.Jitter)):
		return "period"
	}
	leased := false
	for _, s := range rec.Secrets {
		if s.LeaseDuration <= 0 {
			continue
		}
		leased = true
		start := s.FetchedAt
		if start.IsZero() {
			start = rec.FetchedAt
		}
		if !now.Before(start.Add(s.LeaseDuration * 2 / 3)) {
			return "lease"
		}
	}
	// Leases die with the token that created them: a token two thirds
	// through its life must be replaced while the leases are still good.
	if leased && rec.Session != nil && !rec.Session.ExpiresAt.IsZero() && !rec.Session.IssuedAt.IsZero() {
		life := rec.Session.ExpiresAt.Sub(rec.Session.IssuedAt)
		if !now.Before(rec.Session.IssuedAt.Add(life * 2 / 3)) {
			return "token"
		}
	}
	return ""
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
func (d *Driver) republish(ctx context.Context, a *publishArgs, rec *state.Volume, start time.Time) *csi.NodePublishVolumeResponse {
	now := time.Now()
	op := Op{Kind: "refresh", Target: a.target, Pod: a.vol.Request.Pod, Role: a.vol.Request.Role, Paths: paths(a.vol)}
	reason := dueReason(rec, a.hash, now)
	if reason == "" {
		op.Kind, op.Outcome, op.Latency = "republish", "skipped", time.Since(start)
		d.observer.Observe(op)
		return &csi.NodePublishVolumeResponse{}
	}
	if rec == nil {
		rec = &state.Volume{Target: a.target, VolumeID: a.volID, Pod: a.vol.Request.Pod, Role: a.vol.Request.Role,
			RotationPeriod: a.vol.RotationPeriod, Jitter: time.Duration(d.rand() * float64(a.vol.RotationPeriod) / 10)}
	}
	req := a.vol.Request
	req.Session = rec.Session
	res, err := d.fetcher.Fetch(ctx, &req)
	var changed bool
	if err == nil {
		op.Requests, op.LoggedIn, op.Secrets = res.VaultRequests, res.LoggedIn, res.Secrets
		files, ferr := d.files(res.Files, a.gid)
		if ferr == nil {
			changed, ferr = writeFiles(a.target, files, a.gid)
		}
		if ferr != nil {
			if res.Session != rec.Session {
				_ = d.fetcher.Release(context.WithoutCancel(ctx), res.Session)
			}
			err = ferr
		}
	}
	if err != nil {
		err = toStatus(err)
		rec.Failures++
		rec.NextAttempt = now.Add(backoff(rec.Failures, d.rand()))
		rec.LastError = err.Error()
		if serr := d.store.Put(rec); serr != nil {
			klog.ErrorS(serr, "save volume state", "target", a.target)
		}
		klog.ErrorS(err, "refresh failed; keeping the files already mounted", "target", a.target,
			"pod", podRef(a.vol.Request.Pod), "reason", reason, "failures", rec.Failures, "retryAfter", rec.NextAttempt.Sub(now).Round(time.Second))
		op.Outcome, op.Code, op.Err, op.Latency = "kept-old", status.Code(err).String(), err, time.Since(start)
		d.observer.Observe(op)
		return &csi.NodePublishVolumeResponse{}
	}
	old := rec.Session
	rec.VolumeID, rec.Pod, rec.Role, rec.RequestHash = a.volID, a.vol.Request.Pod, a.vol.Request.Role, a.hash
	rec.FetchedAt, rec.Secrets, rec.Session = now, res.Secrets, res.Session
	rec.RotationPeriod = a.vol.RotationPeriod
	rec.Failures, rec.NextAttempt, rec.LastError = 0, time.Time{}, ""
	if err := d.store.Put(rec); err != nil {
		klog.ErrorS(err, "save volume state", "target", a.target)
	}
	if old != nil && res.Session != nil && old.Token != res.Session.Token {
		// The new token's files are in place; the old token and the leases
		// it made are no longer needed by anyone.
		if err := d.fetcher.Release(context.WithoutCancel(ctx), old); err != nil {
			klog.ErrorS(err, "revoke replaced Vault token", "target", a.target)
		}
	}
	op.Outcome, op.Changed, op.Latency = "unchanged", changed, time.Since(start)
	if changed {
		op.Outcome = "ok"
	}
	klog.V(2).InfoS("volume refreshed", "target", a.target, "pod", podRef(a.vol.Request.Pod), "reason", reason, "changed", changed)
	d.observer.Observe(op)
	return &csi.NodePublishVolumeResponse{}
}
