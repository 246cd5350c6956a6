package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"vaultcsi.dev/driver/driver/atomicwriter"
	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/driver/ops"
	"vaultcsi.dev/driver/driver/refresh"
	"vaultcsi.dev/driver/driver/tmpfs"
	"vaultcsi.dev/driver/provider"
)

// NodeGetInfo names the node. A node plugin for ephemeral volumes has no
// volume limit and no topology.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.cfg.NodeID}, nil
}

// NodeGetCapabilities advertises VOLUME_MOUNT_GROUP so kubelet passes the
// pod's fsGroup and lets the driver own group permissions.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{{
		Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{
			Type: csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP,
		}},
	}}}, nil
}

// NodePublishVolume mounts (first call) or refreshes (kubelet's periodic
// re-publish) a volume.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	start := time.Now()
	args, err := d.validatePublish(req)
	if err != nil {
		return nil, d.reject(req, err, start)
	}
	defer func() { _ = args.tg.Close() }() // an O_PATH descriptor: nothing to flush
	after := &afterLock{d: d}
	defer after.run() // deferred before unlock, so it runs after it
	unlock := d.locks.lock(args.target)
	defer unlock()

	mounted, err := args.tg.IsMounted()
	if err != nil {
		return nil, d.reject(req, status.Errorf(codes.Internal, "target_path: %v", err), start)
	}
	if mounted {
		rec, err := d.store.Get(args.target)
		if err != nil {
			klog.ErrorS(err, "volume state unreadable; refreshing", "target", args.target)
		}
		_, lerr := args.tg.Readlink("..data")
		if rec != nil && rec.Pending || rec == nil && err == nil && lerr != nil {
			// A first publish the driver died in (kill -9 between the mount
			// and the first ..data swap): kubelet never saw it succeed, so no
			// container uses the tmpfs. If it is ours, start over.
			owned, oerr := args.tg.Owned()
			if oerr != nil {
				return nil, d.reject(req, status.Errorf(codes.Internal, "target_path: %v", oerr), start)
			}
			if owned {
				if uerr := args.tg.Unmount(); uerr != nil {
					return nil, d.reject(req, status.Errorf(codes.Internal, "unmount an unfinished publish: %v", uerr), start)
				}
				klog.InfoS("redoing a first publish the driver did not finish", "target", args.target,
					"pod", podRef(args.vol.Request.Pod))
				return d.firstPublish(ctx, after, args, start)
			}
			if rec != nil { // its token is of no use on a mount that is not ours
				after.revoke(rec.Session, revokeUnfinished, who{args.target, rec.Pod})
				if derr := d.store.Delete(args.target); derr != nil {
					klog.ErrorS(derr, "delete volume state", "target", args.target)
				}
				rec = nil
			}
		}
		// With no record (a lost or moved state dir), a tmpfs in our ..data
		// layout is still ours: refresh it rather than fail, since an error
		// on a re-publish makes kubelet drop the mount.
		if rec != nil || err != nil || lerr == nil {
			return d.republish(ctx, after, args, rec, start), nil
		}
		// Mounted but not in our layout: not ours to touch.
		return nil, d.reject(req, status.Errorf(codes.FailedPrecondition, "target_path: %q is a mount the driver did not make", args.target), start)
	}
	return d.firstPublish(ctx, after, args, start)
}

func (d *Driver) firstPublish(ctx context.Context, after *afterLock, a *publishArgs, start time.Time) (*csi.NodePublishVolumeResponse, error) {
	op := Op{Kind: ops.Publish, Target: a.target, Pod: a.vol.Request.Pod, Role: a.vol.Request.Role, Paths: paths(a.vol)}
	w := who{a.target, a.vol.Request.Pod}
	fail := func(err error) (*csi.NodePublishVolumeResponse, error) {
		err = toStatus(err)
		op.Outcome, op.Code, op.Err, op.Latency = ops.Failed, status.Code(err).String(), err, time.Since(start)
		after.observe(op)
		return nil, err
	}
	// A record with nothing mounted is a publish the driver died in before
	// mounting, or an unpublish it died in after unmounting: its token is
	// of no use to anyone now.
	if old, err := d.store.Get(a.target); err == nil && old != nil {
		after.revoke(old.Session, revokeUnfinished, w)
		if err := d.store.Delete(a.target); err != nil {
			return fail(status.Errorf(codes.Internal, "volume state: %v", err))
		}
		if !old.Pending {
			op.MountedDelta, op.LeasesDelta = -1, -leases(old.Secrets)
		}
	}
	if err := d.checkReload(ctx, a); err != nil {
		return fail(err)
	}
	if err := d.decide(ctx, a, &op); err != nil {
		if op.Decision == ops.DecisionDeny {
			op.Kind = ops.Deny
		}
		return fail(err)
	}
	done, mem, err := d.acquire(ctx)
	if err != nil {
		return fail(err)
	}
	defer done()
	a.vol.Request.Memory = mem // charged until the files are written
	// The shared fetch, render, write, record path, on a new mount. The
	// token is on record (pending) before anything is read or mounted, so a
	// crash at any later point leaves a record that names it.
	t := &volumeTarget{d: d, after: after, a: a, first: true}
	rec := d.newRecord(a)
	res, err := d.executor(t, a).Run(ctx, refresh.Publish(), rec)
	op.Requests, op.LoggedIn, op.Secrets = res.Requests, res.LoggedIn, res.Fetched
	if err != nil {
		t.undo()
		d.abandonPending(after, a.target, w)
		return fail(err)
	}
	_ = t.settle() // already settled by Write: files are in place
	op.Outcome, op.Changed, op.Latency = ops.OK, true, time.Since(start)
	op.MountedDelta, op.LeasesDelta = op.MountedDelta+1, op.LeasesDelta+leases(rec.Secrets)
	after.observe(op)
	return &csi.NodePublishVolumeResponse{}, nil
}

