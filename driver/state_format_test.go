package driver_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// The placeholders of driver/state/testdata (see its README).
const (
	phToken            = "{{TOKEN}}"
	phAccessor         = "{{ACCESSOR}}"
	phIncomingToken    = "{{INCOMING_TOKEN}}"
	phIncomingAccessor = "{{INCOMING_ACCESSOR}}"
	phTarget           = "{{TARGET}}"
	phDBLease          = "{{DB_LEASE}}"
	phFetchedAt        = "{{FETCHED_AT}}"
	phTokenIssuedAt    = "{{TOKEN_ISSUED_AT}}"
	phTokenExpiresAt   = "{{TOKEN_EXPIRES_AT}}"
)

// stateFixture fills a fixture of driver/state/testdata with live values.
func stateFixture(t *testing.T, name string, vals map[string]string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("state", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var pairs []string
	for k, v := range vals {
		pairs = append(pairs, k, v)
	}
	s := strings.NewReplacer(pairs...).Replace(string(b))
	if strings.Contains(s, "{{") {
		t.Fatalf("%s: a placeholder has no value: %s", name, s)
	}
	return []byte(s)
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// vaultLogin logs in as the pod, as the driver would, and returns the
// token's values for a fixture.
func vaultLogin(t *testing.T, v *vaulttest.Server, role string) (token, accessor string, issued, expires time.Time) {
	t.Helper()
	sec, err := v.Root.Logical().Write("auth/"+v.JWTMount+"/login", map[string]any{"role": role, "jwt": v.Token(shopPod, time.Hour)})
	if err != nil || sec == nil || sec.Auth == nil {
		t.Fatalf("login: %v", err)
	}
	issued = time.Now()
	return sec.Auth.ClientToken, sec.Auth.Accessor, issued, issued.Add(time.Duration(sec.Auth.LeaseDuration) * time.Second)
}

func tokenAlive(t *testing.T, v *vaulttest.Server, token string) bool {
	t.Helper()
	c, err := v.Root.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	_, err = c.Auth().Token().LookupSelf()
	return err == nil
}

// waitRevoked polls (bounded) until Vault no longer knows a token.
func waitRevoked(t *testing.T, v *vaulttest.Server, what, token string) {
	t.Helper()
	for i := 0; i < 200; i++ { // up to 10s
		if !tokenAlive(t, v, token) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("%s still valid in Vault", what)
}

func leaseKnown(v *vaulttest.Server, id string) bool {
	_, err := v.Root.Logical().Write("sys/leases/lookup", map[string]any{"lease_id": id})
	return err == nil
}

// Every recorded state format, as an earlier driver left it on tmpfs, still
// refreshes and revokes: the record is placed in the state dir with live
// Vault tokens and leases in it, the driver binary starts on it, a
// re-publish refreshes (KV re-read, database lease renewed in place,
// certificate re-issued), and the unpublish revokes the token and with it
// the lease. A refresh's unadopted login, a pending first publish and a
// revocation left for retry are revoked at start-up.
func TestStateFormatsRefreshAndRevoke(t *testing.T) {
	v := vaulttest.Start(t)
	pg := vaulttest.StartPostgres(t)
	v.EnableDatabase(t, pg, "app", time.Hour, 2*time.Hour)
	v.EnablePKI(t, "pki", "web", time.Hour)
	v.Policy(t, "dyn", `
path "database/creds/app" { capabilities = ["read"] }
path "pki/issue/web" { capabilities = ["create", "update"] }
path "secret/data/db" { capabilities = ["read"] }
`)
	v.Role(t, "dyn", shopPod.Namespace, shopPod.ServiceAccount, "dyn")
	d := startDriverFor(t, v)
	st, err := state.Open(d.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	// place stops the driver, writes a file as an earlier driver left it,
	// and starts the driver binary on the state dir.
	place := func(path string, body []byte) {
		t.Helper()
		d.stop(syscall.SIGKILL)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
		d.start(t, d.args)
	}

	for _, fx := range []struct {
		file string
		kind string // volume, incoming, pending, revocation
	}{
		{file: "volume-v1.json", kind: "volume"},
		{file: "volume-v2.json", kind: "volume"},
		{file: "volume-incoming-v1.json", kind: "incoming"},
		{file: "volume-incoming-v2.json", kind: "incoming"},
		{file: "pending-v1.json", kind: "pending"},
		{file: "pending-v2.json", kind: "pending"},
		{file: "revocation-v1.json", kind: "revocation"},
		{file: "revocation-v2.json", kind: "revocation"},
	} {
		t.Run(fx.file, func(t *testing.T) {
			v.PutKV2(t, "db", map[string]any{"user": "payments"})
			target := newTarget(t)
			vol := volume{target: target, pod: shopPod, role: "dyn", secrets: dynamicSecrets}
			token, accessor, issued, expires := vaultLogin(t, v, "dyn")
			vals := map[string]string{
				phToken: token, phAccessor: accessor, phTarget: target,
				phTokenIssuedAt: rfc3339(issued), phTokenExpiresAt: rfc3339(expires),
				phFetchedAt: rfc3339(time.Now().Add(-41 * time.Minute)), // two thirds through the 1h TTLs
			}
			switch fx.kind {
			case "pending":
				// A first publish killed after its login: nothing mounted.
				place(st.Path(target), stateFixture(t, fx.file, vals))
				waitRevoked(t, v, "a pending publish's token", token)
				if rec, err := st.Get(target); rec != nil || err != nil {
					t.Errorf("pending record left after start-up: %v, %v", rec, err)
				}
				// kubelet's retry publishes afresh.
				if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
					t.Fatal(err)
				}
				unpublish(t, d, target)
				return
			case "revocation":
				place(filepath.Join(d.stateDir, "revoke", state.RevocationKey(token)+".json"), stateFixture(t, fx.file, vals))
				waitRevoked(t, v, "a token left for revocation", token)
				return
			}
			// A volume published for real; its token and lease go into the
			// old record in place of the ones the driver wrote.
			if !tokenAlive(t, v, token) { // the login above is only used as incoming
				t.Fatal("login token dead")
			}
			if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
				t.Fatal(err)
			}
			live, err := st.Get(target)
			if err != nil || live == nil || live.Session == nil {
				t.Fatalf("no record after publish: %v", err)
			}
			for _, s := range live.Secrets {
				if s.LeaseID != "" {
					vals[phDBLease] = s.LeaseID
				}
			}
			vals[phIncomingToken], vals[phIncomingAccessor] = token, accessor
			vals[phToken], vals[phAccessor] = live.Session.Token, live.Session.Accessor
			vals[phTokenIssuedAt], vals[phTokenExpiresAt] = rfc3339(live.Session.IssuedAt), rfc3339(live.Session.ExpiresAt)
			if fx.kind != "incoming" {
				if err := v.Root.Auth().Token().RevokeTree(token); err != nil { // used only as an incoming token
					t.Fatal(err)
				}
			}
			user := read(t, filepath.Join(target, "db/username"))
			cert := serial(t, read(t, filepath.Join(target, "tls/tls.crt")))
			place(st.Path(target), stateFixture(t, fx.file, vals))
			if fx.kind == "incoming" {
				// A refresh killed between its login and adopting the token.
				waitRevoked(t, v, "a refresh's unadopted token", token)
			}

			v.PutKV2(t, "db", map[string]any{"user": "payments-v2"})
			if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
				t.Fatal(err)
			}
			if got := read(t, filepath.Join(target, "config")); got != "payments-v2" {
				t.Errorf("KV not refreshed: config = %q", got)
			}
			if got := read(t, filepath.Join(target, "db/username")); got != user {
				t.Errorf("database user changed (%s -> %s): the recorded lease was not renewed", user, got)
			}
			if serial(t, read(t, filepath.Join(target, "tls/tls.crt"))) == cert {
				t.Error("certificate not re-issued")
			}
			rec, err := st.Get(target)
			if err != nil || rec == nil {
				t.Fatalf("record after refresh: %v", err)
			}
			if time.Since(rec.FetchedAt) > time.Minute || rec.Session == nil || rec.Session.Token != vals[phToken] {
				t.Errorf("refresh did not record a fetch with the recorded token: fetched %s ago", time.Since(rec.FetchedAt))
			}
			if want := shopPod; rec.Pod != want {
				t.Errorf("pod read from the record = %+v, want %+v", rec.Pod, want)
			}
			if b, _ := os.ReadFile(st.Path(target)); !strings.Contains(string(b), `"schema":2`) {
				t.Errorf("the record was not rewritten in schema 2: %.80s", b)
			}
			if !tokenAlive(t, v, vals[phToken]) {
				t.Fatal("the recorded token died before the unpublish")
			}

			unpublish(t, d, target)
			waitRevoked(t, v, "the recorded token", vals[phToken])
			waitUserGone(t, pg, user)
			gone := false
			for i := 0; i < 200 && !gone; i++ { // Vault revokes a token's leases in the background: up to 10s
				if gone = !leaseKnown(v, vals[phDBLease]); !gone {
					time.Sleep(50 * time.Millisecond)
				}
			}
			if !gone {
				t.Error("the recorded database lease outlived the unpublish")
			}
		})
	}
}
