package driver_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// liveTokens counts the tokens alive in Vault (the root token included).
func liveTokens(t *testing.T, v *vaulttest.Server) int {
	t.Helper()
	s, err := v.Root.Logical().List("auth/token/accessors")
	if err != nil {
		t.Fatalf("list token accessors: %v", err)
	}
	if s == nil {
		return 0
	}
	keys, _ := s.Data["keys"].([]any)
	return len(keys)
}

// waitTokens polls (bounded) until only the root token is alive and
// returns how long that took.
func waitTokens(t *testing.T, v *vaulttest.Server, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	n := 0
	for time.Since(start) < within {
		if n = liveTokens(t, v); n == 1 {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%d Vault tokens alive %v later, want only the root token", n, within)
	return 0
}

// ownVault is a Vault for one test (its token count is the test's alone)
// with a role "payments" for shopPod that reads secret/data/db and n
// secrets secret/data/many/NNN (key v, value manyValue(i)).
func ownVault(t *testing.T, n int) *vaulttest.Server {
	t.Helper()
	v := vaulttest.Start(t)
	v.Policy(t, "payments", vaulttest.ReadPolicy("secret/data/db")+`path "secret/data/many/*" { capabilities = ["read"] }`)
	v.Role(t, "payments", shopPod.Namespace, shopPod.ServiceAccount, "payments")
	v.PutKV2(t, "db", map[string]any{"password": dbPassword})
	for i := 0; i < n; i++ {
		v.PutKV2(t, fmt.Sprintf("many/%03d", i), map[string]any{"v": manyValue(i)})
	}
	return v
}

// manyValue is the value of secret/data/many/NNN.
func manyValue(i int) string { return fmt.Sprintf("value-%03d-%s", i, strings.Repeat("x", 200)) }

// restart kills the driver (if it runs) and starts it again with the same
// flags and state dir, as a DaemonSet's restarted container would.
func (d *driverProc) restart(t *testing.T) {
	t.Helper()
	d.stop(syscall.SIGKILL)
	d.start(t, d.args)
}

// ---------------------------------------------------------------- faults

// Proxy modes.
const (
	proxyPass           int32 = iota
	proxyHangAfterLogin       // logins pass; every other request is black-holed
	proxyDown                 // every request is dropped unanswered
)

// vaultProxy stands between the driver and a real Vault and plays the
// network faults Vault itself cannot be made to: a path that answers a
// login and then loses every request in flight (they are never answered
// and never reach Vault, even once the path recovers), or one that drops
// every request. Vault, its tokens and their revocation are real.
type vaultProxy struct {
	URL    string
	mode   atomic.Int32
	logins atomic.Int32
	hung   atomic.Int32
	closed chan struct{}
	rp     *httputil.ReverseProxy
}

func startVaultProxy(t *testing.T, v *vaulttest.Server) *vaultProxy {
	t.Helper()
	u, err := url.Parse(v.Addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &vaultProxy{closed: make(chan struct{}), rp: httputil.NewSingleHostReverseProxy(u)}
	srv := httptest.NewServer(p)
	p.URL = srv.URL
	t.Cleanup(func() { close(p.closed); srv.Close() })
	return p
}

func (p *vaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	login := strings.HasPrefix(r.URL.Path, "/v1/auth/") && strings.HasSuffix(r.URL.Path, "/login")
	switch p.mode.Load() {
	case proxyHangAfterLogin:
		if !login {
			p.hung.Add(1)
			select {
			case <-r.Context().Done(): // the client gave up: the request is lost
			case <-p.closed:
			}
			panic(http.ErrAbortHandler)
		}
	case proxyDown:
		panic(http.ErrAbortHandler) // connection dropped, nothing reaches Vault
	}
	if login {
		p.logins.Add(1)
	}
	p.rp.ServeHTTP(w, r)
}

// ---------------------------------------------------------------- item 5

// A Vault path that answers logins and then hangs must not wedge the
// driver: publishes that fail after their login give their Vault slot and
// target lock back at once (their tokens are revoked with a short deadline
// afterwards, and retried in the background), so once Vault is reachable
// again a new publish succeeds promptly, and no token is left alive.
func TestHungVaultDoesNotWedgePublishes(t *testing.T) {
	v := ownVault(t, 0)
	p := startVaultProxy(t, v)
	d := startDriverFor(t, v, "--vault-addr="+p.URL)

	p.mode.Store(proxyHangAfterLogin)
	const n = 20 // more than the 16 Vault slots
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			req := requestFor(v, volume{target: newTarget(t), pod: shopPod, secrets: "- file: pw\n  path: secret/data/db\n  key: password\n"})
			if _, err := d.node.NodePublishVolume(ctx, req); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != n || p.logins.Load() < 16 {
		t.Fatalf("%d of %d publishes failed after %d logins; want all to fail after at least 16 logins", failed.Load(), n, p.logins.Load())
	}
	t.Logf("%d publishes logged in (%d tokens alive) and then hung", p.logins.Load(), liveTokens(t, v)-1)

	// Vault is reachable again; what was in flight stays lost.
	p.mode.Store(proxyPass)
	recovered := time.Now()
	target := newTarget(t)
	var err error
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = d.node.NodePublishVolume(ctx, requestFor(v, volume{target: target, pod: shopPod,
			secrets: "- file: pw\n  path: secret/data/db\n  key: password\n"}))
		cancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no publish succeeded after Vault recovered: %v", err)
	}
	t.Logf("a new publish succeeded %v after Vault recovered", time.Since(recovered).Round(time.Millisecond))
	if got := read(t, filepath.Join(target, "pw")); got != dbPassword {
		t.Errorf("file = %q", got)
	}
	unpublish(t, d, target)
	waitTokens(t, v, 90*time.Second)
	t.Logf("every token revoked %v after Vault recovered", time.Since(recovered).Round(100*time.Millisecond))
}

// ---------------------------------------------------------------- item 8

// Unpublish during a Vault outage unmounts at once and keeps the token on
// record; once Vault is back the background retry revokes it, also when
// the driver is restarted during the outage. Two outages: Vault frozen
// (SIGSTOP: it takes connections and answers nothing) and a network path
// that drops every request (nothing reaches Vault at all).
func TestRevocationRetriedAfterOutage(t *testing.T) {
	const volumes = 4
	for _, tt := range []struct {
		name    string
		fault   string // sigstop or partition
		restart bool
	}{
		{"vault frozen", "sigstop", false},
		{"vault frozen, driver restarted", "sigstop", true},
		{"network drops requests", "partition", false},
		{"network drops requests, driver restarted", "partition", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := ownVault(t, 0)
			p := startVaultProxy(t, v)
			d := startDriverFor(t, v, "--vault-addr="+p.URL)
			var targets []string
			for i := 0; i < volumes; i++ {
				target := newTarget(t)
				targets = append(targets, target)
				if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, volume{target: target, pod: shopPod,
					secrets: "- file: pw\n  path: secret/data/db\n  key: password\n"})); err != nil {
					t.Fatal(err)
				}
			}
			if n := liveTokens(t, v); n != volumes+1 {
				t.Fatalf("%d tokens alive, want %d", n, volumes+1)
			}
			resume := func() {}
			switch tt.fault {
			case "sigstop":
				if err := v.Pause(); err != nil {
					t.Fatal(err)
				}
				resume = func() {
					if err := v.Resume(); err != nil {
						t.Fatal(err)
					}
				}
				t.Cleanup(func() { _ = v.Resume() })
			case "partition":
				p.mode.Store(proxyDown)
				resume = func() { p.mode.Store(proxyPass) }
			}
			var wg sync.WaitGroup
			for _, target := range targets {
				wg.Add(1)
				go func(target string) {
					defer wg.Done()
					if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
						t.Errorf("unpublish during the outage: %v", err)
					}
				}(target)
			}
			wg.Wait()
			for _, target := range targets {
				assertNothingMounted(t, target)
			}
			if recs, _ := os.ReadDir(filepath.Join(d.stateDir, "revoke")); len(recs) != volumes {
				t.Errorf("%d revocation records during the outage, want %d", len(recs), volumes)
			}
			if tt.restart {
				d.restart(t)
			}
			resume()
			// A frozen Vault may still act on requests it took before it froze
			// once it runs again; a dropped request never reaches it, so there
			// every token must still be alive now, or the test proves nothing.
			alive := liveTokens(t, v) - 1
			if tt.fault == "partition" && alive != volumes {
				t.Fatalf("%d tokens alive when the network came back, want %d", alive, volumes)
			}
			took := waitTokens(t, v, 60*time.Second)
			t.Logf("%d tokens alive when Vault came back; none (besides root) %v later", alive, took.Round(100*time.Millisecond))
			// A frozen Vault may have revoked a token before the driver's
			// retry (due within its backoff) finds it gone: bounded wait.
			for i := 0; i < 100; i++ {
				if recs, _ := os.ReadDir(filepath.Join(d.stateDir, "revoke")); len(recs) == 0 {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Error("revocation records left 10s after every token was revoked")
		})
	}
}
