package tmpfs

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// mountAt mounts fstype with source at a new dir under the test's temp dir
// and unmounts it when the test ends.
func mountAt(t *testing.T, dir, source, fstype string, flags uintptr, data string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(source, dir, fstype, flags, data); err != nil {
		t.Fatalf("mount %s at %s: %v", fstype, dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

func TestOwned(t *testing.T) {
	base := t.TempDir()
	ours := mountT(t, Options{SizeBytes: 1 << 20, Inodes: 64, GID: -1})
	if err := os.Mkdir(filepath.Join(ours, "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	emptyDir := mountAt(t, filepath.Join(base, "emptydir"), "tmpfs", "tmpfs", 0, "size=1m")
	ramfs := mountAt(t, filepath.Join(base, "ramfs"), Source, "ramfs", 0, "")
	bindSub := mountAt(t, filepath.Join(base, "bind"), filepath.Join(ours, "sub"), "", syscall.MS_BIND, "")
	stacked := mountT(t, Options{SizeBytes: 1 << 20, Inodes: 64, GID: -1})
	mountAt(t, stacked, "tmpfs", "tmpfs", 0, "size=1m")
	plain := filepath.Join(base, "plain")
	if err := os.Mkdir(plain, 0o750); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(ours, link); err != nil {
		t.Fatal(err)
	}
	parentFD, err := unix.Open(filepath.Dir(ours), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(parentFD)

	for _, tt := range []struct {
		name, target string
		want         bool
	}{
		{"the driver's tmpfs", ours, true},
		{"the same through /proc/self/fd", "/proc/self/fd/" + strconv.Itoa(parentFD) + "/mount", true},
		{"a directory inside it", filepath.Join(ours, "sub"), false},
		{"a memory emptyDir (source tmpfs)", emptyDir, false},
		{"source vault-csi but not tmpfs", ramfs, false},
		{"a bind mount of a directory in it", bindSub, false},
		{"a foreign tmpfs stacked on ours", stacked, false},
		{"a plain directory", plain, false},
		{"a symlink to ours", link, false},
		{"missing", filepath.Join(base, "missing"), false},
		{"/dev/shm (a tmpfs the system made)", "/dev/shm", false},
	} {
		got, err := Owned(tt.target)
		if err != nil || got != tt.want {
			t.Errorf("%s: Owned(%s) = %v, %v; want %v", tt.name, tt.target, got, err, tt.want)
		}
		// Through a held parent, where Resolve takes the path (no link in it).
		if tg, err := Resolve("", tt.target); err == nil {
			if got, err := tg.Owned(); err != nil || got != tt.want {
				t.Errorf("%s: Target.Owned = %v, %v; want %v", tt.name, got, err, tt.want)
			}
			tg.Close()
		}
		// Both ways of asking give that answer: statmount where the kernel
		// has it, the mount table where it does not.
		fd, err := unix.Open(tt.target, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // missing, a link: Owned stops before either way
		}
		parent, err := unix.Openat(fd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ownedByMountinfo(fd, parent); err != nil || got != tt.want {
			t.Errorf("%s: by mountinfo = %v, %v; want %v", tt.name, got, err, tt.want)
		}
		got, ok := ownedByStatmount(fd, parent)
		if !ok {
			var uts unix.Utsname
			_ = unix.Uname(&uts)
			need.Missing(t, "statmount(2) with sb_source (Linux 6.12+); kernel %s", unix.ByteSliceToString(uts.Release[:]))
		}
		if got != tt.want {
			t.Errorf("%s: by statmount = %v; want %v", tt.name, got, tt.want)
		}
		unix.Close(parent)
		unix.Close(fd)
	}
}
