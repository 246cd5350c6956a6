package provider_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider"
	"vaultcsi.dev/driver/provider/vaulttest"
)

var pod = vaulttest.Pod{Namespace: "shop", PodName: "payment-0", PodUID: vaulttest.PodUID("shop/payment-0"), ServiceAccount: "payment"}

// setup starts Vault with a role "payments" for shop/payment that may read
// secret/data/db, secret/data/deleted and kv/app.
func setup(t *testing.T) (*vaulttest.Server, *provider.Provider) {
	t.Helper()
	v := vaulttest.Start(t)
	v.Policy(t, "payments", vaulttest.ReadPolicy("secret/data/db", "secret/data/deleted", "kv/app", "secret/data/missing"))
	v.Role(t, "payments", pod.Namespace, pod.ServiceAccount, "payments")
	v.PutKV2(t, "db", map[string]any{"password": "s3cr3t-pw", "user": "app"})
	v.PutKV2(t, "db", map[string]any{"password": "s3cr3t-pw2", "user": "app", "port": 5432})
	v.PutKV1(t, "app", map[string]any{"token": "kv1-token-value"})
	v.PutKV2(t, "other", map[string]any{"x": "forbidden-value"})
	v.PutKV2(t, "deleted", map[string]any{"x": "gone"})
	if err := v.Root.KVv2("secret").Delete(context.Background(), "deleted"); err != nil {
		t.Fatal(err)
	}
	p, err := provider.New(provider.Config{Addr: v.Addr, AuthMethod: provider.AuthJWT, AuthMount: v.JWTMount})
	if err != nil {
		t.Fatal(err)
	}
	return v, p
}

func request(v *vaulttest.Server, specs ...provider.SecretSpec) *provider.Request {
	return &provider.Request{Role: "payments", JWT: v.Token(pod, time.Hour), Secrets: specs,
		Pod: pod}
}

func TestFetch(t *testing.T) {
	v, p := setup(t)
	ctx := context.Background()
	res, err := p.Fetch(ctx, request(v,
		provider.SecretSpec{File: "password", Path: "secret/data/db", Key: "password"},
		provider.SecretSpec{File: "port", Path: "secret/data/db", Key: "port"},
		provider.SecretSpec{File: "db.json", Path: "secret/data/db"},
		provider.SecretSpec{File: "app-token", Path: "kv/app", Key: "token"},
	))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range res.Files {
		got[f.Name] = string(f.Data)
	}
	want := map[string]string{
		"password":  "s3cr3t-pw2",
		"port":      "5432",
		"db.json":   `{"password":"s3cr3t-pw2","port":5432,"user":"app"}`,
		"app-token": "kv1-token-value",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("file %s = %q, want %q", k, got[k], w)
		}
	}
	// Two paths: one login plus one read each, though secret/data/db backs three files.
	if !res.LoggedIn || res.VaultRequests != 3 {
		t.Errorf("LoggedIn=%v VaultRequests=%d, want true and 3", res.LoggedIn, res.VaultRequests)
	}
	versions := map[string]int64{}
	for _, s := range res.Secrets {
		versions[s.Path] = s.Version
	}
	if versions["secret/data/db"] != 2 || versions["kv/app"] != 0 {
		t.Errorf("versions = %v, want secret/data/db=2 kv/app=0", versions)
	}

	// Reusing the session skips the login.
	req := request(v, provider.SecretSpec{File: "password", Path: "secret/data/db", Key: "password"})
	req.Session = res.Session
	res2, err := p.Fetch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res2.LoggedIn || res2.VaultRequests != 1 {
		t.Errorf("reuse: LoggedIn=%v VaultRequests=%d, want false and 1", res2.LoggedIn, res2.VaultRequests)
	}

	// Release revokes the token: a lookup with it fails afterwards.
	if err := p.Release(ctx, res.Session); err != nil {
		t.Fatal(err)
	}
	c, _ := v.Root.Clone()
	c.SetToken(res.Session.Token)
	if _, err := c.Auth().Token().LookupSelf(); err == nil {
		t.Error("token still valid after Release")
	}
	// Releasing twice is fine (the token is already gone).
	if err := p.Release(ctx, res.Session); err != nil {
		t.Errorf("second Release: %v", err)
	}
	// A revoked session is replaced by a fresh login transparently.
	req.Session = res.Session
	res3, err := p.Fetch(ctx, req)
	if err != nil {
		t.Fatalf("fetch with revoked session: %v", err)
	}
	if !res3.LoggedIn {
		t.Error("expected a new login after the session was revoked")
	}
}

