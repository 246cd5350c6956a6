// Target paths and requests: what a publish or unpublish may act on. Every
// check here runs before any Vault call, and the target is resolved once
// and held open (tmpfs.Resolve) so a later swap cannot redirect the work.

package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/driver/tmpfs"
	"vaultcsi.dev/driver/provider"
)

// publishArgs is a validated NodePublishVolume request.
type publishArgs struct {
	target string
	volID  string
	gid    int
	vol    *attributes.Volume
	hash   string

	// tg holds the target's parent open, resolved with no symlink; dir
	// (tg.Path()) names the target through it for every file operation,
	// target (kubelet's path) is the key in state, logs and events.
	tg  *tmpfs.Target
	dir string
}

func (d *Driver) validatePublish(req *csi.NodePublishVolumeRequest) (*publishArgs, error) {
	target := req.GetTargetPath()
	if err := checkIDAndTarget(req.GetVolumeId(), target); err != nil {
		return nil, err
	}
	vc := req.GetVolumeCapability()
	if vc == nil {
		return nil, status.Error(codes.InvalidArgument, "volume_capability: required")
	}
	if vc.GetBlock() != nil || vc.GetMount() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume_capability: only mount access is supported, not block")
	}
	if m := vc.GetAccessMode().GetMode(); m != csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER &&
		m != csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY &&
		m != csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER &&
		m != csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER {
		return nil, status.Errorf(codes.InvalidArgument, "volume_capability.access_mode: %s is not a single-node mode", m)
	}
	if fs := vc.GetMount().GetFsType(); fs != "" && fs != "tmpfs" {
		return nil, status.Errorf(codes.InvalidArgument, "volume_capability.mount.fs_type: %q: volumes are always tmpfs", fs)
	}
	if !req.GetReadonly() {
		return nil, status.Error(codes.InvalidArgument, "readonly: must be true: set readOnly: true on the pod's csi volume")
	}
	gid := -1
	if g := vc.GetMount().GetVolumeMountGroup(); g != "" {
		n, err := strconv.Atoi(g)
		if err != nil || n < 0 || n > 1<<31-2 {
			return nil, status.Errorf(codes.InvalidArgument, "volume_capability.mount.volume_mount_group: %q is not a group id", g)
		}
		gid = n
	}
	vol, entry, err := d.parsed.parse(target, req.GetVolumeContext(), req.GetSecrets(), d.cfg.Audience)
	if err != nil {
		return nil, toStatus(err) // InvalidArgument; PermissionDenied for a token of another identity
	}
	if err := d.checkTarget(target, vol.Request.Pod.PodUID); err != nil {
		return nil, err
	}
	tg, err := d.openTarget(target)
	if err != nil {
		return nil, err
	}
	if vol.RotationPeriod != 0 && vol.RotationPeriod < d.cfg.RotationPeriod {
		// A pod may lengthen the period, never shorten it (Vault load).
		vol.RotationPeriod = d.cfg.RotationPeriod
	}
	if vol.RotationPeriod == 0 {
		vol.RotationPeriod = d.cfg.RotationPeriod
	}
	vol.Request.MaxVolumeBytes = d.cfg.MaxVolumeBytes
	return &publishArgs{target: target, tg: tg, dir: tg.Path(), volID: req.GetVolumeId(), gid: gid, vol: vol, hash: d.parsed.requestHash(entry, vol, gid)}, nil
}

// checkIDAndTarget validates the two fields every node call carries.
func checkIDAndTarget(volumeID, target string) error {
	switch {
	case volumeID == "":
		return status.Error(codes.InvalidArgument, "volume_id: required")
	case target == "":
		return status.Error(codes.InvalidArgument, "target_path: required")
	case !filepath.IsAbs(target) || filepath.Clean(target) != target:
		return status.Errorf(codes.InvalidArgument, "target_path: %q must be absolute and clean", target)
	}
	return nil
}

// checkTarget pins the target path to kubelet's layout for the pod named in
// the request, so one pod cannot aim a publish at another's directory
// (CVE-2020-8568 is this class).
func (d *Driver) checkTarget(target, podUID string) error {
	if d.cfg.KubeletDir == "" {
		return nil
	}
	prefix := filepath.Join(d.cfg.KubeletDir, "pods", podUID, "volumes", "kubernetes.io~csi") + "/"
	rest, ok := strings.CutPrefix(target, prefix)
	name, tail, _ := strings.Cut(rest, "/")
	if !ok || name == "" || name == "." || name == ".." || tail != "mount" {
		return status.Errorf(codes.InvalidArgument,
			"target_path: %q is not %s<volume>/mount for the pod's uid", target, prefix)
	}
	return nil
}

