package driver_test

// Issue 11: rendered files (templates, encodings, PKI bundles and
// keystores) on real parts: Vault's KV v2, database engine on the real
// PostgreSQL, and PKI.

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	keystore "github.com/pavlo-v-chernykh/keystore-go/v4"
	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"vaultcsi.dev/driver/provider/vaulttest"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

const (
	keystorePassword    = "ks-pass-8812"
	newKeystorePassword = "ks-pass-9923"
)

// bigVault is formatsVault's listener for large requests.
var bigVault string

// formatsVault is a Vault with the database engine on a real PostgreSQL
// (role app, 1h TTL capped at 1h so an aged lease is replaced), PKI role
// web (1h), the KV secrets the recipes read and a policy for all of them.
func formatsVault(t *testing.T) (*vaulttest.Server, *vaulttest.Postgres, *x509.CertPool) {
	t.Helper()
	need.Long(t, "starts a real Vault server")
	// A second listener takes JSON strings over Vault's 1 MiB default, so a
	// 1 MiB blob can be stored base64- and hex-encoded (the driver reads
	// through the first: the limit is on requests only).
	bigAddr, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	v, err := vaulttest.RunWith(vaulttest.Options{Config: fmt.Sprintf(
		"listener \"tcp\" {\n  address = %q\n  tls_disable = true\n  max_json_string_value_length = %d\n  max_request_size = %d\n}\n",
		bigAddr, 8<<20, 32<<20)})
	if err != nil {
		t.Fatalf("start vault: %v", err)
	}
	t.Cleanup(v.Stop)
	bigVault = "http://" + bigAddr
	pg := vaulttest.StartPostgres(t)
	v.EnableDatabase(t, pg, "app", time.Hour, time.Hour)
	caPEM := v.EnablePKI(t, "pki", "web", time.Hour)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatal("CA does not parse")
	}
	v.PutKV2(t, "web", map[string]any{"keystorePassword": keystorePassword})
	v.PutKV2(t, "app", map[string]any{"greeting": "hello-v1"})
	v.Policy(t, "fmt", `
path "database/creds/app" { capabilities = ["read"] }
path "pki/issue/web" { capabilities = ["create", "update"] }
path "secret/data/*" { capabilities = ["read"] }
`)
	v.Role(t, "fmt", shopPod.Namespace, shopPod.ServiceAccount, "fmt")
	return v, pg, roots
}

func leafOf(t *testing.T, pemData []byte) *x509.Certificate {
	t.Helper()
	for rest := pemData; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			t.Fatal("no certificate in PEM")
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
}

// checkBundle: the bundle's key matches its certificate and the chain
// verifies to the CA; it returns the certificate.
func checkBundle(t *testing.T, bundle []byte, roots *x509.CertPool, name string) *x509.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(bundle, bundle)
	if err != nil {
		t.Fatalf("bundle: key does not match certificate: %v", err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, _ := x509.ParseCertificate(der)
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name}); err != nil {
		t.Fatalf("bundle's chain does not verify: %v", err)
	}
	return leaf
}

// checkPKCS12 opens the keystore with go-pkcs12 and with Debian's openssl
// and returns its certificate.
func checkPKCS12(t *testing.T, path, password string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key, cert, _, err := pkcs12.DecodeChain(b, password)
	if err != nil {
		t.Fatalf("go-pkcs12: %v", err)
	}
	if key.(*rsa.PrivateKey).N.Cmp(cert.PublicKey.(*rsa.PublicKey).N) != 0 {
		t.Fatal("PKCS#12 key does not match its certificate")
	}
	out, err := exec.Command("openssl", "pkcs12", "-info", "-in", path, "-passin", "pass:"+password, "-nokeys").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "BEGIN CERTIFICATE") {
		t.Fatalf("openssl pkcs12 -info: %v: %s", err, out)
	}
	return cert
}

// loadJKS opens a JKS file with keystore-go, a reader independent of the
// driver's writer.
func loadJKS(t *testing.T, path, password string) keystore.KeyStore {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ks := keystore.New()
	if err := ks.Load(bytes.NewReader(b), []byte(password)); err != nil {
		t.Fatalf("keystore-go: %v", err)
	}
	return ks
}

func checkJKS(t *testing.T, path, password string) *x509.Certificate {
	t.Helper()
	ks := loadJKS(t, path, password)
	e, err := ks.GetPrivateKeyEntry("vault", []byte(password))
	if err != nil || len(e.CertificateChain) < 2 {
		t.Fatalf("JKS key entry: %v", err)
	}
	c, err := x509.ParseCertificate(e.CertificateChain[0].Content)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(e.PrivateKey)
	if err != nil || k.(*rsa.PrivateKey).N.Cmp(c.PublicKey.(*rsa.PublicKey).N) != 0 {
		t.Fatalf("JKS key does not match its certificate: %v", err)
	}
	return c
}

