package vaulttest

import (
	"fmt"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// PKIDomain is the domain EnablePKI's role issues certificates under.
const PKIDomain = "svc.cluster.local"

// PKICommonName is the common name of the root CA EnablePKI generates.
const PKICommonName = "vault-csi test CA"

// EnablePKI mounts the pki secrets engine at mount, generates an internal
// root CA (common_name PKICommonName, RSA 2048, valid 10 years; the mount's
// max_lease_ttl is tuned to match) and creates role `role` that issues
// certificates for any name under PKIDomain (allow_subdomains, not the bare
// domain) with ttl and max_ttl = ttl, and generate_lease=false. It returns
// the CA certificate in PEM.
//
// A write to <mount>/issue/<role> with {"common_name": "web.ns.svc.cluster.local"}
// (optionally alt_names, ip_sans, ttl) returns, in Secret.Data:
//
//	certificate       PEM leaf certificate
//	private_key       PEM private key ("RSA PRIVATE KEY" for the default rsa key type)
//	private_key_type  "rsa"
//	issuing_ca        PEM of the CA that signed it (the root here)
//	ca_chain          []any of PEM strings: the chain above the leaf (here just the root)
//	serial_number     "xx:xx:..." hex, colon-separated
//	expiration        json.Number, Unix seconds of NotAfter
//
// With generate_lease=false the Secret has no lease (LeaseID "",
// LeaseDuration 0, Renewable false): the certificate's NotAfter is the only
// expiry, and a consumer must re-issue before it. With generate_lease=true
// (ConfigurePKI's generateLease) the Secret carries a lease of the cert's TTL,
// and revoking it revokes the certificate (CRL), it does not delete anything.
func (s *Server) EnablePKI(t testing.TB, mount, role string, ttl time.Duration) string {
	t.Helper()
	ca, err := s.ConfigurePKI(mount, role, ttl, false)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// ConfigurePKI is EnablePKI without a testing.TB, with generate_lease a choice.
func (s *Server) ConfigurePKI(mount, role string, ttl time.Duration, generateLease bool) (string, error) {
	const caTTL = 10 * 365 * 24 * time.Hour
	if err := s.Root.Sys().Mount(mount, &vault.MountInput{
		Type:   "pki",
		Config: vault.MountConfigInput{MaxLeaseTTL: caTTL.String()},
	}); err != nil {
		return "", fmt.Errorf("mount pki at %s: %w", mount, err)
	}
	// Tune too, so a mount created elsewhere (or re-tuned) gets the same limit.
	maxTTL := caTTL.String()
	if err := s.Root.Sys().TuneMountAllowNil(mount, vault.TuneMountConfigInput{MaxLeaseTTL: &maxTTL}); err != nil {
		return "", fmt.Errorf("tune pki at %s: %w", mount, err)
	}
	sec, err := s.Root.Logical().Write(mount+"/root/generate/internal", map[string]any{
		"common_name": PKICommonName,
		"ttl":         caTTL.String(),
		"issuer_name": "root",
	})
	if err != nil {
		return "", fmt.Errorf("generate root CA at %s: %w", mount, err)
	}
	if sec == nil {
		return "", fmt.Errorf("generate root CA at %s: empty response", mount)
	}
	ca, _ := sec.Data["certificate"].(string)
	if ca == "" {
		return "", fmt.Errorf("generate root CA at %s: no certificate in %v", mount, sec.Data)
	}
	if _, err := s.Root.Logical().Write(mount+"/roles/"+role, map[string]any{
		"allowed_domains":  []string{PKIDomain},
		"allow_subdomains": true,
		"ttl":              int(ttl.Seconds()),
		"max_ttl":          int(ttl.Seconds()),
		"generate_lease":   generateLease,
	}); err != nil {
		return "", fmt.Errorf("create pki role %s: %w", role, err)
	}
	return ca, nil
}
