package driver_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// BenchmarkPublish3Secrets is a cold publish of a 3-secret volume (two KV v2
// paths and one KV v1 path; one login + three reads) through the driver
// binary's unix socket, against the real Vault. Unpublish is not timed.
func BenchmarkPublish3Secrets(b *testing.B) {
	d := startDriver(b, "-v=0", "--audit-log=")
	root := b.TempDir()
	reqs := make([]*csi.NodePublishVolumeRequest, b.N)
	for i := range reqs {
		dir := filepath.Join(root, fmt.Sprint(i))
		if err := os.Mkdir(dir, 0o750); err != nil {
			b.Fatal(err)
		}
		reqs[i] = volume{target: filepath.Join(dir, "mount"), pod: shopPod, secrets: threeSecrets, gid: "1000", inSecrets: true}.request()
	}
	ctx := ctxT(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.node.NodePublishVolume(ctx, reqs[i]); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: reqs[i].TargetPath}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkRepublishNothingDue is kubelet's periodic re-publish of a mounted
// volume before anything is due: it must not call Vault.
func BenchmarkRepublishNothingDue(b *testing.B) { benchRepublishNothingDue(b, threeSecrets) }

// benchRepublishNothingDue mounts a volume of these secrets and times
// re-publishes of it with nothing due.
func benchRepublishNothingDue(b *testing.B, secrets string) {
	b.Helper()
	d := startDriver(b, "-v=0", "--audit-log=", "--rotation-period=1h")
	target := newTarget(b)
	req := volume{target: target, pod: shopPod, secrets: secrets, inSecrets: true}.request()
	ctx := ctxT(b)
	if _, err := d.node.NodePublishVolume(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target})
	})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.node.NodePublishVolume(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnpublish times unpublish with token revocation.
func BenchmarkUnpublish(b *testing.B) {
	d := startDriver(b, "-v=0", "--audit-log=")
	root := b.TempDir()
	ctx := ctxT(b)
	targets := make([]string, b.N)
	for i := range targets {
		dir := filepath.Join(root, fmt.Sprint(i))
		if err := os.Mkdir(dir, 0o750); err != nil {
			b.Fatal(err)
		}
		targets[i] = filepath.Join(dir, "mount")
		if _, err := d.node.NodePublishVolume(ctx, volume{target: targets[i], pod: shopPod, secrets: threeSecrets, inSecrets: true}.request()); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: targets[i]}); err != nil {
			b.Fatal(err)
		}
	}
}
