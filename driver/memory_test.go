package driver_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/provider/vaulttest"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// The memory-amplification attack of issue 9: one secret just under the
// 1 MiB per-file limit, and a volume whose 256 files each ask for its whole
// map. The files are refused by the volume limit (256 MiB of pages against
// 8 MiB), but only after the driver rendered them.
const (
	memRole       = "mem-attack"
	memPath       = "secret/data/mem-attack"
	memBlobBytes  = 1<<20 - 64 // the whole map as JSON stays within provider.MaxSecretBytes
	memAttackSize = 256
)

// attackSecrets is the volume's secrets attribute: n files, one path, no key.
func attackSecrets(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "- file: f%03d\n  path: %s\n", i, memPath)
	}
	return b.String()
}

// setupMemAttack writes the big secret and a role that may read it and
// the small db secret (the "normal publish" after the attack).
func setupMemAttack(t *testing.T) {
	t.Helper()
	blob := make([]byte, memBlobBytes)
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	for i := range blob {
		blob[i] = letters[rand.IntN(len(letters))]
	}
	need.Long(t, "publishes through the driver binary against a real Vault")
	c := vaultSrv.Root
	if _, err := c.KVv2("secret").Put(context.Background(), "mem-attack", map[string]any{"blob": string(blob)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Sys().PutPolicy(memRole, vaulttest.ReadPolicy("secret/data/mem-*", "secret/data/db")); err != nil {
		t.Fatal(err)
	}
	if err := vaultSrv.CreateRole(memRole, shopPod.Namespace, shopPod.ServiceAccount, 0, memRole); err != nil {
		t.Fatal(err)
	}
}

// vmHWM is a process's peak resident set size in bytes (/proc/<pid>/status).
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// roleTokens counts the live Vault tokens that logins as role created.
func roleTokens(t *testing.T, role string) int {
	t.Helper()
	c := vaultSrv.Root
	s, err := c.Logical().List("auth/token/accessors")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := s.Data["keys"].([]any)
	n := 0
	for _, k := range keys {
		a, _ := k.(string)
		info, err := c.Logical().Write("auth/token/lookup-accessor", map[string]any{"accessor": a})
		if err != nil {
			continue // revoked between the list and the lookup
		}
		if meta, _ := info.Data["meta"].(map[string]any); meta != nil && meta["role"] == role {
			n++
		}
	}
	return n
}

// The attack, alone and 8 at once, must add less than 64 MiB to the driver
// binary's peak RSS, fail ResourceExhausted, leave nothing mounted and no
// Vault token, and leave the driver able to serve a normal publish.
func TestMemoryAmplificationBounded(t *testing.T) {
	setupMemAttack(t)
	const limit = 64 << 20
	for _, concurrent := range []int{1, 8} {
		t.Run(fmt.Sprintf("%d at once", concurrent), func(t *testing.T) {
			d := startDriver(t, "-v=0", "--audit-log=")
			pid := d.cmd.Process.Pid
			normal := func() {
				t.Helper()
				target := newTarget(t)
				v := volume{target: target, pod: shopPod, role: memRole, secrets: "- file: pw\n  path: secret/data/db\n  key: password\n"}
				if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
					t.Fatalf("normal publish: %v", err)
				}
				if b, err := os.ReadFile(target + "/pw"); err != nil || string(b) != dbPassword {
					t.Fatalf("normal publish wrote %q, %v", b, err)
				}
				if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
					t.Fatalf("normal unpublish: %v", err)
				}
			}
			normal() // warm: connections, TLS-free HTTP/2 pool, gRPC server
			tokensBefore := roleTokens(t, memRole)
			before := vmHWM(t, pid)

			var wg sync.WaitGroup
			errs := make([]error, concurrent)
			targets := make([]string, concurrent)
			for i := range concurrent {
				targets[i] = newTarget(t)
				req := volume{target: targets[i], pod: shopPod, role: memRole, secrets: attackSecrets(memAttackSize)}.request()
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = d.node.NodePublishVolume(ctxT(t), req)
				}()
			}
			wg.Wait()
			peak := vmHWM(t, pid)

			for i, err := range errs {
				if status.Code(err) != codes.ResourceExhausted {
					t.Errorf("attack publish %d: %v, want ResourceExhausted", i, err)
				}
				if _, _, mounted := mountOptions(t, targets[i]); mounted {
					t.Errorf("attack publish %d left %s mounted", i, targets[i])
				}
			}
			if n := roleTokens(t, memRole); n != tokensBefore {
				t.Errorf("Vault tokens of role %s: %d before the attack, %d after", memRole, tokensBefore, n)
			}
			normal()
			t.Logf("driver VmHWM: %.1f MiB before, %.1f MiB after %d attack publish(es): +%.1f MiB (limit +%d MiB)",
				mib(before), mib(peak), concurrent, mib(peak-before), limit>>20)
			if peak-before >= limit {
				t.Errorf("the attack added %.1f MiB to the driver's peak RSS, want < %d MiB", mib(peak-before), limit>>20)
			}
		})
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// Legitimate volumes with large Vault responses: 8 paths of 7 MiB secrets,
// each file one small key of them. 16 such publishes at once would decode
// 128 responses of 7 MiB at once, each held several times while decoded.
// The driver-wide budget (--max-bytes-in-flight, 64 MiB by default) bounds
// what is in flight: a publish that runs out of room gives back what it
// holds and waits in line, so every publish succeeds, and the driver's peak
// RSS stays well inside the chart's memory limit.
func TestMemoryBudgetBoundsResponses(t *testing.T) {
	setupMemAttack(t)
	const paths, padBytes, publishes = 8, 7 << 20, 16
	var spec strings.Builder
	for i := range paths {
		data := map[string]any{"key": fmt.Sprintf("wide-value-%d", i)}
		for j := range padBytes >> 20 { // Vault takes strings of at most 1 MiB
			data[fmt.Sprintf("pad%d", j)] = strings.Repeat(string(rune('a'+i)), 1<<20-64)
		}
		if _, err := vaultSrv.Root.KVv2("secret").Put(context.Background(), fmt.Sprintf("mem-wide-%d", i), data); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&spec, "- file: k%d\n  path: secret/data/mem-wide-%d\n  key: key\n", i, i)
	}
	d := startDriver(t, "-v=0", "--audit-log=")
	pid := d.cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // 2 cores shared with Vault
	defer cancel()
	tokensBefore := roleTokens(t, memRole)
	before := vmHWM(t, pid)

	reqs := make([]*csi.NodePublishVolumeRequest, publishes)
	errs := make([]error, publishes)
	var wg sync.WaitGroup
	for i := range reqs {
		reqs[i] = volume{target: newTarget(t), pod: shopPod, role: memRole, secrets: spec.String()}.request()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = d.node.NodePublishVolume(ctx, reqs[i])
		}()
	}
	wg.Wait()
	peak := vmHWM(t, pid)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		for j := range paths {
			if b, err := os.ReadFile(fmt.Sprintf("%s/k%d", reqs[i].TargetPath, j)); err != nil || string(b) != fmt.Sprintf("wide-value-%d", j) {
				t.Errorf("publish %d file k%d = %q, %v", i, j, b, err)
			}
		}
	}
	for _, r := range reqs {
		if _, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: r.VolumeId, TargetPath: r.TargetPath}); err != nil {
			t.Fatal(err)
		}
	}
	if n := roleTokens(t, memRole); n != tokensBefore {
		t.Errorf("Vault tokens of role %s: %d before, %d after unpublishing all", memRole, tokensBefore, n)
	}
	// The budget bounds live bytes; the Go heap may grow to about twice
	// what is live before it collects. What must hold is the chart's
	// memory limit (256 Mi), with a quarter to spare.
	const limit = 192 << 20
	t.Logf("driver VmHWM: %.1f MiB before, %.1f MiB after %d concurrent publishes of %d x %d MiB responses: +%.1f MiB (peak limit %d MiB)",
		mib(before), mib(peak), publishes, paths, padBytes>>20, mib(peak-before), limit>>20)
	if peak >= limit {
		t.Errorf("the driver's peak RSS reached %.1f MiB, want < %d MiB (the chart's limit is 256 MiB)", mib(peak), limit>>20)
	}
}
