//go:build e2e

package e2e

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// Scenario 11's Vault objects: a PKI mount and role of its own, and KV
// secrets under the fmt role's prefix.
const (
	fmtPKIMount   = "e2e-pki"
	fmtPKIRole    = "fmt"
	fmtPKIIssue   = fmtPKIMount + "/issue/" + fmtPKIRole
	fmtCommonName = "web.e2e.svc.cluster.local"
	fmtKSPassword = "e2e-ks-pass-1"
)

// fmtSecrets: a template over KV and a keystore with its password from KV,
// beside the PEM bundle of the same certificate.
var fmtSecrets = fmt.Sprintf(`
- file: app.conf
  template: '{{ with secret "secret/data/e2e/fmt/app" }}greeting={{ .greeting }}{{ end }}'
- file: tls/bundle.pem
  path: %[1]s
  args: {common_name: %[2]s}
  format: pem-bundle
- file: tls/keystore.p12
  path: %[1]s
  args: {common_name: %[2]s}
  format: pkcs12
  passwordFrom: {path: secret/data/e2e/fmt/web, key: keystorePassword}
`, fmtPKIIssue, fmtCommonName)

// setupFormatsVault mounts PKI (once) and gives role fmt its policy.
func setupFormatsVault(c *vault.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mounts, err := c.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return fmt.Errorf("list mounts: %w", err)
	}
	if _, ok := mounts[fmtPKIMount+"/"]; !ok {
		if err := c.Sys().MountWithContext(ctx, fmtPKIMount, &vault.MountInput{Type: "pki", Config: vault.MountConfigInput{MaxLeaseTTL: "87600h"}}); err != nil {
			return fmt.Errorf("mount pki: %w", err)
		}
		if _, err := c.Logical().WriteWithContext(ctx, fmtPKIMount+"/root/generate/internal", map[string]any{"common_name": "e2e CA", "ttl": "87600h"}); err != nil {
			return fmt.Errorf("generate root: %w", err)
		}
	}
	if _, err := c.Logical().WriteWithContext(ctx, fmtPKIMount+"/roles/"+fmtPKIRole, map[string]any{
		"allowed_domains": []string{"svc.cluster.local"}, "allow_subdomains": true, "ttl": "1h", "max_ttl": "1h",
	}); err != nil {
		return fmt.Errorf("pki role: %w", err)
	}
	policy := `path "secret/data/e2e/fmt/*" { capabilities = ["read"] }
path "` + fmtPKIIssue + `" { capabilities = ["create", "update"] }
`
	if err := c.Sys().PutPolicyWithContext(ctx, "fmt", policy); err != nil {
		return fmt.Errorf("policy fmt: %w", err)
	}
	return nil
}

// 11: a pod reads a rendered template and a PKCS#12 keystore; a KV change
// re-renders the template in the running pod.
func (s *suite) testFormats(t *testing.T) {
	ns := s.appNS
	if err := setupFormatsVault(s.vc); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]map[string]any{
		"e2e/fmt/app": {"greeting": "hello-1"},
		"e2e/fmt/web": {"keystorePassword": fmtKSPassword},
	} {
		if err := s.setup.putSecret(s.vc, name, data); err != nil {
			t.Fatal(err)
		}
	}
	s.createPod(t, podSpec{name: "formats", ns: ns, sa: "fmt", role: "fmt", secrets: fmtSecrets})
	ready := s.waitReady(t, ns, "formats", 2*time.Minute)
	s.waitContent(t, ns, "formats", "/secrets/app.conf", "greeting=hello-1", 10*time.Second)

	// The keystore, as the pod reads it, opens with its password and holds
	// the bundle's certificate.
	b64, err := s.exec(ns, "formats", "base64 /secrets/tls/keystore.p12")
	if err != nil {
		t.Fatal(err)
	}
	p12, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(b64), ""))
	if err != nil {
		t.Fatalf("keystore bytes: %v", err)
	}
	_, ksCert, _, err := pkcs12.DecodeChain(p12, fmtKSPassword)
	if err != nil {
		t.Fatalf("the pod's keystore does not open: %v", err)
	}
	bundle, err := s.exec(ns, "formats", "cat /secrets/tls/bundle.pem")
	if err != nil {
		t.Fatal(err)
	}
	var leaf *x509.Certificate
	for rest := []byte(bundle); leaf == nil; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			t.Fatal("no certificate in the pod's bundle")
		}
		if blk.Type == "CERTIFICATE" {
			if leaf, err = x509.ParseCertificate(blk.Bytes); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !leaf.Equal(ksCert) || ksCert.Subject.CommonName != fmtCommonName {
		t.Fatal("the keystore and the bundle hold different certificates")
	}

	if err := s.setup.putSecret(s.vc, "e2e/fmt/app", map[string]any{"greeting": "hello-2"}); err != nil {
		t.Fatal(err)
	}
	took := s.waitContent(t, ns, "formats", "/secrets/app.conf", "greeting=hello-2", 90*time.Second)
	s.record("11: pod with a template, a PEM bundle and a PKCS#12 keystore Ready in %s; a KV change re-rendered the template in the running pod after %s",
		ready.Round(time.Millisecond), took.Round(100*time.Millisecond))
	s.deletePod(t, ns, "formats", time.Minute)
}
