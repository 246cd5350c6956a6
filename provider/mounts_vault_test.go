package provider_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"vaultcsi.dev/driver/provider"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// The issuing check lives in Fetch, so a refresh gets it too, and the
// mount's type is trusted from the cache for at most mountCacheTTL: a PKI
// mount replaced by a KV mount at the same path is written to only until
// the cached answer expires, then refused with zero writes. (A real
// Vault, a fake clock for the cache.)
func TestIssuingCheckFollowsMountChanges(t *testing.T) {
	v := vaulttest.Start(t)
	v.EnablePKI(t, "certs", "web", time.Hour)
	v.Policy(t, "pki", `path "certs/*" { capabilities = ["create", "read", "update"] }`)
	pod := vaulttest.Pod{Namespace: "shop", PodName: "web-0", PodUID: "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d", ServiceAccount: "web"}
	v.Role(t, "pki", pod.Namespace, pod.ServiceAccount, "pki")

	var mu sync.Mutex
	ops := map[string]int{}
	p, err := provider.New(provider.Config{Addr: v.Addr, AuthMethod: provider.AuthJWT, AuthMount: v.JWTMount, OnRequest: func(op string, _ int) {
		mu.Lock()
		ops[op]++
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	provider.SetMountsClock(p, func() time.Time { return now })
	count := func(op string) int {
		mu.Lock()
		defer mu.Unlock()
		return ops[op]
	}
	req := &provider.Request{Role: "pki", JWT: v.Token(pod, time.Hour), Secrets: []provider.SecretSpec{{
		File: "tls.crt", Path: "certs/issue/web", Key: "certificate", Index: 3,
		Args: map[string]string{"common_name": "web.shop.svc.cluster.local"},
	}}}

	res, err := p.Fetch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	req.Session = res.Session // as a refresh does
	if count(provider.OpLookup) != 1 || count("write") != 1 {
		t.Fatalf("first fetch: %d lookups, %d writes, want 1 and 1", count(provider.OpLookup), count("write"))
	}

	// The admin replaces the PKI engine with a KV mount at the same path.
	if err := v.Root.Sys().Unmount("certs"); err != nil {
		t.Fatal(err)
	}
	if err := v.Root.Sys().Mount("certs", &vault.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}

	// Past the TTL the refresh asks Vault again and writes nothing.
	now = now.Add(provider.MountCacheTTL)
	w0 := count("write")
	_, err = p.Fetch(context.Background(), req)
	if !errors.Is(err, provider.ErrNotIssuing) {
		t.Fatalf("refresh after the mount became KV: %v, want provider.ErrNotIssuing", err)
	}
	if got := err.Error(); !strings.Contains(got, "secrets[3].args") || !strings.Contains(got, "kv mount") {
		t.Errorf("error %q does not name secrets[3].args and the kv mount", got)
	}
	if count("write") != w0 {
		t.Errorf("%d writes after the mount became KV", count("write")-w0)
	}
	if count(provider.OpLookup) != 2 {
		t.Errorf("%d lookups, want 2 (the cache expired once)", count(provider.OpLookup))
	}
	if sec, err := v.Root.Logical().Read("certs/issue/web"); err != nil || sec != nil {
		t.Errorf("certs/issue/web was written: %v %v", sec, err)
	}
	if err := p.Release(context.Background(), res.Session); err != nil {
		t.Fatal(err)
	}
}
