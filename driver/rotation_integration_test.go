package driver_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider/vaulttest"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// age moves a volume's recorded clock back, as if `by` had passed: the
// driver's rotation floor is 10s and these tests would otherwise sleep.
// TestRotationRealClock proves the same path with real time.
func age(t *testing.T, stateDir, target string, by time.Duration) {
	t.Helper()
	st, err := state.Open(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := st.Get(target)
	if err != nil || rec == nil {
		t.Fatalf("no state for %s: %v", target, err)
	}
	rec.FetchedAt = rec.FetchedAt.Add(-by)
	for i := range rec.Secrets {
		rec.Secrets[i].FetchedAt = rec.Secrets[i].FetchedAt.Add(-by)
	}
	if !rec.NextAttempt.IsZero() {
		rec.NextAttempt = rec.NextAttempt.Add(-by)
	}
	if err := st.Put(rec); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func dataLink(t *testing.T, target string) string {
	t.Helper()
	l, err := os.Readlink(filepath.Join(target, "..data"))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

const rotatingSecret = "- file: value\n  path: secret/data/rotating\n  key: value\n- file: db\n  path: secret/data/db\n  key: password\n"

func TestRotationKV(t *testing.T) {
	d := startDriver(t)
	target := newTarget(t)
	v := volume{target: target, pod: shopPod, secrets: rotatingSecret}
	put := func(val string) {
		if _, err := vaultSrv.Root.KVv2("secret").Put(context.Background(), "rotating", map[string]any{"value": val}); err != nil {
			t.Fatal(err)
		}
	}
	put("v1")
	if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
		t.Fatal(err)
	}
	first := dataLink(t, target)

	// Before the period: a republish does not call Vault, even if the value changed.
	put("v2")
	if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(target, "value")); got != "v1" {
		t.Fatalf("value = %q before the period, want v1", got)
	}

	// After the period: the new version appears, in one swap.
	age(t, d.stateDir, target, 15*time.Second)
	if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(target, "value")); got != "v2" {
		t.Fatalf("value = %q after the period, want v2", got)
	}
	second := dataLink(t, target)
	if second == first {
		t.Fatal("payload dir not swapped")
	}
	// The old payload outlives the swap (a reader may be opening files in
	// it) until kubelet's next re-publish prunes it.
	if _, err := os.Stat(filepath.Join(target, first)); err != nil {
		t.Errorf("old payload %s removed during the swap: %v", first, err)
	}
	st, _ := state.Open(d.stateDir)
	rec, _ := st.Get(target)
	for _, s := range rec.Secrets {
		if s.Path == "secret/data/rotating" && s.Version < 2 {
			t.Errorf("recorded version %d, want >= 2", s.Version)
		}
	}

	// After the period with unchanged data: Vault is read, files are not rewritten.
	age(t, d.stateDir, target, 15*time.Second)
	if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
		t.Fatal(err)
	}
	if got := dataLink(t, target); got != second {
		t.Errorf("unchanged data rewrote the payload: %s -> %s", second, got)
	}
	if _, err := os.Stat(filepath.Join(target, first)); !os.IsNotExist(err) {
		t.Errorf("old payload %s not pruned by the next re-publish: %v", first, err)
	}
	rec2, _ := st.Get(target)
	if !rec2.FetchedAt.After(rec.FetchedAt) {
		t.Error("fetch time not advanced: Vault was not read after the period")
	}
}

// A refresh that fails keeps the old files and answers success; the
// failure is retried after a backoff, and a later success applies.
func TestRefreshFailureKeepsFiles(t *testing.T) {
	// A Vault of this test's own, so it can be stopped.
	v := vaulttest.Start(t)
	v.Policy(t, "p", vaulttest.ReadPolicy("secret/data/app"))
	v.Role(t, "r", shopPod.Namespace, shopPod.ServiceAccount, "p")
	v.PutKV2(t, "app", map[string]any{"k": "old"})
	d := startDriverFor(t, v)
	target := newTarget(t)
	vol := volume{target: target, pod: shopPod, role: "r", secrets: "- file: k\n  path: secret/data/app\n  key: k\n"}
	req := func() *csi.NodePublishVolumeRequest { return requestFor(v, vol) }
	if _, err := d.node.NodePublishVolume(ctxT(t), req()); err != nil {
		t.Fatal(err)
	}

	t.Run("permission revoked", func(t *testing.T) {
		v.Policy(t, "p", `path "secret/data/nothing" { capabilities = ["read"] }`)
		age(t, d.stateDir, target, 15*time.Second)
		if _, err := d.node.NodePublishVolume(ctxT(t), req()); err != nil {
			t.Fatalf("republish must succeed when the refresh fails: %v", err)
		}
		if got := read(t, filepath.Join(target, "k")); got != "old" {
			t.Fatalf("file = %q, want the old value kept", got)
		}
		st, _ := state.Open(d.stateDir)
		rec, _ := st.Get(target)
		if rec.Failures != 1 || !strings.Contains(rec.LastError, "PermissionDenied") || rec.NextAttempt.Before(time.Now().Add(3*time.Second)) {
			t.Errorf("failures=%d lastError=%q nextAttempt in %s", rec.Failures, rec.LastError, time.Until(rec.NextAttempt))
		}
		v.Policy(t, "p", vaulttest.ReadPolicy("secret/data/app"))
	})

	t.Run("Vault down", func(t *testing.T) {
		v.PutKV2(t, "app", map[string]any{"k": "new"})
		v.Kill()
		age(t, d.stateDir, target, 10*time.Minute)
		if _, err := d.node.NodePublishVolume(ctxT(t), req()); err != nil {
			t.Fatalf("republish must succeed with Vault down: %v", err)
		}
		if got := read(t, filepath.Join(target, "k")); got != "old" {
			t.Fatalf("file = %q, want the old value kept", got)
		}
		st, _ := state.Open(d.stateDir)
		rec, _ := st.Get(target)
		if rec.Failures < 1 || !strings.Contains(rec.LastError, "Unavailable") {
			t.Errorf("failures=%d lastError=%q", rec.Failures, rec.LastError)
		}
		// Within the backoff window the driver does not even try.
		before := rec.Failures
		if _, err := d.node.NodePublishVolume(ctxT(t), req()); err != nil {
			t.Fatal(err)
		}
		if rec, _ = st.Get(target); rec.Failures != before {
			t.Errorf("retried inside the backoff window: failures %d -> %d", before, rec.Failures)
		}
	})
	// Unpublish still succeeds with Vault down (the token expires on its own).
	if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
		t.Fatalf("unpublish with Vault down: %v", err)
	}
	if _, _, ok := mountOptions(t, target); ok {
		t.Error("still mounted")
	}
}

