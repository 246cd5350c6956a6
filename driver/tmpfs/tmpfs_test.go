package tmpfs

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// mountT mounts a tmpfs under a fresh temp dir and unmounts it (however
// many layers are left) when the test ends.
func mountT(t testing.TB, o Options) string {
	t.Helper()
	need.Root(t, "mounting tmpfs")
	target := filepath.Join(t.TempDir(), "mount")
	if err := os.Mkdir(target, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := Mount(target, o); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	// Registered after TempDir's cleanup, so it runs before the removal.
	t.Cleanup(func() {
		for i := 0; i < 4; i++ {
			if err := syscall.Unmount(target, 0); err != nil {
				if !errors.Is(err, syscall.EINVAL) { // EINVAL: not a mount point
					t.Errorf("cleanup unmount %s: %v", target, err)
				}
				return
			}
		}
	})
	return target
}

type mountEntry struct {
	mountOpts map[string]bool // per-mount options (field 6)
	fsType    string
	source    string
	superOpts map[string]string // per-superblock options (after " - ")
}

// mountinfo finds target in /proc/self/mountinfo; the last entry wins, as
// it is the one on top.
func mountinfo(t *testing.T, target string) (mountEntry, bool) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found mountEntry
	ok := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, cut := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if !cut || len(a) < 6 || len(b) < 3 || a[4] != target {
			continue
		}
		e := mountEntry{mountOpts: map[string]bool{}, fsType: b[0], source: b[1], superOpts: map[string]string{}}
		for _, o := range strings.Split(a[5], ",") {
			e.mountOpts[o] = true
		}
		for _, o := range strings.Split(b[2], ",") {
			k, v, _ := strings.Cut(o, "=")
			e.superOpts[k] = v
		}
		found, ok = e, true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return found, ok
}

func TestMountOptions(t *testing.T) {
	tests := []struct {
		name  string
		o     Options
		mode  os.FileMode
		gid   uint32
		super map[string]string
	}{
		{"with group", Options{SizeBytes: 1 << 20, Inodes: 100, GID: 1234}, 0o750, 1234,
			map[string]string{"size": "1024k", "nr_inodes": "100", "mode": "750", "gid": "1234"}},
		// Without a group the root is world-traversable and root-owned.
		// The kernel omits uid=0/gid=0 from the listing; stat checks them.
		{"without group", Options{SizeBytes: 2 << 20, Inodes: 50, GID: -1}, 0o755, 0,
			map[string]string{"size": "2048k", "nr_inodes": "50", "mode": "755"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := mountT(t, tt.o)
			e, ok := mountinfo(t, target)
			if !ok {
				t.Fatalf("%s not in /proc/self/mountinfo", target)
			}
			if e.fsType != "tmpfs" || e.source != Source {
				t.Errorf("type %q source %q, want tmpfs %q", e.fsType, e.source, Source)
			}
			for _, o := range []string{"nosuid", "nodev", "noexec"} {
				if !e.mountOpts[o] {
					t.Errorf("mount option %s missing: %v", o, e.mountOpts)
				}
			}
			for k, v := range tt.super {
				if e.superOpts[k] != v {
					t.Errorf("superblock option %s=%q, want %q (all: %v)", k, e.superOpts[k], v, e.superOpts)
				}
			}
			var st syscall.Stat_t
			if err := syscall.Stat(target, &st); err != nil {
				t.Fatal(err)
			}
			if os.FileMode(st.Mode).Perm() != tt.mode || st.Gid != tt.gid || st.Uid != 0 {
				t.Errorf("root mode %v uid %d gid %d, want %v 0 %d", os.FileMode(st.Mode).Perm(), st.Uid, st.Gid, tt.mode, tt.gid)
			}
		})
	}
}

func TestMountMissingTarget(t *testing.T) {
	need.Root(t, "mounting tmpfs")
	err := Mount(filepath.Join(t.TempDir(), "missing"), Options{SizeBytes: 1 << 20, Inodes: 10, GID: -1})
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("Mount on a missing dir = %v, want ENOENT", err)
	}
}

func TestSizeLimit(t *testing.T) {
	const size = 256 << 10
	target := mountT(t, Options{SizeBytes: size, Inodes: 100, GID: -1})
	f, err := os.Create(filepath.Join(target, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var written int
	for written <= 2*size {
		n, err := f.Write(chunk)
		written += n
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("write failed with %v, want ENOSPC", err)
			}
			if written > size {
				t.Errorf("wrote %d bytes into a %d-byte tmpfs", written, size)
			}
			return
		}
	}
	t.Fatalf("wrote %d bytes into a %d-byte tmpfs without ENOSPC", written, size)
}

func TestInodeLimit(t *testing.T) {
	// nr_inodes caps file count (the root takes one inode).
	target := mountT(t, Options{SizeBytes: 1 << 20, Inodes: 8, GID: -1})
	for i := 0; i < 16; i++ {
		f, err := os.Create(filepath.Join(target, string(rune('a'+i))))
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("create failed with %v, want ENOSPC", err)
			}
			if i > 8 {
				t.Errorf("created %d files with nr_inodes=8", i)
			}
			return
		}
		f.Close()
	}
	t.Fatal("created 16 files with nr_inodes=8")
}

