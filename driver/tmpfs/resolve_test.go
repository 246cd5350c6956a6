package tmpfs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// layout makes root/pods/uid/volumes/csi/name (kubelet's shape) and
// returns root and the target below it.
func layout(t *testing.T) (root, target string) {
	t.Helper()
	root = t.TempDir()
	dir := filepath.Join(root, "pods", "uid", "volumes", "csi", "name")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	return root, filepath.Join(dir, "mount")
}

// swapForLink replaces dir with a symlink to a copy of its tree elsewhere,
// so that following the link would find the same layout outside.
func swapForLink(t *testing.T, dir string, absolute bool) {
	t.Helper()
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.Rename(dir, outside); err != nil {
		t.Fatal(err)
	}
	link := outside
	if !absolute {
		rel, err := filepath.Rel(filepath.Dir(dir), outside)
		if err != nil {
			t.Fatal(err)
		}
		link = rel
	}
	if err := os.Symlink(link, dir); err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	for _, walk := range []bool{false, true} {
		name := map[bool]string{false: "openat2", true: "walk"}[walk]
		t.Run(name, func(t *testing.T) {
			forceWalk = walk
			t.Cleanup(func() { forceWalk = false })
			tests := []struct {
				name    string
				setup   func(t *testing.T, root, target string) (useRoot, useTarget string)
				wantErr error
			}{
				{"kubelet layout", func(t *testing.T, root, target string) (string, string) { return root, target }, nil},
				{"target exists as a dir", func(t *testing.T, root, target string) (string, string) {
					if err := os.Mkdir(target, 0o750); err != nil {
						t.Fatal(err)
					}
					return root, target
				}, nil},
				{"no root: resolved from /", func(t *testing.T, root, target string) (string, string) { return "", target }, nil},
				{"root is itself a link (admin's config)", func(t *testing.T, root, target string) (string, string) {
					link := filepath.Join(t.TempDir(), "kubelet")
					if err := os.Symlink(root, link); err != nil {
						t.Fatal(err)
					}
					rel, _ := filepath.Rel(root, target)
					return link, filepath.Join(link, rel)
				}, nil},
				{"symlink at pods/<uid>", func(t *testing.T, root, target string) (string, string) {
					swapForLink(t, filepath.Join(root, "pods", "uid"), true)
					return root, target
				}, ErrSymlink},
				{"relative symlink at volumes/csi", func(t *testing.T, root, target string) (string, string) {
					swapForLink(t, filepath.Join(root, "pods", "uid", "volumes", "csi"), false)
					return root, target
				}, ErrSymlink},
				{"symlink at the volume name", func(t *testing.T, root, target string) (string, string) {
					swapForLink(t, filepath.Dir(target), true)
					return root, target
				}, ErrSymlink},
				{"symlink to a dir inside the root", func(t *testing.T, root, target string) (string, string) {
					inside := filepath.Join(root, "inside")
					if err := os.Rename(filepath.Join(root, "pods"), inside); err != nil {
						t.Fatal(err)
					}
					if err := os.Symlink("inside", filepath.Join(root, "pods")); err != nil {
						t.Fatal(err)
					}
					return root, target
				}, ErrSymlink},
				{"symlink as the target", func(t *testing.T, root, target string) (string, string) {
					if err := os.Symlink(t.TempDir(), target); err != nil {
						t.Fatal(err)
					}
					return root, target
				}, ErrSymlink},
				{"no root: symlink above", func(t *testing.T, root, target string) (string, string) {
					swapForLink(t, filepath.Join(root, "pods"), true)
					return "", target
				}, ErrSymlink},
				{"outside the root", func(t *testing.T, root, target string) (string, string) {
					return root, filepath.Join(t.TempDir(), "mount")
				}, ErrOutside},
				{"the root itself", func(t *testing.T, root, target string) (string, string) { return root, root }, ErrOutside},
				{"a sibling with the root as prefix", func(t *testing.T, root, target string) (string, string) {
					return root, root + "x/mount"
				}, ErrOutside},
				{"parent missing", func(t *testing.T, root, target string) (string, string) {
					return root, filepath.Join(root, "pods", "other", "mount")
				}, os.ErrNotExist},
				{"component is a file", func(t *testing.T, root, target string) (string, string) {
					f := filepath.Join(root, "pods", "file")
					if err := os.WriteFile(f, nil, 0o600); err != nil {
						t.Fatal(err)
					}
					return root, filepath.Join(f, "x", "mount")
				}, ErrNotDir},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					root, target := layout(t)
					r, tg := tt.setup(t, root, target)
					got, err := Resolve(r, tg)
					if tt.wantErr != nil {
						if !errors.Is(err, tt.wantErr) {
							t.Fatalf("Resolve = %v, want %v", err, tt.wantErr)
						}
						return
					}
					if err != nil {
						t.Fatalf("Resolve: %v", err)
					}
					defer got.Close()
					// Path reaches the same directory entry as the checked path.
					var a, b syscall.Stat_t
					if err := syscall.Stat(filepath.Dir(got.Path()), &a); err != nil {
						t.Fatal(err)
					}
					if err := syscall.Stat(filepath.Dir(tg), &b); err != nil {
						t.Fatal(err)
					}
					if a.Ino != b.Ino || a.Dev != b.Dev {
						t.Errorf("Path %s is not the parent of %s", got.Path(), tg)
					}
				})
			}
		})
	}
	if _, err := Resolve("", "relative/mount"); err == nil {
		t.Error("relative target accepted")
	}
	if _, err := Resolve("", "/a/../b"); err == nil {
		t.Error("unclean target accepted")
	}
}

// A parent directory swapped for a symlink after Resolve cannot redirect
// Mkdir, Mount or writes: they act on the directory that was checked.
func TestResolveHoldsTheCheckedDirectory(t *testing.T) {
	root, target := layout(t)
	tg, err := Resolve(root, target)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	volDir := filepath.Dir(target)
	// The attacker moves the checked dir away and links its name elsewhere.
	moved := filepath.Join(root, "moved")
	if err := os.Rename(volDir, moved); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	if err := os.Symlink(elsewhere, volDir); err != nil {
		t.Fatal(err)
	}
	if err := tg.Mkdir(0o750); err != nil {
		t.Fatalf("Mkdir: %v", err)
	}
	if err := tg.Mount(Options{SizeBytes: 1 << 20, Inodes: 64, GID: -1}); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	mounted := filepath.Join(moved, "mount")
	t.Cleanup(func() { _ = syscall.Unmount(mounted, syscall.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(tg.Path(), "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, err := IsMounted(mounted); err != nil || !ok {
		t.Errorf("the checked dir %s is not mounted: %v %v", mounted, ok, err)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("something landed behind the swapped-in symlink: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(mounted, "f")); err != nil {
		t.Errorf("write did not land in the tmpfs: %v", err)
	}
	if err := Unmount(tg.Path()); err != nil {
		t.Fatalf("Unmount through Path: %v", err)
	}
	if ok, _ := IsMounted(mounted); ok {
		t.Error("still mounted after Unmount(Path())")
	}
	if err := tg.Remove(); err != nil {
		t.Errorf("Remove: %v", err)
	}
	if _, err := os.Lstat(mounted); !os.IsNotExist(err) {
		t.Errorf("target dir still there: %v", err)
	}
}
