package render

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"strings"

	keystore "github.com/pavlo-v-chernykh/keystore-go/v4"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// Format is how an issued certificate (a PKI issue response: certificate,
// private_key, issuing_ca, ca_chain) is written.
type Format string

// Formats a secrets entry may name.
const (
	FormatNone        Format = ""
	FormatPEMBundle   Format = "pem-bundle"        // key, certificate, chain
	FormatPKCS12      Format = "pkcs12"            // key and certificate with its chain
	FormatPKCS12Trust Format = "pkcs12-truststore" // the CA chain as trusted certificates
	FormatJKS         Format = "jks"
	FormatJKSTrust    Format = "jks-truststore"
)

// Formats lists the valid names, for error messages.
const Formats = "pem-bundle, pkcs12, pkcs12-truststore, jks, jks-truststore"

// Alias is the name of the key entry in a keystore; trusted certificates
// are ca-0, ca-1, ... in chain order.
const Alias = "vault"

// MinJKSPassword is the shortest password Java's keytool accepts; a JKS
// keystore with a key needs one (passwordFrom).
const MinJKSPassword = 6

// ParseFormat checks a name from a secrets entry.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case FormatPEMBundle, FormatPKCS12, FormatPKCS12Trust, FormatJKS, FormatJKSTrust:
		return f, nil
	case FormatNone:
	}
	return FormatNone, fmt.Errorf("%w: unknown format (want one of %s)", ErrInvalid, Formats)
}

// TakesPassword reports whether the format is encrypted or signed with a password.
func (f Format) TakesPassword() bool { return f != FormatPEMBundle && f != FormatNone }

// NeedsPassword reports whether the format cannot be written with an empty password.
func (f Format) NeedsPassword() bool { return f == FormatJKS }

// issued is the parsed parts of an issue response.
type issued struct {
	keyPEM  string
	key     crypto.PrivateKey
	certPEM string
	cert    *x509.Certificate
	chain   []*x509.Certificate // without the certificate itself, deduplicated
	chainPE []string
}

// Write renders fields (the issue response) as f, with password for the
// formats that take one. The same fields and password give the same bytes.
func Write(f Format, fields map[string]any, password string) ([]byte, error) {
	is, err := parseIssued(fields, f != FormatPKCS12Trust && f != FormatJKSTrust)
	if err != nil {
		return nil, err
	}
	if f.NeedsPassword() && len(password) < MinJKSPassword {
		return nil, fmt.Errorf("%w: %s needs a password of at least %d characters (passwordFrom)", ErrInvalid, f, MinJKSPassword)
	}
	rnd := newDetRand(string(f), is)
	switch f {
	case FormatPEMBundle:
		var b strings.Builder
		b.WriteString(strings.TrimSpace(is.keyPEM) + "\n")
		b.WriteString(strings.TrimSpace(is.certPEM) + "\n")
		for _, c := range is.chainPE {
			b.WriteString(strings.TrimSpace(c) + "\n")
		}
		return []byte(b.String()), nil
	case FormatPKCS12:
		out, err := pkcs12.Modern2023.WithRand(rnd).Encode(is.key, is.cert, is.chain, password)
		if err != nil {
			return nil, fmt.Errorf("%w: encode PKCS#12: %w", ErrInvalid, err)
		}
		return out, nil
	case FormatPKCS12Trust:
		out, err := pkcs12.Modern2023.WithRand(rnd).EncodeTrustStore(is.chain, password)
		if err != nil {
			return nil, fmt.Errorf("%w: encode PKCS#12 truststore: %w", ErrInvalid, err)
		}
		return out, nil
	case FormatJKS, FormatJKSTrust:
		return writeJKS(f, is, password, rnd)
	case FormatNone:
	}
	return nil, fmt.Errorf("%w: unknown format", ErrInvalid)
}