// kill -9 and a new driver process on the same state dir: the volume keeps
// its files, the next republish refreshes it, and unpublish revokes the
// token the first process obtained.
func TestRestartRecovery(t *testing.T) {
	d := startDriver(t)
	target := newTarget(t)
	v := volume{target: target, pod: shopPod, secrets: rotatingSecret}
	if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
		t.Fatal(err)
	}
	st, _ := state.Open(d.stateDir)
	rec, _ := st.Get(target)
	token := rec.Session.Token

	d.stop(syscall.SIGKILL)
	before := read(t, filepath.Join(target, "db"))
	d.start(t, d.cmd.Args[1:])
	if got := read(t, filepath.Join(target, "db")); got != before || got != dbPassword {
		t.Fatalf("files changed across a restart: %q", got)
	}
	age(t, d.stateDir, target, 15*time.Second)
	if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
		t.Fatalf("republish after restart: %v", err)
	}
	if rec2, _ := st.Get(target); !rec2.FetchedAt.After(rec.FetchedAt) || rec2.Session.Token != token {
		t.Errorf("after restart: refreshed=%v, token reused=%v", rec2.FetchedAt.After(rec.FetchedAt), rec2.Session.Token == token)
	}
	if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	c, _ := vaultSrv.Root.Clone()
	c.SetToken(token)
	if _, err := c.Auth().Token().LookupSelf(); err == nil {
		t.Error("the token from before the restart is still valid after unpublish")
	}
}

// The real clock, once: with the 10s floor, a change shows up after the
// period without touching the state.
func TestRotationRealClock(t *testing.T) {
	need.Long(t, "waits for the 10s rotation floor")
	t.Parallel()
	d := startDriver(t)
	target := newTarget(t)
	vol := volume{target: target, pod: shopPod, secrets: "- file: v\n  path: secret/data/paypal\n  key: token\n"}
	if _, err := d.node.NodePublishVolume(ctxT(t), vol.request()); err != nil {
		t.Fatal(err)
	}
	if _, err := vaultSrv.Root.KVv2("secret").Patch(context.Background(), "paypal", map[string]any{"token": "rotated-by-clock"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = vaultSrv.Root.KVv2("secret").Patch(context.Background(), "paypal", map[string]any{"token": paypalToken})
	})
	deadline := time.Now().Add(25 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := d.node.NodePublishVolume(ctxT(t), vol.request()); err != nil {
			t.Fatal(err)
		}
		if read(t, filepath.Join(target, "v")) == "rotated-by-clock" {
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatal("value did not rotate within 25s with a 10s period")
}

// A mounted volume whose state record is gone (a moved or wiped state dir)
// is still refreshed on re-publish, never failed: an error there makes
// kubelet drop the mount.
func TestRepublishWithoutState(t *testing.T) {
	d := startDriver(t)
	target := newTarget(t)
	v := volume{target: target, pod: shopPod, secrets: rotatingSecret}
	if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(d.stateDir)
	for _, e := range entries {
		os.Remove(filepath.Join(d.stateDir, e.Name()))
	}
	if _, err := d.node.NodePublishVolume(ctxT(t), v.request()); err != nil {
		t.Fatalf("re-publish without state: %v", err)
	}
	st, _ := state.Open(d.stateDir)
	if rec, err := st.Get(target); err != nil || rec == nil || rec.Session == nil {
		t.Fatalf("state not rebuilt: %+v, %v", rec, err)
	}
	if got := read(t, filepath.Join(target, "db")); got != dbPassword {
		t.Errorf("db = %q", got)
	}
}