func TestIsMounted(t *testing.T) {
	target := mountT(t, Options{SizeBytes: 1 << 20, Inodes: 100, GID: -1})
	sub := filepath.Join(target, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	// A tmpfs mounted on a subdir of another tmpfs is still a root.
	nested := filepath.Join(sub, "nested")
	if err := os.Mkdir(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Mount(nested, Options{SizeBytes: 1 << 20, Inodes: 10, GID: -1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(nested, 0) }) // runs before target's
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	// A mount root of another file system (its own device too) is not a tmpfs.
	ramfs := t.TempDir()
	if err := syscall.Mount("ramfs", ramfs, "ramfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(ramfs, 0) })

	tests := []struct {
		name string
		path string
		want bool
	}{
		{"mount root", target, true},
		{"mount root with trailing slash", target + "/", true},
		{"subdir of the mount", sub, false},
		{"tmpfs mounted inside a tmpfs", nested, true},
		{"plain dir", t.TempDir(), false},
		{"missing path", filepath.Join(t.TempDir(), "missing"), false},
		// A symlink to a mount is not itself the mount point: the driver
		// must never mount through or unmount via a link.
		{"symlink to the mount", link, false},
		{"ramfs mount root", ramfs, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := IsMounted(tt.path)
			if err != nil {
				t.Fatalf("IsMounted: %v", err)
			}
			if got != tt.want {
				t.Errorf("IsMounted(%s) = %v, want %v", tt.path, got, tt.want)
			}
			// The same answer through the held parent (Resolve takes clean
			// paths and refuses a link: TestTargetIsMountedLink covers one).
			tg, err := Resolve("", filepath.Clean(tt.path))
			if tt.path == link && errors.Is(err, ErrSymlink) {
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			defer tg.Close()
			if got, err := tg.IsMounted(); err != nil || got != tt.want {
				t.Errorf("Target.IsMounted(%s) = %v, %v; want %v", tt.path, got, err, tt.want)
			}
		})
	}
}

// TestTargetIsMountedLink: a target swapped for a link to a mount after
// Resolve is not a mount.
func TestTargetIsMountedLink(t *testing.T) {
	target := mountT(t, Options{SizeBytes: 1 << 20, Inodes: 100, GID: -1})
	name := filepath.Join(t.TempDir(), "mount")
	tg, err := Resolve("", name)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
	if got, err := tg.IsMounted(); err != nil || got {
		t.Errorf("Target.IsMounted(link to a mount) = %v, %v; want false", got, err)
	}
}

func TestIsMountedPlainTmpfsDir(t *testing.T) {
	// /dev/shm is a tmpfs on most systems: a directory inside it is not a
	// mount even though statfs says tmpfs.
	var fs syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &fs); err != nil || fs.Type != tmpfsMagic {
		need.Missing(t, "/dev/shm is not a tmpfs here")
	}
	dir, err := os.MkdirTemp("/dev/shm", "tmpfs-test-")
	if err != nil {
		need.Missing(t, "a directory in /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if got, err := IsMounted(dir); err != nil || got {
		t.Errorf("IsMounted(dir in /dev/shm) = %v, %v; want false", got, err)
	}
}

func TestUnmount(t *testing.T) {
	target := mountT(t, Options{SizeBytes: 1 << 20, Inodes: 100, GID: -1})
	if err := os.WriteFile(filepath.Join(target, "secret"), []byte("x"), 0o400); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second call finds nothing to do
		if err := Unmount(target); err != nil {
			t.Fatalf("Unmount #%d: %v", i+1, err)
		}
		if m, _ := IsMounted(target); m {
			t.Fatalf("still mounted after Unmount #%d", i+1)
		}
		if _, ok := mountinfo(t, target); ok {
			t.Fatalf("still in mountinfo after Unmount #%d", i+1)
		}
	}
	// The directory stays (kubelet removes it) and the tmpfs content is gone.
	entries, err := os.ReadDir(target)
	if err != nil || len(entries) != 0 {
		t.Errorf("target after Unmount: %v, %v; want an empty dir", entries, err)
	}
	if err := Unmount(filepath.Join(t.TempDir(), "missing")); err != nil {
		t.Errorf("Unmount(missing) = %v", err)
	}
	if err := Unmount(t.TempDir()); err != nil {
		t.Errorf("Unmount(plain dir) = %v", err)
	}
}

func TestUnmountBusy(t *testing.T) {
	// A late reader holding a file open makes umount(2) fail with EBUSY;
	// Unmount then detaches lazily so the target is free at once and the
	// reader keeps its file.
	target := mountT(t, Options{SizeBytes: 1 << 20, Inodes: 100, GID: -1})
	p := filepath.Join(target, "secret")
	if err := os.WriteFile(p, []byte("x"), 0o400); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Unmount(target, 0); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("precondition: plain umount of a busy tmpfs = %v, want EBUSY", err)
	}
	if err := Unmount(target); err != nil {
		t.Fatalf("Unmount of a busy tmpfs: %v", err)
	}
	if m, _ := IsMounted(target); m {
		t.Error("still mounted at target after Unmount")
	}
	buf := make([]byte, 1)
	if _, err := f.ReadAt(buf, 0); err != nil || buf[0] != 'x' {
		t.Errorf("reader lost its open file: %q, %v", buf, err)
	}
}

// Unmount of a symlink to a mount leaves that mount alone.
func TestUnmountDoesNotFollowSymlink(t *testing.T) {
	target := mountT(t, Options{SizeBytes: 1 << 20, Inodes: 64, GID: -1})
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	// A mount root of another file system (its own device too) is not a tmpfs.
	ramfs := t.TempDir()
	if err := syscall.Mount("ramfs", ramfs, "ramfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(ramfs, 0) })
	if err := Unmount(link); err != nil {
		t.Fatalf("Unmount(link): %v", err)
	}
	if m, _ := IsMounted(target); !m {
		t.Error("Unmount followed the symlink")
	}
}