// abandonPending drops the pending record of a first publish that failed,
// handing its token over for revocation.
func (d *Driver) abandonPending(after *afterLock, target string, w who) {
	rec, err := d.store.Get(target)
	if err != nil || rec == nil || !rec.Pending {
		return
	}
	after.revoke(rec.Session, revokeFailedPublish, w)
	if err := d.store.Delete(target); err != nil {
		klog.ErrorS(err, "delete volume state", "target", target)
	}
}

// recoverPending runs at start-up, before any call: a first publish that a
// killed driver left with nothing mounted will not be finished (the pod is
// gone, or kubelet's retry starts over), so its token is revoked. One left
// mounted waits for kubelet: its retry redoes it, its unpublish revokes.
// A token a killed refresh logged in for and never adopted is revoked.
func (d *Driver) recoverPending() {
	vols, err := d.store.List()
	if err != nil {
		klog.ErrorS(err, "list volume state")
		return
	}
	for _, v := range vols {
		if in := v.Incoming; in != nil {
			// A refresh died between its login and adopting the new token.
			if v.Session == nil || in.Token != v.Session.Token {
				d.revoker.later(in, revokeFailedRefresh, who{v.Target, v.Pod})
			}
			v.Incoming = nil
			if err := d.store.Put(v); err != nil {
				klog.ErrorS(err, "save volume state", "target", v.Target)
			}
		}
		if !v.Pending {
			continue
		}
		if mounted, err := tmpfs.IsMounted(v.Target); err != nil || mounted {
			continue
		}
		klog.InfoS("revoking the token of a publish the driver did not finish", "target", v.Target, "pod", podRef(v.Pod))
		d.revoker.later(v.Session, revokeUnfinished, who{v.Target, v.Pod})
		if err := d.store.Delete(v.Target); err != nil {
			klog.ErrorS(err, "delete volume state", "target", v.Target)
		}
	}
}

// files turns fetched files into writer files with modes and size checks.
func (d *Driver) files(in []provider.File) ([]atomicwriter.File, error) {
	out := make([]atomicwriter.File, 0, len(in))
	var total int64
	for _, f := range in {
		mode := f.Mode
		if mode == 0 {
			mode = d.cfg.FileMode
		}
		// tmpfs charges whole pages: count them, not bytes.
		total += provider.PageBytes(len(f.Data))
		out = append(out, atomicwriter.File{Name: f.Name, Data: f.Data, Mode: mode})
	}
	if total > d.cfg.MaxVolumeBytes {
		return nil, status.Errorf(codes.ResourceExhausted, "secrets: %d bytes (in pages) exceed the volume limit of %d bytes", total, d.cfg.MaxVolumeBytes)
	}
	return out, nil
}

// mountTarget creates the target if needed and mounts the volume's tmpfs
// on it. It reports whether it created the target directory.
// Through the parent held open since the check: a component swapped for a
// symlink meanwhile cannot redirect the mkdir, mount or writes.
func (d *Driver) mountTarget(a *publishArgs) (created bool, err error) {
	switch err := a.tg.Mkdir(0o750); {
	case err == nil:
		created = true
	case errors.Is(err, os.ErrExist):
		if info, serr := os.Lstat(a.dir); serr != nil || !info.IsDir() {
			return false, status.Errorf(codes.InvalidArgument, "target_path: %q exists and is not a directory", a.target)
		}
		if entries, _ := os.ReadDir(a.dir); len(entries) > 0 {
			return false, status.Errorf(codes.FailedPrecondition, "target_path: %q is not empty", a.target)
		}
	case errors.Is(err, os.ErrNotExist):
		return false, status.Errorf(codes.NotFound, "target_path: parent of %q does not exist (kubelet creates it)", a.target)
	default:
		return false, toStatus(fmt.Errorf("target_path: %w", err))
	}
	if err := a.tg.Mount(d.mountOptions(a)); err != nil {
		return created, toStatus(err)
	}
	return created, nil
}

