package driver_test

// Issue 9 item 1: a pod's args are written only where Vault itself says a
// PKI engine issues, never to a path that merely looks like pki/issue/<role>.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// vaultWrites counts the write requests (create or update) Vault's file
// audit device logged for path.
func vaultWrites(t *testing.T, auditLog, path string) int {
	t.Helper()
	f, err := os.Open(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e struct {
			Type    string `json:"type"`
			Request struct {
				Operation string `json:"operation"`
				Path      string `json:"path"`
			} `json:"request"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Type != "request" || e.Request.Path != path {
			continue
		}
		if e.Request.Operation == "create" || e.Request.Operation == "update" {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// accessorCount is the number of live Vault tokens (the root token included).
func accessorCount(t *testing.T, v *vaulttest.Server) int {
	t.Helper()
	sec, err := v.Root.Logical().List("auth/token/accessors")
	if err != nil || sec == nil {
		t.Fatalf("list token accessors: %v", err)
	}
	keys, _ := sec.Data["keys"].([]any)
	return len(keys)
}

// waitAccessors polls (bounded) until the live token count is want.
func waitAccessors(t *testing.T, v *vaulttest.Server, want int) {
	t.Helper()
	var got int
	for i := 0; i < 100; i++ {
		if got = accessorCount(t, v); got == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("%d Vault tokens alive, want %d: a token leaked", got, want)
}

// Item 1. A write with a pod's args goes only to an endpoint Vault itself
// names an issuing endpoint of a PKI mount. Every other spelling, however
// much it looks like pki/issue/<role>, is InvalidArgument naming
// secrets[i].args, sends zero writes (counted by the driver's metrics and
// by Vault's own audit device) and leaves the stored value as it was. A
// PKI mount with any name issues, and a second publish costs no extra
// mount lookup.
func TestArgsWriteOnlyToPKIIssuingEndpoints(t *testing.T) {
	v := vaulttest.Start(t)
	auditLog := filepath.Join(t.TempDir(), "vault-audit.log")
	if err := v.Root.Sys().EnableAuditWithOptions("file", &vault.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": auditLog},
	}); err != nil {
		t.Fatal(err)
	}
	// KV mounts whose names or paths look like PKI, and the real PKI
	// engine under a name that does not.
	for _, m := range []string{"pki_kv", "pki"} {
		if err := v.Root.Sys().Mount(m, &vault.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
			t.Fatal(err)
		}
	}
	v.EnablePKI(t, "certs", "web", time.Hour)
	const original = "kv-value-that-others-read"
	kvPaths := []string{"pki_kv/issue/app", "pki/issue/web", "pki/issuer/default/issue/web", "kv/team/pki/issue/app"}
	for _, p := range kvPaths {
		if _, err := v.Root.Logical().Write(p, map[string]any{"certificate": original}); err != nil {
			t.Fatal(err)
		}
	}
	v.PutKV2(t, "team/pki/issue/app", map[string]any{"certificate": original})
	v.PutKV2(t, "plain", map[string]any{"value": "plain-value"})
	// The role may write every one of these paths: only the driver's check
	// stands between a pod's args and an overwrite.
	v.Policy(t, "pkitest", `
path "pki_kv/*" { capabilities = ["create", "read", "update"] }
path "pki/*" { capabilities = ["create", "read", "update"] }
path "kv/team/*" { capabilities = ["create", "read", "update"] }
path "secret/data/team/*" { capabilities = ["create", "read", "update"] }
path "secret/data/plain" { capabilities = ["read"] }
path "certs/issue/web" { capabilities = ["create", "update"] }
path "certs/issuer/+/issue/web" { capabilities = ["create", "update"] }
path "certs/roles/issue/web" { capabilities = ["create", "update"] }
`)
	v.Role(t, "pkitest", shopPod.Namespace, shopPod.ServiceAccount, "pkitest")
	d := startObservedDriver(t, v)
	writes := func() float64 {
		return d.scrape(t).value("vault_csi_vault_requests_total", map[string]string{"operation": "write"})
	}
	lookups := func() float64 {
		return d.scrape(t).value("vault_csi_vault_requests_total", map[string]string{"operation": "lookup"})
	}
	volumeFor := func(path string) volume {
		return volume{target: newTarget(t), pod: shopPod, role: "pkitest", secrets: fmt.Sprintf(`
- file: plain
  path: secret/data/plain
  key: value
- file: tls.crt
  path: %s
  key: certificate
  args: {common_name: web.shop.svc.cluster.local}
`, path)}
	}

	// A PKI mount named certs issues, in both endpoint forms; the second
	// publish finds the mount type in the cache.
	for i, path := range []string{"certs/issue/web", "certs/issuer/default/issue/web"} {
		w0, l0, a0 := writes(), lookups(), vaultWrites(t, auditLog, path)
		vol := volumeFor(path)
		if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
			t.Errorf("publish %s: %v", path, err)
			continue
		}
		if crt := read(t, filepath.Join(vol.target, "tls.crt")); !strings.Contains(crt, "BEGIN CERTIFICATE") {
			t.Errorf("%s: tls.crt is not a certificate", path)
		}
		wantLookups := 1.0 // first publish: one mount lookup per PKI mount
		if i > 0 {
			wantLookups = 0 // cached for the mount, whatever the endpoint
		}
		if got := lookups() - l0; got != wantLookups {
			t.Errorf("%s: %v mount lookups, want %v", path, got, wantLookups)
		}
		if got := writes() - w0; got != 1 {
			t.Errorf("%s: %v writes, want 1", path, got)
		}
		if n := vaultWrites(t, auditLog, path) - a0; n != 1 {
			t.Errorf("Vault's audit log shows %d writes to %s, want 1 (the counter must see writes)", n, path)
		}
		t.Logf("%s: %v mount lookups, %v writes", path, lookups()-l0, writes()-w0)
		unpublish(t, d.driverProc, vol.target)
	}

	// Every other spelling is refused before anything is written, also
	// when the mount's type comes from the cache (certs/ is cached now).
	tokens := accessorCount(t, v)
	for _, tt := range []struct{ name, path, why string }{
		{"KV v1 mount named pki_kv", "pki_kv/issue/app", "kv mount"},
		{"KV v1 mount named pki", "pki/issue/web", "kv mount"},
		{"issuer form on a KV mount", "pki/issuer/default/issue/web", "kv mount"},
		{"KV v1 path spelled like a PKI mount", "kv/team/pki/issue/app", "kv mount"},
		{"KV v2 path spelled like a PKI mount", "secret/data/team/pki/issue/app", "kv mount"},
		{"cubbyhole", "cubbyhole/issue/web", "cubbyhole mount"},
		{"a PKI mount, not an issuing endpoint", "certs/roles/issue/web", "not issue/<role>"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w0, a0 := writes(), vaultWrites(t, auditLog, tt.path) // the set-up wrote some as root
			vol := volumeFor(tt.path)
			_, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol))
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("code %v (%v), want InvalidArgument", status.Code(err), err)
			}
			t.Logf("%s: %s", status.Code(err), status.Convert(err).Message())
			if msg := status.Convert(err).Message(); !strings.Contains(msg, "secrets[1].args") || !strings.Contains(msg, tt.why) {
				t.Errorf("message %q does not name secrets[1].args and %q", msg, tt.why)
			}
			if got := writes() - w0; got != 0 {
				t.Errorf("the driver sent %v writes to Vault", got)
			}
			if n := vaultWrites(t, auditLog, tt.path) - a0; n != 0 {
				t.Errorf("Vault's audit log shows %d writes to %s", n, tt.path)
			}
			assertNothingMounted(t, vol.target)
		})
	}
	// The stored values are untouched.
	for _, p := range kvPaths {
		sec, err := v.Root.Logical().Read(p)
		if err != nil || sec == nil || sec.Data["certificate"] != original {
			t.Errorf("%s changed: %v %v", p, sec, err)
		}
	}
	if sec, err := v.Root.KVv2("secret").Get(context.Background(), "team/pki/issue/app"); err != nil || sec.Data["certificate"] != original {
		t.Errorf("secret/data/team/pki/issue/app changed: %v %v", sec, err)
	}
	waitAccessors(t, v, tokens) // each refused publish revoked its login

}
