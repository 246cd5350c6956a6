package driver_test

// Issue 9 item 9: rotation periods have an upper bound and the due-time
// arithmetic saturates instead of wrapping.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/provider/vaulttest"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// Item 9. A pod's rotationPeriod (and the driver's --rotation-period) has
// an upper bound of 720h; 2562047h, which overflowed the due-time sum and
// made every re-publish read Vault, is InvalidArgument naming the field.
// At the bound a re-publish reads nothing until the period has passed.
func TestRotationPeriodBound(t *testing.T) {
	d := startObservedDriver(t, vaultSrv)
	reads := func() float64 { return d.scrape(t).vaultRequests() }
	for _, p := range []string{"2562047h", "721h", "2562047h47m16.854775807s"} {
		vol := volume{target: newTarget(t), pod: shopPod, secrets: "- file: p\n  path: secret/data/db\n  key: password\n",
			extra: map[string]string{"rotationPeriod": p}}
		r0 := reads()
		_, err := d.node.NodePublishVolume(ctxT(t), vol.request())
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "rotationPeriod") ||
			!strings.Contains(status.Convert(err).Message(), "720h") {
			t.Errorf("rotationPeriod %s: %v, want InvalidArgument naming rotationPeriod and its bound", p, err)
		}
		if got := reads() - r0; got != 0 {
			t.Errorf("rotationPeriod %s: %v Vault requests", p, got)
		}
		assertNothingMounted(t, vol.target)
	}

	vol := volume{target: newTarget(t), pod: shopPod, secrets: "- file: p\n  path: secret/data/db\n  key: password\n",
		extra: map[string]string{"rotationPeriod": "720h"}}
	if _, err := d.node.NodePublishVolume(ctxT(t), vol.request()); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		age   time.Duration
		reads bool
	}{
		{0, false},
		{700 * time.Hour, false},             // inside the period
		{100 * time.Hour, true},              // 800h: past 720h plus at most 10% jitter
		{0, false},                           // just fetched again
		{719*time.Hour + time.Minute, false}, // still inside
	} {
		if step.age > 0 {
			age(t, d.stateDir, vol.target, step.age)
		}
		r0 := reads()
		if _, err := d.node.NodePublishVolume(ctxT(t), vol.request()); err != nil {
			t.Fatal(err)
		}
		if got := reads() - r0; (got > 0) != step.reads {
			t.Errorf("after aging %v: %v Vault requests, want reads=%v", step.age, got, step.reads)
		}
	}
	unpublish(t, d.driverProc, vol.target)

	// The flag has the same bound: the driver refuses to start.
	stateDir, err := os.MkdirTemp("/dev/shm", "vcd-state-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(stateDir) })
	for _, flag := range []string{"--rotation-period=2562047h", "--rotation-period=721h"} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, driverBin, "--endpoint=unix://"+filepath.Join(t.TempDir(), "c.sock"),
			"--node-id=n", "--vault-addr="+vaultSrv.Addr, "--state-dir="+stateDir, flag).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), "rotation period") || !strings.Contains(string(out), "720h") {
			t.Errorf("%s: %v\n%s", flag, err, tail(string(out), 1000))
		}
	}
}

// Item 9, the same class: a certificate valid until 9999 (RFC 5280's "no
// well-defined expiration") has a TTL beyond time.Duration's range; two
// thirds of it used to wrap negative, so every re-publish issued a new
// certificate. It is issued once and left alone.
func TestCertificateValidUntil9999(t *testing.T) {
	need.Long(t, "mounts a PKI engine on the real Vault")
	v := vaultSrv
	// The mount's name is one the old spelling check accepted, so that this
	// test shows the arithmetic, not the issuing-endpoint check.
	const mount, notAfter = "pki_forever", "9999-12-31T23:59:59Z"
	if err := v.Root.Sys().Mount(mount, &vault.MountInput{Type: "pki"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Root.Sys().Unmount(mount) })
	if _, err := v.Root.Logical().Write(mount+"/root/generate/internal", map[string]any{
		"common_name": vaulttest.PKICommonName, "not_after": notAfter, "issuer_name": "root",
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Root.Logical().Write(mount+"/roles/web", map[string]any{
		"allowed_domains": []string{vaulttest.PKIDomain}, "allow_subdomains": true, "generate_lease": false,
	}); err != nil {
		t.Fatal(err)
	}
	v.Policy(t, "forever", `path "pki_forever/issue/web" { capabilities = ["create", "update"] }`)
	v.Role(t, "forever", shopPod.Namespace, shopPod.ServiceAccount, "forever")
	d := startObservedDriver(t, v)
	vol := volume{target: newTarget(t), pod: shopPod, role: "forever", secrets: `
- file: tls.crt
  path: pki_forever/issue/web
  key: certificate
  args: {common_name: forever.shop.svc.cluster.local, not_after: "` + notAfter + `"}
`}
	if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
		t.Fatal(err)
	}
	first := serial(t, read(t, filepath.Join(vol.target, "tls.crt")))
	for i := 0; i < 3; i++ {
		r0 := d.scrape(t).vaultRequests()
		if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
			t.Fatal(err)
		}
		if got := d.scrape(t).vaultRequests() - r0; got != 0 {
			t.Errorf("re-publish %d: %v Vault requests, want 0", i, got)
		}
		if s := serial(t, read(t, filepath.Join(vol.target, "tls.crt"))); s != first {
			t.Fatalf("re-publish %d issued a new certificate", i)
		}
	}
	unpublish(t, d.driverProc, vol.target)
}