// dsnRE reads the rendered DATABASE_URL.
var dsnRE = regexp.MustCompile(`(?m)^DATABASE_URL=(postgres://([^:]+):[^@]+@\S+)$`)

func TestFormatsRealParts(t *testing.T) {
	v, pg, roots := formatsVault(t)
	blob := make([]byte, 1<<20)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	small := []byte{0xfb, 0xff, 0x00, 0x10}
	big, err := v.Root.Clone()
	if err != nil {
		t.Fatal(err)
	}
	if err := big.SetAddress(bigVault); err != nil {
		t.Fatal(err)
	}
	big.SetToken(vaulttest.RootToken)
	if _, err := big.KVv2("secret").Put(ctxT(t), "blob", map[string]any{
		"payload": base64.StdEncoding.EncodeToString(blob),
		"url":     base64.RawURLEncoding.EncodeToString(small),
		"hex":     hex.EncodeToString(blob),
	}); err != nil {
		t.Fatal(err)
	}
	const cn = "web.shop.svc.cluster.local"
	pkiArgs := "  path: pki/issue/web\n  args: {common_name: " + cn + ", ttl: 1h}\n"
	pw := "  passwordFrom: {path: secret/data/web, key: keystorePassword}\n"
	secrets := fmt.Sprintf(`
- file: db.env
  template: |
    {{- with secret "database/creds/app" }}
    DATABASE_URL=postgres://{{ .username }}:{{ .password | urlEscape }}@%s/%s?sslmode=disable
    {{- end }}
- file: db-user
  path: database/creds/app
  key: username
- file: app.conf
  template: '{{ with secret "secret/data/app" }}greeting={{ .greeting }}{{ end }}'
- file: blob.bin
  path: secret/data/blob
  key: payload
  encoding: base64
- file: small.bin
  path: secret/data/blob
  key: url
  encoding: base64
- file: blob-hex.bin
  path: secret/data/blob
  key: hex
  encoding: hex
- file: tls/bundle.pem
%s  format: pem-bundle
- file: tls/keystore.p12
%s  format: pkcs12
%s- file: tls/keystore.jks
%s  format: jks
%s- file: tls/truststore.p12
%s  format: pkcs12-truststore
- file: tls/truststore.jks
%s  format: jks-truststore
%s- file: tls/cert-from-template.pem
  template: '{{ with secret "pki/issue/web" "common_name=web.shop.svc.cluster.local" "ttl=1h" }}{{ .certificate }}{{ end }}'
- file: tls8/bundle.pem
  path: pki/issue/web
  args: {common_name: %s, ttl: 1h, private_key_format: pkcs8}
  format: pem-bundle
`, pg.Addr(), pg.Database, pkiArgs, pkiArgs, pw, pkiArgs, pw, pkiArgs, pkiArgs, pw, cn)
	d := startDriverFor(t, v)
	target := newTarget(t)
	vol := volume{target: target, pod: shopPod, role: "fmt", secrets: secrets}
	publish := func() {
		t.Helper()
		if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
			t.Fatal(err)
		}
	}
	file := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(target, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// checkDB: the rendered URL connects, and db-user is the same credential.
	checkDB := func() string {
		t.Helper()
		m := dsnRE.FindSubmatch(file("db.env"))
		if m == nil {
			t.Fatalf("db.env has no DATABASE_URL line (%d bytes)", len(file("db.env")))
		}
		if err := pg.CanConnectURL(string(m[1])); err != nil {
			t.Fatalf("the rendered URL does not connect: %v", err)
		}
		if got := string(file("db-user")); got != string(m[2]) {
			t.Fatalf("db-user %s and the URL's user %s differ: two credentials for one path", got, m[2])
		}
		return string(m[2])
	}
	// checkTLS: every keystore holds the bundle's certificate.
	checkTLS := func(keystorePassword string) string {
		t.Helper()
		leaf := checkBundle(t, file("tls/bundle.pem"), roots, cn)
		p12 := checkPKCS12(t, filepath.Join(target, "tls/keystore.p12"), keystorePassword)
		jks := checkJKS(t, filepath.Join(target, "tls/keystore.jks"), keystorePassword)
		if !p12.Equal(leaf) || !jks.Equal(leaf) {
			t.Fatal("the bundle and the keystores hold different certificates")
		}
		if !leafOf(t, file("tls/cert-from-template.pem")).Equal(leaf) {
			t.Fatal("a template naming the same path and args got another certificate")
		}
		trust, err := pkcs12.DecodeTrustStore(file("tls/truststore.p12"), "")
		if err != nil || len(trust) != 1 || trust[0].Subject.CommonName != vaulttest.PKICommonName {
			t.Fatalf("PKCS#12 truststore: %v", err)
		}
		ts := keystore.New()
		if err := ts.Load(bytes.NewReader(file("tls/truststore.jks")), []byte(keystorePassword)); err != nil || !ts.IsTrustedCertificateEntry("ca-0") {
			t.Fatalf("JKS truststore: %v", err)
		}
		return leaf.SerialNumber.String()
	}

	publish()
	user1 := checkDB()
	serial1 := checkTLS(keystorePassword)
	if !bytes.Equal(file("blob.bin"), blob) || !bytes.Equal(file("blob-hex.bin"), blob) || !bytes.Equal(file("small.bin"), small) {
		t.Fatal("decoded files are not byte-exact")
	}
	if got := string(file("app.conf")); got != "greeting=hello-v1" {
		t.Fatalf("app.conf = %q", got)
	}
	k8 := file("tls8/bundle.pem")
	if !bytes.Contains(k8, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Fatal("private_key_format=pkcs8 did not give a PKCS#8 key")
	}
	checkBundle(t, k8, roots, cn)
	if leafOf(t, k8).Equal(leafOf(t, file("tls/bundle.pem"))) {
		t.Fatal("other args, same certificate: args are part of a read's identity")
	}
	for _, name := range []string{"db.env", "tls/keystore.p12", "blob.bin"} {
		st, err := os.Stat(filepath.Join(target, name))
		if err != nil || st.Mode().Perm() != 0o440 {
			t.Fatalf("%s: mode %v, want 0440 (%v)", name, st.Mode().Perm(), err)
		}
	}

	// Not due: nothing is rewritten (keystores are deterministic).
	link := dataLink(t, target)
	publish()
	if dataLink(t, target) != link {
		t.Fatal("a re-publish with nothing due swapped ..data")
	}

	// A KV change re-renders the template over it, and nothing else moves:
	// no new database user, no new certificate. A new keystore password
	// waits for the next certificate (re-reading the PKI path for it would
	// issue one every period).
	p12Before := file("tls/keystore.p12")
	v.PutKV2(t, "app", map[string]any{"greeting": "hello-v2"})
	v.PutKV2(t, "web", map[string]any{"keystorePassword": newKeystorePassword})
	age(t, d.stateDir, target, 15*time.Second)
	publish()
	if got := string(file("app.conf")); got != "greeting=hello-v2" {
		t.Fatalf("app.conf after a KV change = %q", got)
	}
	if checkDB() != user1 || checkTLS(keystorePassword) != serial1 || !bytes.Equal(file("tls/keystore.p12"), p12Before) {
		t.Fatal("a KV change replaced a credential or rewrote a keystore")
	}

	// Two thirds through the 1h TTLs: the database lease cannot be renewed
	// past its max TTL and is replaced; the certificate is issued anew. The
	// URL, db-user, the bundle and every keystore move together.
	time.Sleep(1100 * time.Millisecond) // makes Vault's max-TTL cap visible
	age(t, d.stateDir, target, 41*time.Minute)
	publish()
	user2 := checkDB()
	dbPass := strings.SplitN(strings.SplitN(string(dsnRE.FindSubmatch(file("db.env"))[1]), "@", 2)[0], ":", 3)[2]
	serial2 := checkTLS(newKeystorePassword) // the new certificate brings the new password
	if user2 == user1 || serial2 == serial1 {
		t.Fatalf("credential not replaced: user %v, certificate %v", user2 != user1, serial2 != serial1)
	}

	if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{user1, user2} {
		waitUserGone(t, pg, u)
	}
	// The driver logged at -v=10 throughout: no rendered value in its log.
	logs := d.logs.String()
	for _, secret := range []string{keystorePassword, newKeystorePassword, "hello-v2", base64.StdEncoding.EncodeToString(blob[:48]), dbPass} {
		if strings.Contains(logs, secret) {
			t.Errorf("the driver's log holds a secret value (%d bytes)", len(secret))
		}
	}
}

// readJKSTrust reads a JKS truststore's certificates with keystore-go.
func readJKSTrust(t *testing.T, path, password string) *x509.CertPool {
	t.Helper()
	ks := loadJKS(t, path, password)
	pool := x509.NewCertPool()
	for _, alias := range ks.Aliases() {
		e, err := ks.GetTrustedCertificateEntry(alias)
		if err != nil {
			t.Fatalf("truststore entry %s: %v", alias, err)
		}
		c, err := x509.ParseCertificate(e.Certificate.Content)
		if err != nil {
			t.Fatal(err)
		}
		pool.AddCert(c)
	}
	return pool
}

func x509VerifyOpts(roots *x509.CertPool) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: roots, DNSName: "web.shop.svc.cluster.local"}
}
