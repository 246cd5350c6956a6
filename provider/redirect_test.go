package provider_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"vaultcsi.dev/driver/provider"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// A standby that cannot forward answers 307 to the active node's address.
// The provider follows such a redirect once, through vault/api, with its
// own TLS trust: never to plain http (the token would travel in clear
// text), never to a certificate the configured CA did not sign. The
// redirecting standby is an httptest server because a real one redirects
// only to its cluster's advertised https address (the fault is the point).
func TestRedirectKeepsTLSTrust(t *testing.T) {
	dir := t.TempDir()
	ca, err := vaulttest.NewCA(dir, "vault-ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := vaulttest.NewCA(dir, "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	const token = "hvs.redirect-test-token"
	// target counts the requests it got and those that carried the token.
	type target struct {
		url            string
		hits, tokenHit atomic.Int32
	}
	handler := func(tg *target) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			tg.hits.Add(1)
			if r.Header.Get("X-Vault-Token") == token {
				tg.tokenHit.Add(1)
			}
			w.WriteHeader(http.StatusNoContent)
		}
	}
	tlsServer := func(c *vaulttest.CA, name string, h http.Handler) string {
		cert, key, err := c.Issue(dir, name, vaulttest.LeafOptions{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		s := httptest.NewUnstartedServer(h)
		s.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
		s.StartTLS()
		t.Cleanup(s.Close)
		return s.URL
	}
	plain, trusted, foreign := &target{}, &target{}, &target{}
	ps := httptest.NewServer(handler(plain))
	t.Cleanup(ps.Close)
	plain.url = ps.URL
	trusted.url = tlsServer(ca, "active", handler(trusted))
	foreign.url = tlsServer(other, "impostor", handler(foreign))

	cases := []struct {
		name     string
		to       *target
		wantErr  error // nil: the redirect is followed and the revoke succeeds
		wantHits int32
	}{
		{name: "https, same CA", to: trusted, wantHits: 1},
		{name: "downgrade to http", to: plain, wantErr: provider.ErrUnavailable},
		{name: "https, another CA", to: foreign, wantErr: provider.ErrTLSVerify},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			standby := tlsServer(ca, "standby", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, tc.to.url+r.URL.RequestURI(), http.StatusTemporaryRedirect)
			}))
			p, err := provider.New(provider.Config{Addr: standby, CACertFile: ca.File, AuthMethod: provider.AuthJWT})
			if err != nil {
				t.Fatal(err)
			}
			before, beforeToken := tc.to.hits.Load(), tc.to.tokenHit.Load()
			err = p.Release(context.Background(), &provider.Session{Token: token})
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("release through a redirect: %v, want %v", err, tc.wantErr)
			}
			if got := tc.to.hits.Load() - before; got != tc.wantHits {
				t.Errorf("%d requests reached %s, want %d", got, tc.to.url, tc.wantHits)
			}
			if tc.wantHits == 0 && tc.to.tokenHit.Load() != beforeToken {
				t.Errorf("the token reached %s", tc.to.url)
			}
		})
	}
}
