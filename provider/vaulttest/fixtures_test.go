package vaulttest_test

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider/vaulttest"
)

func TestPostgresDynamicCredentials(t *testing.T) {
	t.Parallel()
	pg := vaulttest.StartPostgres(t)
	t.Logf("postgres %s (initdb + start + create db) took %s", pg.BinDir, pg.StartupTime.Round(time.Millisecond))
	s := vaulttest.Start(t)
	s.EnableDatabase(t, pg, "app-ro", time.Hour, 2*time.Hour)

	sec, err := s.Root.Logical().Read("database/creds/app-ro")
	if err != nil {
		t.Fatalf("read creds: %v", err)
	}
	user, _ := sec.Data["username"].(string)
	pass, _ := sec.Data["password"].(string)
	if user == "" || pass == "" {
		t.Fatalf("creds without username/password: %v", sec.Data)
	}
	if !strings.HasPrefix(sec.LeaseID, "database/creds/app-ro/") || sec.LeaseDuration != 3600 || !sec.Renewable {
		t.Fatalf("lease = %q %ds renewable=%v, want database/creds/app-ro/..., 3600s, renewable", sec.LeaseID, sec.LeaseDuration, sec.Renewable)
	}
	if ok, err := pg.RoleExists(user); err != nil || !ok {
		t.Fatalf("RoleExists(%s) = %v, %v; want true", user, ok, err)
	}
	if err := pg.CanLogin(user, pass); err != nil {
		t.Fatalf("CanLogin with Vault's password: %v", err)
	}
	if err := pg.CanLogin(user, pass+"x"); err == nil {
		t.Fatal("CanLogin with a wrong password succeeded: password auth is not enforced")
	}

	// A second role on the same connection keeps the first one allowed.
	s.EnableDatabase(t, pg, "app-short", time.Minute, time.Minute)
	if _, err := s.Root.Logical().Read("database/creds/app-ro"); err != nil {
		t.Fatalf("first role after adding a second: %v", err)
	}
	if sec2, err := s.Root.Logical().Read("database/creds/app-short"); err != nil || sec2.LeaseDuration != 60 {
		t.Fatalf("second role: %v, %+v", err, sec2)
	}

	if err := s.Root.Sys().Revoke(sec.LeaseID); err != nil { // sys/leases/revoke, sync
		t.Fatalf("revoke: %v", err)
	}
	if ok, err := pg.RoleExists(user); err != nil || ok {
		t.Fatalf("after revoke RoleExists(%s) = %v, %v; want false", user, ok, err)
	}
	if err := pg.CanLogin(user, pass); err == nil {
		t.Fatal("revoked user can still log in")
	}
}

func TestPKIIssue(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	start := time.Now()
	caPEM := s.EnablePKI(t, "pki", "svc", time.Hour)
	t.Logf("EnablePKI took %s", time.Since(start).Round(time.Millisecond))
	caBlock, _ := pem.Decode([]byte(caPEM))
	if caBlock == nil {
		t.Fatalf("CA is not PEM: %q", caPEM)
	}
	ca, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || ca.Subject.CommonName != vaulttest.PKICommonName {
		t.Fatalf("CA: IsCA=%v CN=%q", ca.IsCA, ca.Subject.CommonName)
	}

	const name = "web.default.svc.cluster.local"
	start = time.Now()
	sec, err := s.Root.Logical().Write("pki/issue/svc", map[string]any{"common_name": name})
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	t.Logf("pki/issue took %s", time.Since(start).Round(time.Millisecond))
	for _, k := range []string{"certificate", "private_key", "private_key_type", "issuing_ca", "ca_chain", "serial_number", "expiration"} {
		if sec.Data[k] == nil {
			t.Errorf("issue response lacks %s: keys %v", k, keys(sec.Data))
		}
	}
	if sec.LeaseID != "" || sec.LeaseDuration != 0 {
		t.Errorf("generate_lease=false but lease %q %ds", sec.LeaseID, sec.LeaseDuration)
	}
	if sec.Data["issuing_ca"] != caPEM {
		t.Errorf("issuing_ca differs from the root CA")
	}
	if chain, _ := sec.Data["ca_chain"].([]any); len(chain) != 1 || chain[0] != caPEM {
		t.Errorf("ca_chain = %v, want [root]", sec.Data["ca_chain"])
	}
	if k, _ := sec.Data["private_key"].(string); !strings.Contains(k, "PRIVATE KEY-----") {
		t.Errorf("private_key is not PEM")
	}

	leafBlock, _ := pem.Decode([]byte(sec.Data["certificate"].(string)))
	if leafBlock == nil {
		t.Fatal("certificate is not PEM")
	}
	leaf, err := x509.ParseCertificate(leafBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
		t.Fatalf("leaf does not chain to the CA: %v", err)
	}
	if exp, err := sec.Data["expiration"].(json.Number).Int64(); err != nil || exp != leaf.NotAfter.Unix() {
		t.Errorf("expiration %v != NotAfter %d", sec.Data["expiration"], leaf.NotAfter.Unix())
	}
	if ttl := time.Until(leaf.NotAfter); ttl > time.Hour+time.Minute || ttl < 55*time.Minute {
		t.Errorf("leaf valid for %s, want about 1h", ttl)
	}
	if sn := sec.Data["serial_number"].(string); strings.ReplaceAll(sn, ":", "") != leafSerialHex(leaf) {
		t.Errorf("serial_number %s != leaf serial %s", sn, leafSerialHex(leaf))
	}

	if _, err := s.Root.Logical().Write("pki/issue/svc", map[string]any{"common_name": "evil.example.com"}); err == nil {
		t.Error("issued a name outside " + vaulttest.PKIDomain)
	}
}

func TestPostgresStopCleansUp(t *testing.T) {
	t.Parallel()
	pg, err := vaulttest.RunPostgres()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(pg.Dir(), "data", "postmaster.pid"))
	if err != nil {
		pg.Stop()
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	pg.Stop()
	pg.Stop() // idempotent
	if _, err := os.Stat(pg.Dir()); !os.IsNotExist(err) {
		t.Errorf("temp dir %s still there: %v", pg.Dir(), err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postmaster %d still running: %v", pid, err)
	}
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func leafSerialHex(c *x509.Certificate) string {
	h := c.SerialNumber.Text(16)
	if len(h)%2 == 1 {
		h = "0" + h
	}
	return h
}
