package render

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	keystore "github.com/pavlo-v-chernykh/keystore-go/v4"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// issue makes fields shaped like a Vault PKI issue response, signed by a
// fresh CA, with the key in the given PEM form.
func issue(t testing.TB, keyForm string) (map[string]any, *x509.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Unix(1700000000, 0), NotAfter: time.Unix(1700000000, 0).Add(24 * time.Hour * 3650),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "web.shop.svc"},
		DNSNames: []string{"web.shop.svc"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	var keyPEM []byte
	switch keyForm {
	case "pkcs8":
		der, _ := x509.MarshalPKCS8PrivateKey(key)
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	default:
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	}
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	return map[string]any{
		"certificate": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})),
		"private_key": string(keyPEM), "private_key_type": "rsa",
		"issuing_ca": caPEM, "ca_chain": []any{caPEM},
	}, ca
}

func TestFormats(t *testing.T) {
	for _, keyForm := range []string{"pkcs1", "pkcs8"} {
		fields, ca := issue(t, keyForm)
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		write := func(f Format, pw string) []byte {
			t.Helper()
			out, err := Write(f, fields, pw)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			again, _ := Write(f, fields, pw)
			if !bytes.Equal(out, again) {
				t.Fatalf("%s: two writes of the same certificate differ", f)
			}
			return out
		}

		bundle := write(FormatPEMBundle, "")
		pair, err := tls.X509KeyPair(bundle, bundle)
		if err != nil {
			t.Fatalf("%s bundle: key does not match certificate: %v", keyForm, err)
		}
		leaf, _ := x509.ParseCertificate(pair.Certificate[0])
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "web.shop.svc"}); err != nil {
			t.Fatalf("bundle's certificate does not verify: %v", err)
		}
		if len(pair.Certificate) != 2 {
			t.Fatalf("bundle holds %d certificates, want leaf + CA", len(pair.Certificate))
		}

		p12 := write(FormatPKCS12, "s3cret-pw")
		k, c, chain, err := pkcs12.DecodeChain(p12, "s3cret-pw")
		if err != nil || !c.Equal(leaf) || len(chain) != 1 || !chain[0].Equal(ca) {
			t.Fatalf("pkcs12: %v", err)
		}
		if k.(*rsa.PrivateKey).N.Cmp(leaf.PublicKey.(*rsa.PublicKey).N) != 0 {
			t.Fatal("pkcs12 key does not match its certificate")
		}
		if _, _, err := pkcs12.Decode(p12, "wrong"); err == nil {
			t.Fatal("pkcs12 opens with a wrong password")
		}
		empty := write(FormatPKCS12, "")
		if _, _, _, err := pkcs12.DecodeChain(empty, ""); err != nil {
			t.Fatalf("pkcs12 with an empty password: %v", err)
		}
		trust := write(FormatPKCS12Trust, "")
		certs, err := pkcs12.DecodeTrustStore(trust, "")
		if err != nil || len(certs) != 1 || !certs[0].Equal(ca) {
			t.Fatalf("pkcs12 truststore: %d certs, %v", len(certs), err)
		}

		jks := write(FormatJKS, "changeit")
		ks := keystore.New()
		if err := ks.Load(bytes.NewReader(jks), []byte("changeit")); err != nil {
			t.Fatal(err)
		}
		e, err := ks.GetPrivateKeyEntry(Alias, []byte("changeit"))
		if err != nil || len(e.CertificateChain) != 2 || !bytes.Equal(e.CertificateChain[0].Content, leaf.Raw) {
			t.Fatalf("jks key entry: %v", err)
		}
		jk, err := x509.ParsePKCS8PrivateKey(e.PrivateKey)
		if err != nil || jk.(*rsa.PrivateKey).N.Cmp(leaf.PublicKey.(*rsa.PublicKey).N) != 0 {
			t.Fatalf("jks key does not match its certificate: %v", err)
		}
		jt := write(FormatJKSTrust, "")
		ts := keystore.New()
		if err := ts.Load(bytes.NewReader(jt), nil); err != nil {
			t.Fatal(err)
		}
		te, err := ts.GetTrustedCertificateEntry("ca-0")
		if err != nil || !bytes.Equal(te.Certificate.Content, ca.Raw) {
			t.Fatalf("jks truststore: %v", err)
		}
	}
}

// What cannot become a keystore is ErrInvalid naming the field, never a value.
func TestFormatRejects(t *testing.T) {
	good, _ := issue(t, "pkcs1")
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for kk, vv := range good {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		f      Format
		fields map[string]any
		pw     string
		want   string
	}{
		{"not a PKI response", FormatPKCS12, map[string]any{"password": "hunter2-value"}, "", "no certificate field"},
		{"no key", FormatPEMBundle, with("private_key", nil), "", "no private_key"},
		{"key not PEM", FormatPKCS12, with("private_key", "MIIEvQ-hunter2-der"), "", "private_key is not PEM"},
		{"cert garbage", FormatJKS, with("certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "changeit", "does not parse"},
		{"chain garbage", FormatPKCS12Trust, with("ca_chain", []any{"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}), "", "ca_chain"},
		{"no chain for truststore", FormatJKSTrust, with("ca_chain", nil), "", ""},
		{"jks short password", FormatJKS, good, "abc", "at least 6"},
		{"cert not a string", FormatPEMBundle, with("certificate", 5), "", "not a string"},
	} {
		fields := tc.fields
		if tc.name == "no chain for truststore" {
			fields = with("ca_chain", nil)
			delete(fields, "issuing_ca")
			tc.want = "no ca_chain"
		}
		_, err := Write(tc.f, fields, tc.pw)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want ErrInvalid containing %q", tc.name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error holds a value: %v", tc.name, err)
		}
	}
	for _, name := range []string{"", "pem", "PKCS12", "p12", "jceks"} {
		if _, err := ParseFormat(name); err == nil {
			t.Errorf("format %q accepted", name)
		}
	}
}

func BenchmarkWriteFormat(b *testing.B) {
	fields, _ := issue(b, "pkcs1")
	for _, f := range []Format{FormatPEMBundle, FormatPKCS12, FormatJKS} {
		b.Run(string(f), func(b *testing.B) {
			for b.Loop() {
				if _, err := Write(f, fields, "changeit"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
