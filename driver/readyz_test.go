package driver_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// get returns the status and body of url, polling until the server answers.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls url until check accepts the answer, or fails after within.
func waitFor(t *testing.T, url string, within time.Duration, what string, check func(code int, body string) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body := get(t, url)
		if check(code, body) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s still answers %d %q", what, url, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// /readyz names what is missing until kubelet registered the plugin and
// Vault answered its health endpoint once; then it stays ready through a
// Vault outage, and /healthz (liveness) never depends on Vault.
func TestReadyz(t *testing.T) {
	health, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	vaultAt, err := vaulttest.FreeAddr() // nothing listens here yet
	if err != nil {
		t.Fatal(err)
	}
	kubelet := t.TempDir()
	startDriver(t, "--kubelet-dir="+kubelet, "--health-addr="+health, "--vault-addr=http://"+vaultAt)
	readyz, healthz := "http://"+health+"/readyz", "http://"+health+"/healthz"

	code, body := get(t, readyz)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "kubelet registration has not succeeded") ||
		!strings.Contains(body, "vault has not answered its health endpoint") {
		t.Fatalf("before registration and Vault: /readyz = %d %q", code, body)
	}
	if code, body := get(t, healthz); code != http.StatusOK {
		t.Fatalf("/healthz must not wait for Vault or kubelet: %d %q", code, body)
	}

	// kubelet's side of plugin registration.
	conn := dialRegistration(t, kubelet)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := registerapi.NewRegistrationClient(conn).NotifyRegistrationStatus(ctx,
		&registerapi.RegistrationStatus{PluginRegistered: true}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, readyz, 5*time.Second, "after registration", func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && !strings.Contains(body, "kubelet") &&
			strings.Contains(body, "vault has not answered its health endpoint (last: ")
	})

	// Vault comes up where the driver looks for it. The driver retries with
	// backoff capped at 30s.
	v, err := vaulttest.RunWith(vaulttest.Options{Listen: vaultAt})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	waitFor(t, readyz, 40*time.Second, "after Vault came up", func(code int, body string) bool {
		return code == http.StatusOK && body == "ok\n"
	})

	// A Vault outage later neither unreadies nor kills the driver.
	v.Stop()
	for _, u := range []string{readyz, healthz} {
		if code, body := get(t, u); code != http.StatusOK {
			t.Errorf("with Vault down again: %s = %d %q", u, code, body)
		}
	}
}
