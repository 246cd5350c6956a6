package driver

import (
	"context"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"vaultcsi.dev/driver/driver/atomicwriter"
	"vaultcsi.dev/driver/driver/ops"
	"vaultcsi.dev/driver/driver/refresh"
	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider"
)

// republish handles kubelet's periodic NodePublishVolume on a mounted
// target. It always answers success: an error here makes kubelet (before
// 1.37) drop the mount dir and leave the pod on stale files for good
// (kubernetes#121271). Failures are reported and retried with backoff.
func (d *Driver) republish(ctx context.Context, after *afterLock, a *publishArgs, rec *state.Volume, start time.Time) *csi.NodePublishVolumeResponse {
	now := d.cfg.Clock.Now()
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
	op := Op{Kind: ops.Refresh, Target: a.target, Pod: a.vol.Request.Pod, Role: a.vol.Request.Role, Paths: paths(a.vol)}
	plan := refresh.For(rec, a.hash, now)
	if !plan.Due() {
		op.Kind, op.Outcome, op.Latency = ops.Republish, ops.Skipped, time.Since(start)
		after.observe(op)
		return &csi.NodePublishVolumeResponse{}
	}
	if rec == nil {
		rec = d.newRecord(a)
	}
	op.Reason = string(plan.Reason)
	heldBefore := leases(rec.Secrets)
	var res refresh.Result
	err := d.decide(ctx, a, &op)
	if err == nil {
		var release func()
		if release, a.vol.Request.Memory, err = d.acquire(ctx); err == nil {
			res, err = d.executor(&volumeTarget{d: d, after: after, a: a, rec: rec}, a).Run(ctx, plan, rec)
			release()
		}
	}
	op.Requests, op.LoggedIn, op.Secrets = res.Requests, res.LoggedIn, rec.Secrets
	if err != nil {
		err = toStatus(err)
		refresh.Failed(rec, err, now, d.rand())
		if serr := d.store.Put(rec); serr != nil {
			klog.ErrorS(serr, "save volume state", "target", a.target)
		}
		klog.ErrorS(err, "refresh failed; keeping the files already mounted", "target", a.target,
			"pod", podRef(a.vol.Request.Pod), "reason", plan.Reason, "failures", rec.Failures,
			"retryAfter", rec.NextAttempt.Sub(now).Round(time.Second))
		op.Outcome, op.Code, op.Err, op.Latency = ops.KeptOld, status.Code(err).String(), err, time.Since(start)
		after.observe(op)
		return &csi.NodePublishVolumeResponse{}
	}
	op.Outcome, op.Changed, op.Latency = ops.Unchanged, res.Changed, time.Since(start)
	op.LeasesDelta = leases(rec.Secrets) - heldBefore
	if res.Changed {
		op.Outcome = ops.OK
		if a.vol.Reload != nil {
			// The swap is complete and recorded: tell the application, once.
			after.signal = func() { d.sendReload(a) }
		}
	}
	klog.V(2).InfoS("volume refreshed", "target", a.target, "pod", podRef(a.vol.Request.Pod),
		"reason", plan.Reason, "changed", res.Changed, "vaultRequests", res.Requests)
	after.observe(op)
	return &csi.NodePublishVolumeResponse{}
}

// newRecord is the record of a volume the driver has none for yet.
func (d *Driver) newRecord(a *publishArgs) *state.Volume {
	return &state.Volume{Target: a.target, VolumeID: a.volID, Pod: a.vol.Request.Pod, Role: a.vol.Request.Role,
		RotationPeriod: a.vol.RotationPeriod,
		// Up to a tenth of the period, so pods started together spread out.
		Jitter: time.Duration(d.rand() * float64(a.vol.RotationPeriod) / 10)}
}

// executor is the refresh engine working on the volume t for a.
func (d *Driver) executor(t *volumeTarget, a *publishArgs) *refresh.Executor {
	return &refresh.Executor{Fetcher: d.fetcher, Target: t, Clock: d.cfg.Clock, Request: a.vol.Request,
		VolumeID: a.volID, Hash: a.hash, Period: a.vol.RotationPeriod}
}

