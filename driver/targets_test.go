package driver_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// kubeletTarget is kubelet's target path for a pod's csi volume.
func kubeletTarget(kubelet, uid, volume string) string {
	return filepath.Join(kubelet, "pods", uid, "volumes", "kubernetes.io~csi", volume, "mount")
}

// mountForeign mounts a tmpfs that is not the driver's (source "tmpfs", as
// a memory emptyDir or the driver's own state dir has) at dir, with a file
// in it, and unmounts it when the test ends.
func mountForeign(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// assertUntouched checks dir is still mounted (if it was) with its file.
func assertUntouched(t *testing.T, dir string, mounted bool) {
	t.Helper()
	if _, _, ok := mountOptions(t, dir); ok != mounted {
		t.Errorf("%s: mounted = %v, want %v", dir, ok, mounted)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "data")); err != nil || string(b) != "keep me" {
		t.Errorf("%s: contents changed: %q, %v", dir, b, err)
	}
}

// A symlink at any component of the target (not only the last) is refused
// before any Vault call, for publish and unpublish, and nothing is mounted
// or written where the link points.
func TestTargetSymlinkAnyComponent(t *testing.T) {
	kubelet := t.TempDir()
	d := startObservedDriver(t, vaultSrv, "--kubelet-dir="+kubelet)
	target := kubeletTarget(kubelet, shopPod.UID, "secrets")
	for _, tt := range []struct {
		name string
		link string // the component replaced by a symlink to a copy of it elsewhere
	}{
		{"pods/<uid>", filepath.Join(kubelet, "pods", shopPod.UID)},
		{"volumes/kubernetes.io~csi", filepath.Join(kubelet, "pods", shopPod.UID, "volumes", "kubernetes.io~csi")},
		{"the volume name", filepath.Dir(target)},
		{"the target itself", target},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.RemoveAll(filepath.Join(kubelet, "pods")); err != nil {
				t.Fatal(err)
			}
			// The same layout elsewhere, reached through the link.
			elsewhere := filepath.Join(t.TempDir(), "elsewhere")
			rel, _ := filepath.Rel(tt.link, target)
			outsideTarget := filepath.Join(elsewhere, rel)
			if err := os.MkdirAll(filepath.Dir(outsideTarget), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(tt.link), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(elsewhere, tt.link); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Unmount(outsideTarget, syscall.MNT_DETACH) })

			before := d.scrape(t).vaultRequests()
			_, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: shopPod, secrets: threeSecrets}.request())
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "symlink") {
				t.Fatalf("publish: %v, want InvalidArgument naming the symlink", err)
			}
			if after := d.scrape(t).vaultRequests(); after != before {
				t.Errorf("%v Vault requests for a symlinked target", after-before)
			}
			if _, _, ok := mountOptions(t, outsideTarget); ok {
				t.Errorf("mounted outside at %s", outsideTarget)
			}
			if tt.link != target {
				if _, err := os.Lstat(outsideTarget); !os.IsNotExist(err) {
					t.Errorf("created %s outside: %v", outsideTarget, err)
				}
			}

			// Unpublish through the link must not unmount what is there.
			mountForeign(t, outsideTarget)
			_, err = d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "symlink") {
				t.Fatalf("unpublish: %v, want InvalidArgument naming the symlink", err)
			}
			assertUntouched(t, outsideTarget, true)
		})
	}
}

// Without --kubelet-dir the target is resolved from / with no symlink in
// any component.
func TestTargetSymlinkAboveWithoutKubeletDir(t *testing.T) {
	d := startDriver(t)
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(link, "mount")
	t.Cleanup(func() { _ = syscall.Unmount(filepath.Join(real, "mount"), syscall.MNT_DETACH) })
	_, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: shopPod, secrets: threeSecrets}.request())
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("publish: %v, want InvalidArgument naming the symlink", err)
	}
	if entries, _ := os.ReadDir(real); len(entries) != 0 {
		t.Errorf("written through the link: %v", entries)
	}
}
