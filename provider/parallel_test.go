package provider_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// readGate is a proxy in front of Vault that holds every secret read until
// want reads are in flight at once (or until a bound passes), and records
// the most it saw at once.
type readGate struct {
	mu       sync.Mutex
	inFlight int
	most     int
	want     int
	all      chan struct{}
}

func (g *readGate) enter() {
	g.mu.Lock()
	g.inFlight++
	g.most = max(g.most, g.inFlight)
	if g.inFlight == g.want {
		close(g.all)
	}
	g.mu.Unlock()
	select {
	case <-g.all:
	case <-time.After(3 * time.Second): // fewer ever came at once
	}
}

func (g *readGate) leave() {
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
}

// A volume's reads all go out at once, up to the per-volume cap, so a
// volume of 12 secrets pays one Vault round trip, not two (the cap was 8:
// 20 ms more at 20 ms RTT). Vault is real; the gate only counts.
func TestReadsInParallel(t *testing.T) {
	const paths = 12
	v := vaulttest.Start(t)
	var names []string
	for i := range paths {
		names = append(names, fmt.Sprintf("secret/data/p%d", i))
		v.PutKV2(t, fmt.Sprintf("p%d", i), map[string]any{"v": fmt.Sprint(i)})
	}
	v.Policy(t, "payments", vaulttest.ReadPolicy(names...))
	v.Role(t, "payments", pod.Namespace, pod.ServiceAccount, "payments")
	u, err := url.Parse(v.Addr)
	if err != nil {
		t.Fatal(err)
	}
	g := &readGate{want: paths, all: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u)
	gated := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/secret/data/p") {
			g.enter()
			defer g.leave()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(gated.Close)
	p, err := provider.New(provider.Config{Addr: gated.URL, AuthMethod: provider.AuthJWT, AuthMount: v.JWTMount})
	if err != nil {
		t.Fatal(err)
	}
	var specs []provider.SecretSpec
	for i, n := range names {
		specs = append(specs, provider.SecretSpec{File: fmt.Sprintf("f%d", i), Path: n, Key: "v"})
	}
	res, err := p.Fetch(context.Background(), request(v, specs...))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) != paths {
		t.Fatalf("%d files, want %d", len(res.Files), paths)
	}
	if g.most != paths {
		t.Fatalf("at most %d reads were in flight at once, want all %d", g.most, paths)
	}
}
