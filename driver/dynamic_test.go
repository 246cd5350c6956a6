package driver_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider/vaulttest"
)

const dynamicSecrets = `
- file: db/username
  path: database/creds/app
  key: username
- file: db/password
  path: database/creds/app
  key: password
- file: tls/tls.crt
  path: pki/issue/web
  key: certificate
  args: {common_name: payment.shop.svc.cluster.local, ttl: 1h}
- file: tls/tls.key
  path: pki/issue/web
  key: private_key
  args: {common_name: payment.shop.svc.cluster.local, ttl: 1h}
- file: tls/ca.crt
  path: pki/issue/web
  key: ca_chain
  args: {common_name: payment.shop.svc.cluster.local, ttl: 1h}
- file: config
  path: secret/data/db
  key: user
`

func serial(t *testing.T, certPEM string) string {
	t.Helper()
	b, _ := pem.Decode([]byte(certPEM))
	if b == nil {
		t.Fatalf("not a PEM certificate: %.40q", certPEM)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}

// Database credentials and PKI certificates: issued on publish, left alone
// by re-publishes that are not due, renewed (same user) or re-issued (new
// certificate) at two thirds of their TTL, fetched anew when renewal is
// capped by max TTL, and revoked on unpublish: the PostgreSQL user is gone.
func TestDynamicSecrets(t *testing.T) {
	v := vaulttest.Start(t)
	pg := vaulttest.StartPostgres(t)
	v.EnableDatabase(t, pg, "app", time.Hour, 2*time.Hour)
	v.EnablePKI(t, "pki", "web", time.Hour)
	v.PutKV2(t, "db", map[string]any{"user": "payments"})
	v.Policy(t, "dyn", `
path "database/creds/app" { capabilities = ["read"] }
path "pki/issue/web" { capabilities = ["create", "update"] }
path "secret/data/db" { capabilities = ["read"] }
`)
	v.Role(t, "dyn", shopPod.Namespace, shopPod.ServiceAccount, "dyn")
	d := startDriverFor(t, v)
	target := newTarget(t)
	vol := volume{target: target, pod: shopPod, role: "dyn", secrets: dynamicSecrets}
	publish := func() {
		t.Helper()
		if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
			t.Fatal(err)
		}
	}
	file := func(name string) string { return read(t, filepath.Join(target, name)) }
	st, _ := state.Open(d.stateDir)

	publish()
	user, pass := file("db/username"), file("db/password")
	if err := pg.CanLogin(user, pass); err != nil {
		t.Fatalf("issued database user cannot log in: %v", err)
	}
	cert1 := serial(t, file("tls/tls.crt"))
	if !strings.Contains(file("tls/tls.key"), "PRIVATE KEY") || !strings.Contains(file("tls/ca.crt"), "BEGIN CERTIFICATE") {
		t.Fatal("key or CA chain missing")
	}
	rec, _ := st.Get(target)
	token := rec.Session.Token
	var leaseID string
	for _, s := range rec.Secrets {
		if s.Path == "database/creds/app" {
			leaseID = s.LeaseID
		}
	}
	if leaseID == "" {
		t.Fatal("no lease recorded for the database credentials")
	}

	// Not due: nothing changes and no new credential is minted.
	publish()
	if file("db/username") != user || serial(t, file("tls/tls.crt")) != cert1 {
		t.Fatal("a re-publish that was not due changed credentials")
	}

	// Two thirds through the 1h TTLs (and past the KV period): the database
	// lease is renewed (same user), the certificate has no lease and is
	// issued anew.
	age(t, d.stateDir, target, 41*time.Minute)
	publish()
	if got := file("db/username"); got != user {
		t.Errorf("database user changed on renewal: %s -> %s", user, got)
	}
	if err := pg.CanLogin(user, pass); err != nil {
		t.Errorf("renewed user cannot log in: %v", err)
	}
	if serial(t, file("tls/tls.crt")) == cert1 {
		t.Error("certificate not re-issued at two thirds of its TTL")
	}
	rec, _ = st.Get(target)
	for _, s := range rec.Secrets {
		if s.Path == "database/creds/app" && (s.LeaseID != leaseID || time.Since(s.FetchedAt) > time.Minute) {
			t.Errorf("database lease not renewed in place: id changed=%v, renewed %s ago", s.LeaseID != leaseID, time.Since(s.FetchedAt))
		}
	}

	// Unpublish revokes the token, and with it the lease: the user is gone.
	if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	waitUserGone(t, pg, user)
	c, _ := v.Root.Clone()
	c.SetToken(token)
	if _, err := c.Auth().Token().LookupSelf(); err == nil {
		t.Error("volume token still valid after unpublish")
	}
	if _, err := v.Root.Logical().Write("sys/leases/lookup", map[string]any{"lease_id": leaseID}); err == nil {
		t.Error("database lease still known to Vault after unpublish")
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Error("target not removed")
	}
}

// A lease that cannot be renewed past its max TTL is replaced with a new
// credential before it dies.
func TestDynamicSecretsMaxTTL(t *testing.T) {
	v := vaulttest.Start(t)
	pg := vaulttest.StartPostgres(t)
	v.EnableDatabase(t, pg, "short", time.Hour, time.Hour) // renewal can never extend it
	v.Policy(t, "dyn", `path "database/creds/short" { capabilities = ["read"] }`)
	v.Role(t, "dyn", shopPod.Namespace, shopPod.ServiceAccount, "dyn")
	d := startDriverFor(t, v)
	target := newTarget(t)
	vol := volume{target: target, pod: shopPod, role: "dyn", secrets: "- file: user\n  path: database/creds/short\n  key: username\n- file: pass\n  path: database/creds/short\n  key: password\n"}
	if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
		t.Fatal(err)
	}
	user := read(t, filepath.Join(target, "user"))
	// Vault caps a renewal at max TTL minus the lease's real age, in whole
	// seconds: one real second makes the cap visible, the ageing does the rest.
	time.Sleep(1100 * time.Millisecond)
	age(t, d.stateDir, target, 41*time.Minute)
	if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
		t.Fatal(err)
	}
	user2, pass2 := read(t, filepath.Join(target, "user")), read(t, filepath.Join(target, "pass"))
	if user2 == user {
		t.Fatal("credential not replaced although renewal was capped by max TTL")
	}
	if err := pg.CanLogin(user2, pass2); err != nil {
		t.Errorf("new credential cannot log in: %v", err)
	}
	if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{user, user2} {
		waitUserGone(t, pg, u)
	}
}

// waitUserGone waits (bounded) for Vault to revoke a lease's database user:
// revoking a token revokes its leases in the background, within ~100 ms here.
func waitUserGone(t *testing.T, pg *vaulttest.Postgres, user string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		exists, err := pg.RoleExists(user)
		if err == nil && !exists {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("database user %s still exists 10s after unpublish (err %v)", user, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
