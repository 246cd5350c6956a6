// Package tmpfs mounts and unmounts the size-limited in-memory file systems
// that hold a volume's secrets, so nothing a pod reads ever touches disk.
package tmpfs

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Source is the mount source shown in mount tables for our volumes.
const Source = "vault-csi"

const tmpfsMagic = 0x01021994

// Options of one mount.
type Options struct {
	SizeBytes int64
	Inodes    int
	// GID, when >= 0, owns the mount's root directory (mode 0750);
	// otherwise the root is 0755 and root-owned.
	GID int
}

// Mount mounts a tmpfs at target with nosuid, nodev and noexec. It calls
// mount(2) directly: exec'ing mount(8) would cost milliseconds per publish.
func Mount(target string, o Options) error {
	data := fmt.Sprintf("size=%d,nr_inodes=%d,mode=0755", o.SizeBytes, o.Inodes)
	if o.GID >= 0 {
		data = fmt.Sprintf("size=%d,nr_inodes=%d,mode=0750,uid=0,gid=%d", o.SizeBytes, o.Inodes, o.GID)
	}
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC)
	if err := syscall.Mount(Source, target, "tmpfs", flags, data); err != nil {
		return fmt.Errorf("mount tmpfs at %s: %w", target, err)
	}
	return nil
}

// IsMounted reports whether target is the root of a tmpfs mount. It uses two
// stat calls rather than reading the mount table, which grows with volumes.
func IsMounted(target string) (bool, error) {
	target = filepath.Clean(target) // "dir/" must not compare dir with itself
	var fs syscall.Statfs_t
	if err := syscall.Statfs(target, &fs); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("statfs %s: %w", target, err)
	}
	if fs.Type != tmpfsMagic {
		return false, nil
	}
	var self, parent syscall.Stat_t
	if err := syscall.Lstat(target, &self); err != nil {
		return false, fmt.Errorf("stat %s: %w", target, err)
	}
	if err := syscall.Stat(filepath.Dir(target), &parent); err != nil {
		return false, fmt.Errorf("stat parent of %s: %w", target, err)
	}
	// Every tmpfs instance has its own anonymous device: a root differs
	// from its parent's, a plain directory inside a tmpfs does not.
	return self.Dev != parent.Dev, nil
}

// Unmount unmounts target if it is mounted and leaves the directory. A
// symlink put at target after the check is not followed (UMOUNT_NOFOLLOW).
func Unmount(target string) error {
	mounted, err := IsMounted(target)
	if err != nil || !mounted {
		return err
	}
	return unmount(target)
}

// unmount unmounts a target known to be mounted, detaching a busy one.
func unmount(target string) error {
	if err := syscall.Unmount(target, unix.UMOUNT_NOFOLLOW); err != nil {
		if errors.Is(err, syscall.EBUSY) {
			// Detach: kubelet has already unmounted the pod's bind mount, so
			// a busy tmpfs means a late reader; it goes away with that reader.
			if err2 := syscall.Unmount(target, syscall.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err2 == nil {
				return nil
			}
		}
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}