func TestFetchErrors(t *testing.T) {
	v, p := setup(t)
	jwt := v.Token(pod, time.Hour)
	other := vaulttest.Pod{Namespace: "other", PodName: "x", PodUID: vaulttest.PodUID("other/x"), ServiceAccount: "payment"}
	tests := []struct {
		name string
		req  *provider.Request
		want error
	}{
		{"path outside the Vault policy", request(v, provider.SecretSpec{File: "f", Path: "secret/data/other", Key: "x"}), provider.ErrDenied},
		{"missing path", request(v, provider.SecretSpec{File: "f", Path: "secret/data/missing", Key: "x"}), provider.ErrNotFound},
		{"missing key", request(v, provider.SecretSpec{File: "f", Path: "secret/data/db", Key: "nope"}), provider.ErrNotFound},
		{"deleted KV v2 version", request(v, provider.SecretSpec{File: "f", Path: "secret/data/deleted", Key: "x"}), provider.ErrNotFound},
		{"unknown role", func() *provider.Request {
			r := request(v, provider.SecretSpec{File: "f", Path: "secret/data/db"})
			r.Role = "nope"
			return r
		}(), provider.ErrDenied},
		{"token from another namespace", func() *provider.Request {
			r := request(v, provider.SecretSpec{File: "f", Path: "secret/data/db"})
			r.JWT = v.Token(other, time.Hour)
			return r
		}(), provider.ErrDenied},
		{"token for another audience", func() *provider.Request {
			r := request(v, provider.SecretSpec{File: "f", Path: "secret/data/db"})
			r.JWT = v.TokenFor(pod, "not-vault", time.Hour)
			return r
		}(), provider.ErrDenied},
		{"expired token", func() *provider.Request {
			r := request(v, provider.SecretSpec{File: "f", Path: "secret/data/db"})
			r.JWT = v.Token(pod, -time.Hour)
			return r
		}(), provider.ErrDenied},
		{"no token", func() *provider.Request {
			r := request(v, provider.SecretSpec{File: "f", Path: "secret/data/db"})
			r.JWT = ""
			return r
		}(), provider.ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.Fetch(context.Background(), tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			for _, s := range []string{jwt, tt.req.JWT, "s3cr3t", "forbidden-value", "gone"} {
				if s != "" && strings.Contains(err.Error(), s) {
					t.Errorf("error %q leaks %q", err, s)
				}
			}
		})
	}
}