func writeJKS(f Format, is *issued, password string, rnd *detRand) ([]byte, error) {
	ks := keystore.New(keystore.WithOrderedAliases(), keystore.WithCustomRandomNumberGenerator(rnd))
	pw := []byte(password)
	if f == FormatJKS {
		der, err := x509.MarshalPKCS8PrivateKey(is.key)
		if err != nil {
			return nil, fmt.Errorf("%w: the private key cannot be written as PKCS#8", ErrInvalid)
		}
		chain := []keystore.Certificate{{Type: "X509", Content: is.cert.Raw}}
		for _, c := range is.chain {
			chain = append(chain, keystore.Certificate{Type: "X509", Content: c.Raw})
		}
		// The certificate's start, not the clock: the same bytes each time.
		entry := keystore.PrivateKeyEntry{CreationTime: is.cert.NotBefore, PrivateKey: der, CertificateChain: chain}
		if err := ks.SetPrivateKeyEntry(Alias, entry, pw); err != nil {
			return nil, fmt.Errorf("%w: JKS key entry: %w", ErrInvalid, err)
		}
	} else {
		for i, c := range is.chain {
			entry := keystore.TrustedCertificateEntry{CreationTime: c.NotBefore, Certificate: keystore.Certificate{Type: "X509", Content: c.Raw}}
			if err := ks.SetTrustedCertificateEntry(fmt.Sprintf("ca-%d", i), entry); err != nil {
				return nil, fmt.Errorf("%w: JKS trusted entry: %w", ErrInvalid, err)
			}
		}
	}
	var buf bytes.Buffer
	if err := ks.Store(&buf, pw); err != nil {
		return nil, fmt.Errorf("%w: write JKS: %w", ErrInvalid, err)
	}
	return buf.Bytes(), nil
}

// parseIssued reads the issue response's fields; withKey: the format
// needs the key and certificate, not only the chain.
func parseIssued(fields map[string]any, withKey bool) (*issued, error) {
	is := &issued{}
	str := func(name string) (string, error) {
		v, ok := fields[name]
		if !ok {
			return "", fmt.Errorf("%w: the secret has no %s field (is it a PKI issue response?)", ErrInvalid, name)
		}
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf("%w: field %s is not a string", ErrInvalid, name)
		}
		return s, nil
	}
	var err error
	if is.certPEM, err = str("certificate"); err != nil {
		return nil, err
	}
	if is.cert, err = parseCert(is.certPEM, "certificate"); err != nil {
		return nil, err
	}
	if withKey {
		if is.keyPEM, err = str("private_key"); err != nil {
			return nil, err
		}
		if is.key, err = parseKey(is.keyPEM); err != nil {
			return nil, err
		}
	}
	var pems []string
	switch v := fields["ca_chain"].(type) {
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok {
				pems = append(pems, s)
			}
		}
	case []string:
		pems = v
	}
	if len(pems) == 0 {
		if s, ok := fields["issuing_ca"].(string); ok && s != "" {
			pems = []string{s}
		}
	}
	seen := map[string]bool{string(is.cert.Raw): true}
	for _, p := range pems {
		// An entry may hold several certificates.
		rest := []byte(p)
		for range 64 {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil || block.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("%w: field ca_chain holds something that is not a certificate", ErrInvalid)
			}
			if !seen[string(c.Raw)] {
				seen[string(c.Raw)] = true
				is.chain = append(is.chain, c)
				is.chainPE = append(is.chainPE, string(pem.EncodeToMemory(block)))
			}
		}
	}
	if !withKey && len(is.chain) == 0 {
		return nil, fmt.Errorf("%w: the secret has no ca_chain or issuing_ca for a truststore", ErrInvalid)
	}
	return is, nil
}

func parseCert(s, field string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: field %s is not a PEM certificate", ErrInvalid, field)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: field %s does not parse as X.509", ErrInvalid, field)
	}
	return c, nil
}

// parseKey accepts what Vault issues: PKCS#1 RSA, SEC 1 EC, or PKCS#8
// (private_key_format=pkcs8), in PEM.
func parseKey(s string) (crypto.PrivateKey, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, fmt.Errorf("%w: field private_key is not PEM (set no private_key_format, or pem or pkcs8)", ErrInvalid)
	}
	var (
		k   any
		err error
	)
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: field private_key is a PEM block of an unknown type", ErrInvalid)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: field private_key does not parse", ErrInvalid)
	}
	return k, nil
}

// detRand is the salts and IVs of a keystore: SHA-256 in counter mode over
// the key, certificate and chain, so that the same inputs give the same
// file. The output is never a key, only what a format salts with; the
// password is left out so that a salt (stored in clear) is no shortcut to
// guessing it.
type detRand struct {
	seed [32]byte
	ctr  uint64
	buf  []byte
}

func newDetRand(f string, is *issued) *detRand {
	h := sha256.New()
	for _, p := range []string{"vault-csi-driver/render", f, is.keyPEM, is.certPEM} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	for _, c := range is.chain {
		h.Write(c.Raw)
	}
	r := &detRand{}
	copy(r.seed[:], h.Sum(nil))
	return r
}

func (r *detRand) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(r.buf) == 0 {
			var c [8]byte
			binary.BigEndian.PutUint64(c[:], r.ctr)
			r.ctr++
			sum := sha256.Sum256(append(r.seed[:], c[:]...))
			r.buf = sum[:]
		}
		k := copy(p[n:], r.buf)
		r.buf = r.buf[k:]
		n += k
	}
	return n, nil
}
