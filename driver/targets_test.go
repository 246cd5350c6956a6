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

	"vaultcsi.dev/driver/provider/vaulttest"
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

// NodeUnpublishVolume unmounts only a tmpfs the driver made, at a target
// that passes publish's layout check; anything else is refused and left
// as it is (it unmounted another pod's memory emptyDir before).
func TestUnpublishOnlyOwnVolumes(t *testing.T) {
	kubelet := t.TempDir()
	d := startDriver(t, "--kubelet-dir="+kubelet)
	other := vaulttest.PodUID("shop/web-0")

	emptyDir := filepath.Join(kubelet, "pods", other, "volumes", "kubernetes.io~empty-dir", "cache")
	mountForeign(t, emptyDir)
	foreignAtCSI := kubeletTarget(kubelet, other, "foreign")
	mountForeign(t, foreignAtCSI)
	plainDir := kubeletTarget(kubelet, other, "plain")
	if err := os.MkdirAll(plainDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(plainDir, "data"), []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "mount")
	mountForeign(t, outside)

	for _, tt := range []struct {
		name, target string
		code         codes.Code
		mounted      bool
	}{
		{"foreign tmpfs at a kubelet-shaped target", foreignAtCSI, codes.FailedPrecondition, true},
		{"plain directory with files", plainDir, codes.FailedPrecondition, false},
		{"another pod's memory emptyDir", emptyDir, codes.InvalidArgument, true},
		{"a target outside the kubelet dir", outside, codes.InvalidArgument, true},
		{"the driver's state dir", d.stateDir, codes.InvalidArgument, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: tt.target})
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), "target_path") {
				t.Fatalf("err = %v, want %v naming target_path", err, tt.code)
			}
			if tt.target != d.stateDir {
				assertUntouched(t, tt.target, tt.mounted)
			}
		})
	}

	// A kubelet-shaped target that is gone (or never was) succeeds.
	for _, gone := range []string{kubeletTarget(kubelet, other, "never"), kubeletTarget(kubelet, vaulttest.PodUID("gone"), "v")} {
		if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: gone}); err != nil {
			t.Errorf("unpublish of unknown %s: %v", gone, err)
		}
	}

	// The driver's own volume still unmounts, and an empty target dir
	// (kubelet's, after a failed publish) is removed.
	own := kubeletTarget(kubelet, shopPod.PodUID, "secrets")
	if err := os.MkdirAll(filepath.Dir(own), 0o750); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(own, syscall.MNT_DETACH) })
	if _, err := d.node.NodePublishVolume(ctxT(t), volume{target: own, pod: shopPod, secrets: threeSecrets}.request()); err != nil {
		t.Fatalf("publish: %v", err)
	}
	empty := kubeletTarget(kubelet, shopPod.PodUID, "empty")
	if err := os.MkdirAll(empty, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{own, empty} {
		if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
			t.Fatalf("unpublish %s: %v", target, err)
		}
		if _, err := os.Lstat(target); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", target, err)
		}
	}
}

// Without --kubelet-dir there is no layout to check, but the driver still
// unmounts only its own tmpfs: its state dir (here a tmpfs mount of its
// own, as a memory emptyDir in the DaemonSet) is refused and left alone.
func TestUnpublishRefusesStateDir(t *testing.T) {
	stateDir := filepath.Join(t.TempDir(), "state")
	mountForeign(t, stateDir)
	d := startDriver(t, "--state-dir="+stateDir)
	target := newTarget(t)
	if _, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: shopPod, secrets: threeSecrets}.request()); err != nil {
		t.Fatalf("publish: %v", err)
	}
	records := func() int {
		entries, err := os.ReadDir(stateDir)
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	before := records()
	_, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: stateDir})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("unpublish of the state dir: %v, want FailedPrecondition", err)
	}
	assertUntouched(t, stateDir, true)
	if after := records(); after != before || before < 2 {
		t.Errorf("state dir entries %d -> %d (want the volume's record kept)", before, after)
	}
	// A plain directory with files is refused too.
	plain := t.TempDir()
	if err := os.WriteFile(filepath.Join(plain, "data"), []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: plain}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("unpublish of a plain dir with files: %v, want FailedPrecondition", err)
	}
	assertUntouched(t, plain, false)
	unpublish(t, d, target)
}

// A symlink at any component of the target (not only the last) is refused
// before any Vault call, for publish and unpublish, and nothing is mounted
// or written where the link points.
func TestTargetSymlinkAnyComponent(t *testing.T) {
	kubelet := t.TempDir()
	d := startObservedDriver(t, vaultSrv, "--kubelet-dir="+kubelet)
	target := kubeletTarget(kubelet, shopPod.PodUID, "secrets")
	for _, tt := range []struct {
		name string
		link string // the component replaced by a symlink to a copy of it elsewhere
	}{
		{"pods/<uid>", filepath.Join(kubelet, "pods", shopPod.PodUID)},
		{"volumes/kubernetes.io~csi", filepath.Join(kubelet, "pods", shopPod.PodUID, "volumes", "kubernetes.io~csi")},
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