// A failed fetch hands the token it logged in for back to the caller
// (Result.Orphan) instead of revoking it itself, so the caller can revoke it
// after letting go of what others wait for; revoking it leaves nothing.
// OnLogin sees every new token before any read, and its error fails the
// fetch with the token handed back all the same.
func TestFetchFailureHandsBackToken(t *testing.T) {
	v, p := setup(t)
	before := tokenCount(t, v)
	failing := func() *provider.Request {
		return request(v,
			provider.SecretSpec{File: "a", Path: "secret/data/db", Key: "password"},
			provider.SecretSpec{File: "b", Path: "secret/data/missing", Key: "x"})
	}
	recordErr := errors.New("state dir full")
	tests := []struct {
		name    string
		req     *provider.Request
		onLogin error
		want    error
	}{
		{"a read fails", failing(), nil, provider.ErrNotFound},
		{"recording the token fails", request(v, provider.SecretSpec{File: "a", Path: "secret/data/db", Key: "password"}), recordErr, recordErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen []*provider.Session
			tt.req.OnLogin = func(s *provider.Session) error {
				if n := tokenCount(t, v); n != before+1 {
					t.Errorf("OnLogin: %d tokens, want the new one alive (%d)", n, before+1)
				}
				seen = append(seen, s)
				return tt.onLogin
			}
			res, err := p.Fetch(context.Background(), tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if res == nil || res.Orphan == nil || len(seen) != 1 || res.Orphan.Token != seen[0].Token || !res.LoggedIn {
				t.Fatalf("want the login's session handed back and seen once by OnLogin: res %+v, OnLogin saw %d", res, len(seen))
			}
			if res.Session != nil || res.Files != nil {
				t.Errorf("a failed fetch returned a session or files")
			}
			if n := tokenCount(t, v); n != before+1 {
				t.Errorf("tokens after the failed fetch: %d, want %d (the caller revokes)", n, before+1)
			}
			if err := p.Release(context.Background(), res.Orphan); err != nil {
				t.Fatal(err)
			}
			if n := tokenCount(t, v); n != before {
				t.Errorf("tokens after Release: %d, want %d", n, before)
			}
		})
	}
	// A fetch that fails before any login hands back nothing.
	req := failing()
	req.JWT = ""
	if res, err := p.Fetch(context.Background(), req); err == nil || res.Orphan != nil {
		t.Errorf("no login: err %v, orphan %v", err, res.Orphan != nil)
	}
}

