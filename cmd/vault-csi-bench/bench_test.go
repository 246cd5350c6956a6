package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vaultcsi.dev/driver/driver/csitest"
	"vaultcsi.dev/driver/driver/rawsock"
)

func TestDurationList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []time.Duration
		bad  bool
	}{
		{in: "", want: nil},
		{in: "0,5ms,20ms", want: []time.Duration{0, 5 * time.Millisecond, 20 * time.Millisecond}},
		{in: "0", want: []time.Duration{0}},
		{in: "5", bad: true},
		{in: "-1ms", bad: true},
		{in: "2s", bad: true},
	} {
		got, err := durationList(tc.in, time.Second)
		if (err != nil) != tc.bad {
			t.Errorf("%q: err %v, want bad=%v", tc.in, err, tc.bad)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("%q: got %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%q: got %v, want %v", tc.in, got, tc.want)
			}
		}
	}
}

func TestCompare(t *testing.T) {
	for _, tc := range []struct {
		name       string
		drv, floor latStats
		want       floorRatio
	}{
		{"driver over floor", latStats{N: 1, P50: 6, P99: 9}, latStats{N: 1, P50: 2, P99: 3}, floorRatio{RatioP50: 3, RatioP99: 3, OverP50Ms: 4, OverP99Ms: 6}},
		{"no floor", latStats{N: 1, P50: 6, P99: 9}, latStats{}, floorRatio{}},
		{"no driver", latStats{}, latStats{N: 1, P50: 2, P99: 3}, floorRatio{}},
	} {
		if got := compare(tc.drv, tc.floor); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// The proxy must deliver every byte in order both ways and pass a
// half-close through (HTTP clients and Vault rely on both), and stop
// must close what it holds.
func TestLatencyProxyIntegrity(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // echo server: echoes until the client half-closes
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	p, err := startLatencyProxy(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p.setRTT(2 * time.Millisecond)
	c, err := net.Dial("tcp", p.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 1<<20)
	_, _ = rand.Read(want)
	go func() {
		_, _ = c.Write(want)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echo through the proxy: %d bytes back, want %d identical", len(got), len(want))
	}
	c.Close()
	p.stop()
	p.mu.Lock()
	left := len(p.conns)
	p.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d connections left after stop", left)
	}
}

func TestCPUSecondsSelf(t *testing.T) {
	pid := os.Getpid()
	a, ok := cpuSeconds(pid)
	if !ok {
		t.Fatal("cpuSeconds(self) unavailable")
	}
	x := 0
	for i := 0; i < 50_000_000; i++ { // burn some CPU
		x += i
	}
	_ = x
	b, _ := cpuSeconds(pid)
	if b <= a {
		t.Fatalf("CPU clock did not advance: %v -> %v", a, b)
	}
}

func TestParseFlagsAuthAndLatency(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
		auth    string
		rtts    int
	}{
		{args: nil, auth: authJWT},
		{args: []string{"--auth", "kubernetes", "--vault-latency", "0,5ms,20ms"}, auth: authKubernetes, rtts: 3},
		{args: []string{"--auth", "oidc"}, wantErr: "--auth"},
		{args: []string{"--auth", "kubernetes", "--vault-addr", "http://x", "--vault-token", "t"}, wantErr: "--auth kubernetes"},
		{args: []string{"--vault-latency", "fast"}, wantErr: "--vault-latency"},
	} {
		c, err := parseFlags(tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err %v, want one naming %s", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if c.auth != tc.auth || len(c.latencies) != tc.rtts {
			t.Errorf("%v: auth %q, %d rtts; want %q, %d", tc.args, c.auth, len(c.latencies), tc.auth, tc.rtts)
		}
	}
}

// The connection-floor server answers kubelet's calls as a CSI driver
// would, on new connections and on one shared connection (stream ids patched
// into the canned frames), so the floor's CPU is for the same exchange.
func TestConnFloorServer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "floor.sock")
	l, err := rawsock.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serveConnFloor(l) }()
	defer func() {
		l.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	ctx := context.Background()
	token := `{"vault":{"token":"` + strings.Repeat("x", 2000) + `"}}` // as long as a real one
	req := csitest.Publish{VolumeID: "v", Target: "/t", Tokens: token, TokenInSecrets: true}.Request()
	for _, kubelet := range []bool{true, false} {
		cl, err := newCSIClient(sock, kubelet, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for range 40 { // past a 64 KiB window of requests on the shared connection
			ok, err := cl.supportsMountGroup(ctx, kubelet)
			if err != nil || !ok {
				t.Fatalf("kubelet=%v NodeGetCapabilities: %v %v", kubelet, ok, err)
			}
			if _, err := cl.publish(ctx, kubelet, req); err != nil {
				t.Fatalf("kubelet=%v NodePublishVolume: %v", kubelet, err)
			}
		}
		cl.close()
	}
}

// The no-change re-publish sends the publish's token by default, as
// kubelet's token manager does until 80% of the token's TTL; fresh makes
// every call a renewal.
func TestParseFlagsRepublishToken(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    string
		wantErr bool
	}{
		{args: nil, want: repubSame},
		{args: []string{"--republish-token", "fresh"}, want: repubFresh},
		{args: []string{"--republish-token", "new"}, wantErr: true},
	} {
		c, err := parseFlags(tc.args)
		switch {
		case tc.wantErr:
			if err == nil || !strings.Contains(err.Error(), "--republish-token") {
				t.Errorf("%v: err %v, want one naming --republish-token", tc.args, err)
			}
		case err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case c.repubToken != tc.want:
			t.Errorf("%v: %q, want %q", tc.args, c.repubToken, tc.want)
		}
	}
}
