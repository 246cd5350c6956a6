package provider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"syscall"
	"testing"
)

// The classification table of wrap for transport errors: every failed
// check of Vault's certificate is Unavailable and says TLS verification
// failed, with its x509 cause; anything else is plain Unavailable.
func TestWrapClassifiesTLSVerification(t *testing.T) {
	urlErr := func(err error) error {
		return &url.Error{Op: "Put", URL: "https://vault:8200/v1/auth/jwt/login", Err: err}
	}
	cases := []struct {
		name      string
		err       error
		wantTLS   bool
		wantCause string
	}{
		{"unknown authority", urlErr(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), true, "unknown authority"},
		{"expired", urlErr(&tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired, Detail: "after"}}), true, "expired"},
		{"wrong name", urlErr(&tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: &x509.Certificate{DNSNames: []string{"other"}}, Host: "vault"}}), true, "vault"},
		{"bare x509 error", urlErr(x509.UnknownAuthorityError{}), true, "unknown authority"},
		{"connection refused", urlErr(syscall.ECONNREFUSED), false, "connection refused"},
		{"other TLS error", urlErr(errors.New("tls: handshake failure")), false, "handshake failure"},
	}
	k := &call{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := k.wrap(context.Background(), "vault login", tc.err)
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("%v: not ErrUnavailable", err)
			}
			if got := errors.Is(err, ErrTLSVerify); got != tc.wantTLS {
				t.Errorf("%v: ErrTLSVerify %v, want %v", err, got, tc.wantTLS)
			}
			if msg := err.Error(); strings.Contains(msg, "TLS verification failed") != tc.wantTLS || !strings.Contains(msg, tc.wantCause) {
				t.Errorf("message %q: want the cause %q%s", msg, tc.wantCause, map[bool]string{true: " and 'TLS verification failed'"}[tc.wantTLS])
			}
		})
	}
}