func (d *Driver) mountOptions(a *publishArgs) tmpfs.Options {
	return tmpfs.Options{
		SizeBytes: 2*d.cfg.MaxVolumeBytes + 64<<10,
		Inodes:    4*attributes.MaxFiles + 64,
		GID:       a.gid,
	}
}

// writeNew writes a first publish's files into its new tmpfs.
func (d *Driver) writeNew(a *publishArgs, files []atomicwriter.File) error {
	if _, err := atomicwriter.Write(a.dir, files, atomicwriter.Options{GID: a.gid}); err != nil {
		opts := d.mountOptions(a)
		// Out of bytes or inodes is ResourceExhausted (codeOf); say the limits.
		return toStatus(fmt.Errorf("write files into the volume's tmpfs (%d bytes, %d inodes for files, directories and links): %w",
			opts.SizeBytes, opts.Inodes, err))
	}
	return nil
}

// cleanupTarget undoes a failed first publish: nothing stays mounted.
// target is publishArgs.dir (the path through the checked parent).
func (d *Driver) cleanupTarget(target string, created bool) {
	if err := tmpfs.Unmount(target); err != nil {
		klog.ErrorS(err, "cleanup after failed publish", "target", target)
	}
	if created {
		_ = os.Remove(target)
	}
}

// NodeUnpublishVolume revokes the volume's Vault token (and with it its
// leases), unmounts and removes the target. Unknown targets succeed; a
// target that holds something the driver did not make is refused and left
// as it is.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	start := time.Now()
	target := req.GetTargetPath()
	if err := checkIDAndTarget(req.GetVolumeId(), target); err != nil {
		return nil, err
	}
	if err := d.checkUnpublishTarget(target); err != nil {
		return nil, err
	}
	tg, err := d.openTarget(target)
	gone := status.Code(err) == codes.NotFound // no parent: nothing on disk to undo
	if err != nil && !gone {
		return nil, err
	}
	defer func() { _ = tg.Close() }() // an O_PATH descriptor: nothing to flush
	after := &afterLock{d: d}
	defer after.run() // deferred before unlock, so it runs after it
	unlock := d.locks.lock(target)
	defer unlock()
	if !gone {
		if err := checkOwnTarget(tg, target); err != nil {
			return nil, err
		}
	}

	rec, err := d.store.Get(target)
	if err != nil {
		klog.ErrorS(err, "volume state unreadable; unmounting without revocation", "target", target)
	}
	op := Op{Kind: ops.Unpublish, Target: target, Outcome: ops.OK}
	if rec != nil {
		op.Pod, op.Role, op.Secrets = rec.Pod, rec.Role, rec.Secrets
		// Revoked once the target is unlocked; a token Vault does not take
		// now is retried in the background. Unmounting does not wait.
		after.revoke(rec.Session, revokeUnpublish, who{target, rec.Pod})
	}
	if !gone {
		if err := tg.Unmount(); err != nil {
			return nil, status.Errorf(codes.Internal, "unmount: %v", err)
		}
		if err := tg.Remove(); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, status.Errorf(codes.Internal, "remove target: %v", err)
		}
	}
	if err := d.store.Delete(target); err != nil {
		klog.ErrorS(err, "delete volume state", "target", target)
	}
	d.parsed.forget(target)
	op.Latency = time.Since(start)
	if rec != nil {
		if !rec.Pending {
			op.MountedDelta, op.LeasesDelta = -1, -leases(rec.Secrets)
		}
		after.observe(op)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func paths(v *attributes.Volume) []string {
	out := make([]string, 0, len(v.Request.Secrets))
	seen := make(map[string]bool, len(v.Request.Secrets))
	for _, s := range v.Request.Secrets {
		for _, r := range s.Reads() { // a template's and passwordFrom's too
			if !seen[r.Path] {
				seen[r.Path] = true
				out = append(out, r.Path)
			}
		}
	}
	return out
}

func podRef(p provider.Identity) klog.ObjectRef {
	return klog.ObjectRef{Namespace: p.Namespace, Name: p.PodName}
}

func writeFiles(target string, files []atomicwriter.File, gid int) (bool, error) {
	changed, err := atomicwriter.Write(target, files, atomicwriter.Options{GID: gid})
	if err != nil {
		// ENOSPC and friends become ResourceExhausted in codeOf.
		return changed, toStatus(fmt.Errorf("write files: %w", err))
	}
	return changed, nil
}

// leases counts the Vault leases among a volume's secrets.
func leases(infos []provider.SecretInfo) int {
	n := 0
	for _, s := range infos {
		if s.LeaseID != "" {
			n++
		}
	}
	return n
}