// volumeTarget is a volume as the refresh engine sees it: the tmpfs at
// a.dir, its record in the store, and the revocations after the lock.
type volumeTarget struct {
	d     *Driver
	after *afterLock
	a     *publishArgs
	rec   *state.Volume // the record as it was when the work began
	// first: a first publish, which mounts the tmpfs and whose record
	// must be saved; mounted and created say what it did, for cleanup.
	first            bool
	mounted, created bool
	// job is a first publish's mkdir and mount, started once the token is
	// on record (nil: not yet, or a refresh).
	job *mountJob
}

// mountJob runs a first publish's mkdir and tmpfs mount while its Vault
// reads are in flight: they are network round trips, the mount is local
// work, so a publish no longer pays for both one after the other. It
// starts once the login's token is on record (the pending record), so a
// driver killed at any point after the mount still names the token.
type mountJob struct {
	done    chan struct{}
	created bool
	err     error
}

// startMount starts the mount job; settle must be called before the
// publish returns (Write and undo do).
func (t *volumeTarget) startMount() {
	j := &mountJob{done: make(chan struct{})}
	t.job = j
	go func() {
		defer close(j.done)
		j.created, j.err = t.d.mountTarget(t.a)
	}()
}

// settle waits for the mount job, if one was started, and takes its result.
func (t *volumeTarget) settle() error {
	if t.job == nil {
		return nil
	}
	<-t.job.done
	t.mounted, t.created = true, t.job.created
	return t.job.err
}

func (t *volumeTarget) Current() ([]atomicwriter.File, error) { return atomicwriter.Read(t.a.dir) }

// Login puts a new token on record before it is used, so a driver killed
// at any later point cannot lose it: a first publish's record is pending,
// a refresh's names the token as incoming.
func (t *volumeTarget) Login(s *provider.Session) error {
	if t.first {
		if err := t.d.store.Put(&state.Volume{Target: t.a.target, VolumeID: t.a.volID, Pod: t.a.vol.Request.Pod,
			Role: t.a.vol.Request.Role, RequestHash: t.a.hash, Session: s, RotationPeriod: t.a.vol.RotationPeriod, Pending: true}); err != nil {
			return err
		}
		t.startMount() // the token is on record: mount while the reads are in flight
		return nil
	}
	c := *t.rec
	c.Incoming = s
	return t.d.store.Put(&c)
}

func (t *volumeTarget) Render(files []provider.File) ([]atomicwriter.File, error) {
	return t.d.files(files)
}

func (t *volumeTarget) Write(files []atomicwriter.File) (bool, error) {
	if t.first {
		if t.job == nil {
			t.startMount()
		}
		if err := t.settle(); err != nil {
			return true, err
		}
		return true, t.d.writeNew(t.a, files)
	}
	return writeFiles(t.a.dir, files, t.a.gid)
}

// Record saves the record. A refresh whose files are in place succeeds
// even when the record cannot be saved: the next call redoes the work.
func (t *volumeTarget) Record(rec *state.Volume) error {
	err := t.d.store.Put(rec)
	if err != nil && !t.first {
		klog.ErrorS(err, "save volume state", "target", t.a.target)
		return nil
	}
	return err
}

func (t *volumeTarget) Release(s *provider.Session, why refresh.Why) {
	reason := revokeFailedRefresh
	switch {
	case why == refresh.WhyReplaced:
		reason = revokeReplaced
	case t.first:
		reason = revokeFailedPublish
	}
	t.after.revoke(s, reason, who{t.a.target, t.a.vol.Request.Pod})
}

// undo removes what a failed first publish mounted.
func (t *volumeTarget) undo() {
	_ = t.settle() // its error is the publish's, reported by Write
	if t.mounted {
		t.d.cleanupTarget(t.a.dir, t.created)
	}
}