// A login Vault answers after the caller's deadline still yields its
// token to someone who revokes it: the orphan handler when one is set (the
// driver's revocation queue), else the provider itself. Vault is real; a
// proxy delays its login answers, as a slow network or a loaded Vault does.
func TestLateLoginTokenIsNotLost(t *testing.T) {
	v, _ := setup(t)
	u, err := url.Parse(v.Addr)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(r *http.Response) error {
		if strings.HasSuffix(r.Request.URL.Path, "/login") {
			time.Sleep(400 * time.Millisecond) // Vault has issued the token; the answer is late
		}
		return nil
	}
	slow := httptest.NewServer(rp)
	t.Cleanup(slow.Close)
	before := tokenCount(t, v)
	for _, withHandler := range []bool{true, false} {
		p, err := provider.New(provider.Config{Addr: slow.URL, AuthMethod: provider.AuthJWT, AuthMount: v.JWTMount})
		if err != nil {
			t.Fatal(err)
		}
		handed := make(chan *provider.Session, 1)
		if withHandler {
			p.SetOrphanHandler(func(s *provider.Session, pod provider.Identity) {
				if pod.Namespace != "shop" || pod.ServiceAccount != "payment" {
					t.Errorf("orphan handed over for %+v", pod)
				}
				handed <- s
			})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		_, err = p.Fetch(ctx, request(v, provider.SecretSpec{File: "a", Path: "secret/data/db", Key: "password"}))
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the caller's deadline", err)
		}
		if withHandler {
			select {
			case s := <-handed:
				if err := p.Release(context.Background(), s); err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the late login's token was never handed over")
			}
		}
		n := 0
		for i := 0; i < 100; i++ { // bounded: 10s
			if n = tokenCount(t, v); n == before {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if n != before {
			t.Errorf("handler %v: %d tokens alive, want %d: the late login's token leaked", withHandler, n, before)
		}
	}
}

// releaseOrphan revokes the token a failed Fetch logged in for, as its
// caller must (the driver hands it to its revocation queue).
func releaseOrphan(t *testing.T, p *provider.Provider, res *provider.Result) {
	t.Helper()
	if res == nil || res.Orphan == nil {
		t.Fatal("a fetch that failed after its login handed no token back")
	}
	if err := p.Release(context.Background(), res.Orphan); err != nil {
		t.Fatal(err)
	}
}

func tokenCount(t *testing.T, v *vaulttest.Server) int {
	t.Helper()
	s, err := v.Root.Logical().List("auth/token/accessors")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := s.Data["keys"].([]any)
	return len(keys)
}

func TestUnavailable(t *testing.T) {
	// Nothing listens on a port we just closed.
	addr, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p, err := provider.New(provider.Config{Addr: "http://" + addr, AuthMethod: provider.AuthJWT})
	if err != nil {
		t.Fatal(err)
	}
	req := &provider.Request{Role: "r", JWT: "header.payload.sig", Secrets: []provider.SecretSpec{{File: "f", Path: "secret/data/x"}}}
	if _, err := p.Fetch(context.Background(), req); !errors.Is(err, provider.ErrUnavailable) {
		t.Errorf("closed port: err = %v, want ErrUnavailable", err)
	} else if strings.Contains(err.Error(), req.JWT) {
		t.Errorf("error leaks the JWT: %v", err)
	}

	// A server that accepts and never answers: the request's deadline wins.
	// (A real Vault cannot be made to hang like this on demand.)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	p, _ = provider.New(provider.Config{Addr: "http://" + l.Addr().String(), AuthMethod: provider.AuthJWT})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := p.Fetch(ctx, req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hanging server: err = %v, want DeadlineExceeded", err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, c := range []provider.Config{
		{Addr: "http://127.0.0.1:1", AuthMethod: "ldap"},
		{AuthMethod: provider.AuthJWT},
		{Addr: "http://127.0.0.1:1", CACertFile: "/nonexistent/ca.pem"},
	} {
		if _, err := provider.New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	p, err := provider.New(provider.Config{Addr: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if c := p.Config(); c.AuthMethod != provider.AuthKubernetes || c.AuthMount != "kubernetes" {
		t.Errorf("defaults = %+v", c)
	}
}

func TestSessionUsable(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name string
		s    *provider.Session
		want bool
	}{
		{"nil", nil, false},
		{"no token", &provider.Session{}, false},
		{"no expiry", &provider.Session{Token: "t"}, true},
		{"fresh", &provider.Session{Token: "t", IssuedAt: now, ExpiresAt: now.Add(time.Hour)}, true},
		{"two thirds through", &provider.Session{Token: "t", IssuedAt: now.Add(-41 * time.Minute), ExpiresAt: now.Add(19 * time.Minute)}, false},
		{"expired", &provider.Session{Token: "t", IssuedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}, false},
		{"short token inside the 10s floor", &provider.Session{Token: "t", IssuedAt: now, ExpiresAt: now.Add(9 * time.Second)}, false},
	}
	for _, tt := range tests {
		if got := tt.s.Usable(now); got != tt.want {
			t.Errorf("%s: Usable = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// Whole-map JSON must be deterministic so unchanged data never rewrites files.
func TestWholeMapJSONStable(t *testing.T) {
	v, p := setup(t)
	var first string
	for i := 0; i < 5; i++ {
		res, err := p.Fetch(context.Background(), request(v, provider.SecretSpec{File: "db.json", Path: "secret/data/db"}))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(res.Files[0].Data, &m); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = string(res.Files[0].Data)
		} else if string(res.Files[0].Data) != first {
			t.Fatalf("JSON differs between reads: %s vs %s", first, res.Files[0].Data)
		}
		_ = p.Release(context.Background(), res.Session)
	}
}

// Vault's multi-line error lists reach Events and kubelet as one line.
func TestVaultErrorIsOneLine(t *testing.T) {
	v, p := setup(t)
	_, err := p.Fetch(context.Background(), request(v, provider.SecretSpec{File: "f", Path: "secret/data/other", Key: "x"}))
	if !errors.Is(err, provider.ErrDenied) {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\n\t") || strings.Contains(msg, "error occurred") || !strings.HasSuffix(msg, "permission denied") {
		t.Errorf("error text not cleaned to one line: %q", msg)
	}
}
