package tmpfs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Owned tells the driver's own volumes from every other mount, on real
// mounts: the other tmpfs a node has (memory emptyDirs, the state dir), bind
// mounts, stacked mounts and plain directories.
func TestOwned(t *testing.T) {
	foreign := func(t *testing.T, target string) {
		t.Helper()
		if err := syscall.Mount("tmpfs", target, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) string
		want  bool
	}{
		{"our tmpfs", func(t *testing.T) string { return mountT(t, Options{SizeBytes: 1 << 20, Inodes: 64, GID: -1}) }, true},
		{"our tmpfs, a space in the path", func(t *testing.T) string {
			target := filepath.Join(t.TempDir(), "a b", "mount")
			if err := os.MkdirAll(target, 0o750); err != nil {
				t.Fatal(err)
			}
			if err := Mount(target, Options{SizeBytes: 1 << 20, Inodes: 64, GID: -1}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Unmount(target, syscall.MNT_DETACH) })
			return target
		}, true},
		{"a memory emptyDir (source tmpfs)", func(t *testing.T) string {
			target := filepath.Join(t.TempDir(), "mount")
			if err := os.Mkdir(target, 0o750); err != nil {
				t.Fatal(err)
			}
			foreign(t, target)
			t.Cleanup(func() { _ = syscall.Unmount(target, syscall.MNT_DETACH) })
			return target
		}, false},
		{"a plain directory", func(t *testing.T) string { return t.TempDir() }, false},
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, false},
		{"a directory inside our tmpfs", func(t *testing.T) string {
			root := mountT(t, Options{SizeBytes: 1 << 20, Inodes: 64, GID: -1})
			sub := filepath.Join(root, "sub")
			if err := os.Mkdir(sub, 0o750); err != nil {
				t.Fatal(err)
			}
			return sub
		}, false},
		{"a bind mount of a directory inside our tmpfs", func(t *testing.T) string {
			root := mountT(t, Options{SizeBytes: 1 << 20, Inodes: 64, GID: -1})
			sub := filepath.Join(root, "sub")
			target := filepath.Join(t.TempDir(), "bind")
			for _, d := range []string{sub, target} {
				if err := os.Mkdir(d, 0o750); err != nil {
					t.Fatal(err)
				}
			}
			if err := syscall.Mount(sub, target, "", syscall.MS_BIND, ""); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Unmount(target, syscall.MNT_DETACH) })
			return target
		}, false},
		{"another tmpfs stacked on ours", func(t *testing.T) string {
			target := mountT(t, Options{SizeBytes: 1 << 20, Inodes: 64, GID: -1})
			foreign(t, target)
			return target
		}, false},
		{"ours stacked on another tmpfs", func(t *testing.T) string {
			target := filepath.Join(t.TempDir(), "mount")
			if err := os.Mkdir(target, 0o750); err != nil {
				t.Fatal(err)
			}
			foreign(t, target)
			if err := Mount(target, Options{SizeBytes: 1 << 20, Inodes: 64, GID: -1}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = syscall.Unmount(target, syscall.MNT_DETACH)
				_ = syscall.Unmount(target, syscall.MNT_DETACH)
			})
			return target
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := tt.setup(t)
			got, err := Owned(target)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Owned(%s) = %v, want %v", target, got, tt.want)
			}
			// A trailing slash names the same directory.
			if got, _ := Owned(target + "/"); got != tt.want {
				t.Errorf("Owned(%s/) = %v, want %v", target, got, tt.want)
			}
		})
	}
}

// The parser alone, on table lines the kernel writes.
func TestOwnedIn(t *testing.T) {
	const (
		ours    = `900 30 0:99 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount rw,nosuid,nodev,noexec,relatime shared:500 - tmpfs vault-csi rw,size=16842752k,nr_inodes=1088,mode=750,gid=1000`
		theirs  = `901 900 0:100 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount rw,relatime - tmpfs tmpfs rw,size=1024k`
		spaced  = `902 30 0:101 / /tmp/a\040b/mount rw shared:9 master:2 - tmpfs vault-csi rw`
		bindSub = `903 30 0:99 /sub /tmp/bind rw - tmpfs vault-csi rw`
	)
	target := "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount"
	tests := []struct {
		name   string
		table  string
		target string
		want   bool
	}{
		{"ours", ours, target, true},
		{"ours then another on top", ours + "\n" + theirs, target, false},
		{"another then ours on top", theirs + "\n" + ours, target, true},
		{"escaped space", spaced, "/tmp/a b/mount", true},
		{"bind of a subdirectory", bindSub, "/tmp/bind", false},
		{"not in the table", ours, "/elsewhere", false},
		{"a prefix of a mount point", ours, "/var/lib/kubelet/pods/u", false},
		{"garbage lines", "junk\n\n" + ours + "\nmore junk - x", target, true},
	}
	for _, tt := range tests {
		got, err := ownedIn(strings.NewReader(tt.table), tt.target)
		if err != nil || got != tt.want {
			t.Errorf("%s: ownedIn = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	for in, want := range map[string]string{`a\040b`: "a b", `a\134b`: `a\b`, `tab\011`: "tab\t", `odd\04`: `odd\04`, `plain`: "plain", `\999`: `\999`} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