// checkUnpublishTarget applies publish's layout check to an unpublish,
// which carries no pod: the uid is the target's own pods/<uid> component
// and must be a UUID.
func (d *Driver) checkUnpublishTarget(target string) error {
	if d.cfg.KubeletDir == "" {
		return nil
	}
	rest, _ := strings.CutPrefix(target, filepath.Join(d.cfg.KubeletDir, "pods")+"/")
	uid, _, _ := strings.Cut(rest, "/")
	if !attributes.IsUUID(uid) {
		return status.Errorf(codes.InvalidArgument, "target_path: %q is not %s/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount",
			target, d.cfg.KubeletDir)
	}
	return d.checkTarget(target, uid)
}

// openTarget resolves the target with no symlink in any component (beneath
// --kubelet-dir when set, else from /): only its last component was ever
// checked before, so a link at pods/<uid> or above redirected the mount.
func (d *Driver) openTarget(target string) (*tmpfs.Target, error) {
	tg, err := tmpfs.Resolve(d.cfg.KubeletDir, target)
	switch {
	case err == nil:
		return tg, nil
	case errors.Is(err, tmpfs.ErrSymlink):
		return nil, status.Errorf(codes.InvalidArgument, "target_path: %q: %v (a symlink is never followed)", target, err)
	case errors.Is(err, tmpfs.ErrOutside):
		return nil, status.Errorf(codes.InvalidArgument, "target_path: %q is not below --kubelet-dir %s", target, d.cfg.KubeletDir)
	case errors.Is(err, tmpfs.ErrNotDir):
		return nil, status.Errorf(codes.InvalidArgument, "target_path: %q: %v", target, err)
	case errors.Is(err, os.ErrNotExist):
		return nil, status.Errorf(codes.NotFound, "target_path: parent of %q does not exist (kubelet creates it)", target)
	}
	return nil, status.Errorf(codes.Internal, "target_path: %v", err)
}

// requestHash identifies what a volume asks for, excluding the token
// kubelet refreshes on each call.
func requestHash(v *attributes.Volume, gid int) string {
	r := v.Request
	// The field names are the hash's input (recorded in every volume's
	// state): renaming one would make every volume fetch once more.
	b, _ := json.Marshal(struct { //nolint:musttag // see above

		Role, AuthMount, NS string
		Secrets             []provider.SecretSpec
		Pod                 provider.Identity
		GID                 int
		Period              time.Duration
	}{r.Role, r.AuthMount, r.VaultNamespace, r.Secrets, r.Pod, gid, v.RotationPeriod})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// checkOwnTarget lets an unpublish touch only what a publish makes: a
// tmpfs the driver mounted (source tmpfs.Source), an empty directory, or
// nothing. Anything else (another pod's memory emptyDir, the driver's own
// state dir, a directory with files) is FailedPrecondition, untouched.
// tg is the target through its checked parent; target names it in errors.
func checkOwnTarget(tg *tmpfs.Target, target string) error {
	dir := tg.Path()
	info, err := os.Lstat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return status.Errorf(codes.Internal, "target_path: %v", err)
	case !info.IsDir():
		return status.Errorf(codes.FailedPrecondition, "target_path: %q is not a directory; not a volume of this driver, left as it is", target)
	}
	mounted, err := tg.IsMounted()
	if err != nil {
		return status.Errorf(codes.Internal, "target_path: %v", err)
	}
	if mounted {
		owned, err := tg.Owned()
		if err != nil {
			return status.Errorf(codes.Internal, "target_path: %v", err)
		}
		if !owned {
			return status.Errorf(codes.FailedPrecondition, "target_path: %q is a mount the driver did not make (not a %s tmpfs); left mounted", target, tmpfs.Source)
		}
		return nil
	}
	f, err := os.Open(dir) //nolint:gosec // dir is the target resolved through the held parent (tmpfs.Resolve)
	if err != nil {
		return status.Errorf(codes.Internal, "target_path: %v", err)
	}
	defer func() { _ = f.Close() }() // read-only
	if names, _ := f.Readdirnames(1); len(names) > 0 {
		return status.Errorf(codes.FailedPrecondition, "target_path: %q is a directory with files, not a volume the driver mounted; left as it is", target)
	}
	return nil
}
