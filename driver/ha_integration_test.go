package driver_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// The HA tests share one 3-node TLS cluster: its start-up (about 12 s
// here) is most of their cost. Subtests run in order; each leaves every
// node running, unsealed and in the front.
func TestVaultHA(t *testing.T) {
	c := vaulttest.StartCluster(t)
	t.Logf("3-node TLS cluster start-up: %s", c.StartupTime.Round(time.Millisecond))
	if err := configureVault(c.API); err != nil {
		t.Fatal(err)
	}
	t.Run("TLSVerification", func(t *testing.T) { testTLSVerification(t, c) })
}

// haVolume is a one-file volume of shopPod's secret/data/db password.
func haVolume(t *testing.T, seed string) volume {
	pod := shopPod
	pod.Name, pod.UID = "ha-"+seed, vaulttest.PodUID("ha-"+seed)
	return volume{target: newTarget(t), pod: pod,
		secrets: "- file: password\n  path: secret/data/db\n  key: password\n"}
}

// tlsFront serves cert/key on 127.0.0.1 and passes requests on to the
// cluster (trusting its CA): a Vault endpoint presenting a chosen
// certificate. Returns its https URL.
func tlsFront(t *testing.T, c *vaulttest.Cluster, certFile, keyFile string) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CA.PEM)
	up, _ := url.Parse(c.Addr)
	rp := httputil.NewSingleHostReverseProxy(up)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 5 * time.Second, ErrorLog: nil}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Logf("tls front: %v", err)
		}
	}()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String()
}

// testTLSVerification: the driver checks Vault's certificate against
// --vault-ca-cert. A wrong CA, an expired or a wrong-name certificate
// fails the first publish Unavailable, saying TLS verification failed,
// with nothing mounted or created, even with VAULT_SKIP_VERIFY set in the
// driver's environment (no silent fallback). The same front with a good
// certificate publishes, so only the certificate makes the difference.
func testTLSVerification(t *testing.T, c *vaulttest.Cluster) {
	dir := t.TempDir()
	localhost := vaulttest.LeafOptions{DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}
	goodCert, goodKey, err := c.CA.Issue(dir, "good", localhost)
	if err != nil {
		t.Fatal(err)
	}
	expired := localhost
	expired.NotBefore, expired.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	oldCert, oldKey, err := c.CA.Issue(dir, "expired", expired)
	if err != nil {
		t.Fatal(err)
	}
	nameCert, nameKey, err := c.CA.Issue(dir, "wrong-name", vaulttest.LeafOptions{DNSNames: []string{"vault.elsewhere.example"}})
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := vaulttest.NewCA(dir, "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		addr      string
		ca        string // --vault-ca-cert; empty: the system roots
		skipEnv   bool   // VAULT_SKIP_VERIFY=true in the driver's environment
		wantCode  codes.Code
		wantCause string
	}{
		{name: "good certificate", addr: tlsFront(t, c, goodCert, goodKey), ca: c.CA.File, wantCode: codes.OK},
		{name: "cluster through its front", addr: c.Addr, ca: c.CA.File, wantCode: codes.OK},
		{name: "wrong CA", addr: c.Addr, ca: otherCA.File, wantCode: codes.Unavailable, wantCause: "unknown authority"},
		{name: "wrong CA with VAULT_SKIP_VERIFY", addr: c.Addr, ca: otherCA.File, skipEnv: true, wantCode: codes.Unavailable, wantCause: "unknown authority"},
		{name: "no CA flag", addr: c.Addr, wantCode: codes.Unavailable, wantCause: "unknown authority"},
		{name: "expired certificate", addr: tlsFront(t, c, oldCert, oldKey), ca: c.CA.File, wantCode: codes.Unavailable, wantCause: "expired"},
		{name: "wrong-name certificate", addr: tlsFront(t, c, nameCert, nameKey), ca: c.CA.File, wantCode: codes.Unavailable, wantCause: "127.0.0.1"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skipEnv {
				t.Setenv("VAULT_SKIP_VERIFY", "true")
			}
			flags := []string{"--vault-addr=" + tc.addr}
			if tc.ca != "" {
				flags = append(flags, "--vault-ca-cert="+tc.ca)
			}
			d := startDriverFor(t, c.API, flags...)
			v := haVolume(t, "tls-"+string(rune('a'+i)))
			_, err := d.node.NodePublishVolume(ctxT(t), requestFor(c.API, v))
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("publish: code %v (%v), want %v", got, err, tc.wantCode)
			}
			if tc.wantCode == codes.OK {
				b, err := os.ReadFile(filepath.Join(v.target, "password"))
				if err != nil || string(b) != dbPassword {
					t.Fatalf("password file: %q, %v", b, err)
				}
				return
			}
			msg := status.Convert(err).Message()
			if !strings.Contains(msg, "TLS verification failed") || !strings.Contains(msg, tc.wantCause) {
				t.Errorf("message %q: want it to say TLS verification failed and name %q", msg, tc.wantCause)
			}
			if _, _, mounted := mountOptions(t, v.target); mounted {
				t.Errorf("%s is mounted after a failed publish", v.target)
			}
			if _, err := os.Stat(v.target); !os.IsNotExist(err) {
				t.Errorf("target %s left behind: %v", v.target, err)
			}
		})
	}
}
