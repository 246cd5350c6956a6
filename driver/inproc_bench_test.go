package driver_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"vaultcsi.dev/driver/driver"
	"vaultcsi.dev/driver/provider"
)

// inProcess runs the driver inside the test binary so that -cpuprofile and
// -memprofile see its code (the binary benchmarks measure what kubelet sees).
func inProcess(b *testing.B, period time.Duration) csi.NodeClient {
	b.Helper()
	conn, err := grpc.NewClient("unix://"+inProcessSocket(b, period), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return csi.NewNodeClient(conn)
}

// onNewConn makes one call on a connection of its own, as kubelet does:
// the connection set-up is part of what the driver pays per call.
func onNewConn(b *testing.B, sock string, call func(csi.NodeClient) error) {
	b.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if err := call(csi.NewNodeClient(conn)); err != nil {
		b.Fatal(err)
	}
}

func inProcessSocket(b *testing.B, period time.Duration) string {
	b.Helper()
	stateDir, err := os.MkdirTemp("/dev/shm", "vcd-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(stateDir) })
	p, err := provider.New(provider.Config{Addr: vaultSrv.Addr, AuthMethod: provider.AuthJWT, AuthMount: vaultSrv.JWTMount})
	if err != nil {
		b.Fatal(err)
	}
	d, err := driver.New(driver.Config{NodeID: "n", StateDir: stateDir, RotationPeriod: period}, p, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sock := filepath.Join(b.TempDir(), "csi.sock")
	done := make(chan struct{})
	go func() { _ = d.Serve(ctx, "unix://"+sock, time.Second); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	<-d.Ready()
	return sock
}

func BenchmarkInProcessRepublish(b *testing.B) {
	node := inProcess(b, time.Hour)
	target := newTarget(b)
	req := volume{target: target, pod: shopPod, secrets: threeSecrets, inSecrets: true}.request()
	ctx := context.Background()
	if _, err := node.NodePublishVolume(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target})
	})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := node.NodePublishVolume(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInProcessPublish3Secrets(b *testing.B) {
	node := inProcess(b, time.Hour)
	root := b.TempDir()
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir, _ := os.MkdirTemp(root, "p")
		req := volume{target: filepath.Join(dir, "mount"), pod: shopPod, secrets: threeSecrets, gid: "1000", inSecrets: true}.request()
		b.StartTimer()
		if _, err := node.NodePublishVolume(ctx, req); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_, _ = node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: req.TargetPath})
		b.StartTimer()
	}
}

// BenchmarkInProcessRepublishKubelet is BenchmarkInProcessRepublish on a new
// connection per call: what a not-due re-publish costs the driver when
// kubelet makes it.
func BenchmarkInProcessRepublishKubelet(b *testing.B) {
	sock := inProcessSocket(b, time.Hour)
	target := newTarget(b)
	req := volume{target: target, pod: shopPod, secrets: threeSecrets, inSecrets: true}.request()
	ctx := context.Background()
	publish := func(n csi.NodeClient) error { _, err := n.NodePublishVolume(ctx, req); return err }
	onNewConn(b, sock, publish)
	b.Cleanup(func() {
		onNewConn(b, sock, func(n csi.NodeClient) error {
			_, err := n.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target})
			return err
		})
	})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		onNewConn(b, sock, publish)
	}
}
