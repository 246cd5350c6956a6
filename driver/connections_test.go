package driver_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// http2Hello is an HTTP/2 client's connection preface followed by an empty
// SETTINGS frame (length 0, type 4, no flags, stream 0): all a client must
// send before the server treats the connection as established.
var http2Hello = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

// kubeletCall makes one call on a connection of its own, as kubelet does.
func kubeletCall(t *testing.T, socket string, call func(ctx context.Context, node csi.NodeClient) error) error {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return call(ctx, csi.NewNodeClient(conn))
}

// A client that opens 1,300 connections and keeps them idle can neither
// grow the driver without bound nor lock kubelet out: the driver holds at
// most --max-connections (the longest-idle one makes room for a new one),
// closes idle ones after --max-connection-idle, and a kubelet-style
// publish on a new connection still goes through.
func TestIdleConnectionsBounded(t *testing.T) {
	const (
		maxConns = 64
		hostile  = 1300
	)
	d := startObservedDriver(t, vaultSrv, "--max-connections=64", "--max-connection-idle=2s", "-v=2")
	goroutines := func() float64 { return d.scrape(t).value("go_goroutines", nil) }
	base := goroutines()
	// Per held connection the CSI server runs one goroutine (grpc-go ran
	// three: reader, writer, keepalive); 50 more for scrapes and calls.
	bound := base + maxConns + 50

	// Half speak HTTP/2 (preface and SETTINGS) and then never read or
	// answer; half send nothing at all.
	var closed atomic.Int32
	var wg sync.WaitGroup
	conns := make([]net.Conn, 0, hostile)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})
	for i := 0; i < hostile; i++ {
		c, err := net.Dial("unix", d.socket)
		if err != nil {
			t.Fatalf("dial #%d: %v", i, err)
		}
		conns = append(conns, c)
		if i%2 == 0 {
			if _, err := c.Write(http2Hello); err != nil {
				t.Fatalf("preface #%d: %v", i, err)
			}
		}
	}
	// Only now watch for the server closing them (reading does not answer
	// pings, so these stay as unhelpful as a client can be).
	for _, c := range conns {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			_, _ = io.Copy(io.Discard, c)
			closed.Add(1)
		}(c)
	}

	peak := goroutines()
	target := newTarget(t)
	floodStart := time.Now()
	if err := kubeletCall(t, d.socket, func(ctx context.Context, node csi.NodeClient) error {
		_, err := node.NodePublishVolume(ctx, volume{target: target, pod: shopPod, secrets: threeSecrets}.request())
		return err
	}); err != nil {
		t.Fatalf("publish on a new connection while %d are held idle: %v", hostile, err)
	}
	publishedAfter := time.Since(floodStart)
	if g := goroutines(); g > peak {
		peak = g
	}

	// Every hostile connection is closed by the server within a bounded
	// poll (at most ~20 rounds of eviction plus the idle timeout).
	for i := 0; i < 600 && int(closed.Load()) < hostile; i++ {
		if g := goroutines(); g > peak {
			peak = g
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("goroutines: %.0f before, peak %.0f with %d connections held (bound %.0f); publish done after %v; %d/%d closed by the server after %v",
		base, peak, hostile, bound, publishedAfter.Round(time.Millisecond), closed.Load(), hostile, time.Since(floodStart).Round(100*time.Millisecond))
	if peak > bound {
		t.Errorf("driver ran %.0f goroutines with %d idle connections open; want <= %.0f", peak, hostile, bound)
	}
	if n := closed.Load(); n < hostile {
		t.Errorf("only %d of %d idle connections were closed by the server", n, hostile)
	}

	// kubelet's pattern keeps working: unpublish and publish again, each on
	// a new connection.
	for i, call := range []func(ctx context.Context, node csi.NodeClient) error{
		func(ctx context.Context, node csi.NodeClient) error {
			_, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target})
			return err
		},
		func(ctx context.Context, node csi.NodeClient) error {
			_, err := node.NodePublishVolume(ctx, volume{target: target, pod: shopPod, secrets: threeSecrets}.request())
			return err
		},
		func(ctx context.Context, node csi.NodeClient) error {
			_, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target})
			return err
		},
	} {
		if err := kubeletCall(t, d.socket, call); err != nil {
			t.Fatalf("call %d after the flood: %v", i, err)
		}
	}
	// Idle connections gone, the goroutines are back near the start.
	var after float64
	for i := 0; i < 100; i++ {
		if after = goroutines(); after <= base+20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if after > base+20 {
		t.Errorf("goroutines %.0f after the connections closed, %.0f before", after, base)
	}
}
