package driver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
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
	t.Run("SealedNodeInRotation", func(t *testing.T) { testSealedNode(t, c) })
	t.Run("LeaderLossDuringBurst", func(t *testing.T) { testLeaderLossBurst(t, c) })
	t.Run("LeaderLossDuringRefresh", func(t *testing.T) { testLeaderLossRefresh(t, c) })
	t.Run("ChurnSoak", func(t *testing.T) { testChurnSoak(t, c) })
}

// testLeaderLossRefresh: running volumes with a KV secret and a database
// lease both due (aged past the rotation period and two thirds of the
// lease) when the active node is killed. Re-publishes (kubelet's clock)
// answer OK throughout and no file is lost or emptied; once a new leader
// is elected the refreshes resume (with the driver's backoff): the KV file
// takes the new value and the database lease is renewed, not re-issued:
// the same user, which still logs in.
func testLeaderLossRefresh(t *testing.T, c *vaulttest.Cluster) {
	const vols, within = 5, 40 * time.Second
	pg := vaulttest.StartPostgres(t)
	c.API.EnableDatabase(t, pg, "app", time.Hour, 2*time.Hour)
	c.API.PutKV2(t, "ha-rotating", map[string]any{"value": "v1"})
	c.API.Policy(t, "ha-dyn", `
path "database/creds/app" { capabilities = ["read"] }
path "secret/data/ha-rotating" { capabilities = ["read"] }
`)
	c.API.Role(t, "ha-dyn", shopPod.Namespace, shopPod.ServiceAccount, "ha-dyn")
	d := startDriverFor(t, c.API, "--vault-addr="+c.Addr, "--vault-ca-cert="+c.CA.File)
	const secrets = "- file: db/username\n  path: database/creds/app\n  key: username\n" +
		"- file: db/password\n  path: database/creds/app\n  key: password\n" +
		"- file: value\n  path: secret/data/ha-rotating\n  key: value\n"
	type running struct {
		v          volume
		user, pass string
	}
	rs := make([]running, vols)
	for i := range rs {
		v := haVolume(t, fmt.Sprintf("refresh-%d", i))
		v.role, v.secrets = "ha-dyn", secrets
		// Retried: the cluster may still settle from the last subtest.
		if a := publishRetrying(t, d, c.API, v, 100, 10*time.Second); a[len(a)-1].code != codes.OK {
			t.Fatalf("publish %d: %v %s", i, a[len(a)-1].code, a[len(a)-1].msg)
		}
		rs[i] = running{v: v, user: read(t, filepath.Join(v.target, "db/username")), pass: read(t, filepath.Join(v.target, "db/password"))}
		age(t, d.stateDir, v.target, 41*time.Minute)
	}
	leader, err := c.WaitActive(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	c.Kill(leader)
	t.Cleanup(func() {
		if err := c.Restart(leader); err != nil {
			t.Errorf("restart %s: %v", leader.ID, err)
		}
	})
	// The KV write waits for the new leader (bounded), concurrently with
	// the re-publishes below.
	written := make(chan time.Time, 1)
	go func() {
		_ = pollUntil(within, func() error {
			_, err := c.API.Root.KVv2("secret").Put(context.Background(), "ha-rotating", map[string]any{"value": "v2"})
			return err
		})
		written <- time.Now()
	}()
	done, reissued := make([]bool, vols), make([]bool, vols)
	var wroteAt time.Time
	republishes := 0
	deadline := time.Now().Add(within)
	for left := vols; left > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d volumes did not refresh within %s of the kill", left, vols, within)
		}
		select {
		case wroteAt = <-written:
		default:
		}
		for i, r := range rs {
			if done[i] {
				continue
			}
			republishes++
			if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(c.API, r.v)); err != nil {
				t.Fatalf("re-publish %d during the election: %v (a re-publish must not fail)", i, err)
			}
			user, pass := read(t, filepath.Join(r.v.target, "db/username")), read(t, filepath.Join(r.v.target, "db/password"))
			value := read(t, filepath.Join(r.v.target, "value"))
			if user == "" || pass == "" {
				t.Fatalf("volume %d: database credential file emptied", i)
			}
			if user != r.user && !reissued[i] {
				// A retry after the failed refresh must renew the lease
				// that is still valid, not mint a new user (and leave the
				// old one alive until unpublish).
				t.Errorf("volume %d: database user %s re-issued as %s after the leader loss; want the lease renewed", i, r.user, user)
				reissued[i] = true
				rs[i].user, rs[i].pass = user, pass
			}
			switch value {
			case "v1":
			case "v2":
				done[i] = true
				left--
			default:
				t.Fatalf("volume %d: value file %q", i, value)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, r := range rs {
		if err := pg.CanLogin(r.user, r.pass); err != nil {
			t.Errorf("volume %d: renewed user %s cannot log in: %v", i, r.user, err)
		}
	}
	n := 0
	for _, r := range reissued {
		if r {
			n++
		}
	}
	t.Logf("leader %s killed with %d volumes due; KV written on the new leader %.2fs after the kill; every volume refreshed %.2fs after the kill, %d re-publishes all OK; %d of %d database credentials re-issued rather than renewed",
		leader.ID, vols, wroteAt.Sub(killed).Seconds(), time.Since(killed).Seconds(), republishes, n, vols)
	for i, r := range rs {
		if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-" + r.v.pod.PodUID, TargetPath: r.v.target}); err != nil {
			t.Errorf("unpublish %d: %v", i, err)
		}
	}
}

// testLeaderLossBurst: 50 first publishes in flight when the active node
// is killed (kill -9). Every attempt succeeds or fails Unavailable, never
// past its deadline; retried as kubelet does, every pod gets its volume
// once a new leader is elected. Afterwards: exactly one tmpfs per pod with
// the right file, exactly one live Vault token per volume (a failed
// attempt's token was revoked), and none once all are unpublished.
func testLeaderLossBurst(t *testing.T, c *vaulttest.Cluster) {
	const pods, tries, deadline, pause = 50, 60, 10 * time.Second, 250 * time.Millisecond
	d := startDriverFor(t, c.API, "--vault-addr="+c.Addr, "--vault-ca-cert="+c.CA.File)
	leader, err := c.WaitActive(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tokensBefore, existing := len(aliveAccessors(t, c.API)), accessorSet(t, c.API)
	vols := make([]volume, pods)
	for i := range vols {
		vols[i] = haVolume(t, fmt.Sprintf("burst-%d", i))
	}
	type outcome struct {
		attempts []attempt
		started  []time.Time
	}
	outs := make([]outcome, pods)
	firstDone := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for i := range vols {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for try := 0; try < tries; try++ {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				start := time.Now()
				_, err := d.node.NodePublishVolume(ctx, requestFor(c.API, vols[i]))
				cancel()
				outs[i].started = append(outs[i].started, start)
				outs[i].attempts = append(outs[i].attempts, attempt{code: status.Code(err), took: time.Since(start), msg: status.Convert(err).Message()})
				if err == nil {
					once.Do(func() { close(firstDone) })
					return
				}
				time.Sleep(pause)
			}
		}(i)
	}
	select {
	case <-firstDone:
	case <-time.After(deadline):
	}
	killed := time.Now()
	c.Kill(leader)
	wg.Wait()
	t.Cleanup(func() {
		if err := c.Restart(leader); err != nil {
			t.Errorf("restart %s: %v", leader.ID, err)
		}
	})
	next, err := c.WaitActive(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var recovery, slowest time.Duration
	failed, beforeKill := 0, 0
	for i, o := range outs {
		last := o.attempts[len(o.attempts)-1]
		if last.code != codes.OK {
			t.Fatalf("pod %d: no success in %d attempts; last %v: %s", i, tries, last.code, last.msg)
		}
		if o.started[len(o.started)-1].Before(killed) {
			beforeKill++
		} else if r := o.started[len(o.started)-1].Add(last.took).Sub(killed); recovery == 0 || r < recovery {
			// The first success of an attempt begun after the kill.
			recovery = r
		}
		for _, a := range o.attempts {
			slowest = max(slowest, a.took)
			switch a.code {
			case codes.OK:
			case codes.Unavailable:
				failed++
			default:
				t.Errorf("pod %d: attempt %v after %s: %s", i, a.code, a.took, a.msg)
			}
		}
		b, err := os.ReadFile(filepath.Join(vols[i].target, "password"))
		if err != nil || string(b) != dbPassword {
			t.Errorf("pod %d: password file %q, %v", i, b, err)
		}
	}
	if failed == 0 {
		t.Errorf("no attempt failed: the kill of %s hit no publish in flight", leader.ID)
	}
	if n := ownMounts(t, vols); n != pods {
		t.Errorf("%d tmpfs mounts of the driver at the %d targets, want %d", n, pods, pods)
	}
	t.Logf("leader %s killed with %d publishes in flight (%d done before): new leader %s; %d attempts failed Unavailable, slowest %s; first publish begun after the kill succeeded %.2fs after it",
		leader.ID, pods-beforeKill, beforeKill, next.ID, failed, slowest.Round(time.Millisecond), recovery.Seconds())
	for i, v := range vols {
		if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-" + v.pod.PodUID, TargetPath: v.target}); err != nil {
			t.Errorf("unpublish pod %d: %v", i, err)
		}
	}
	// Every token the driver received went with its volume or was revoked
	// after its failed attempt. What may stay is a login the dying leader
	// committed but never answered: Vault issued it, nobody ever saw it
	// (README: the token expires with its TTL). Such a token was created
	// by the time of the kill, by an attempt then in flight; one created
	// later is the driver's leak.
	inFlight := pods - beforeKill
	var orphans []liveToken
	err = pollUntil(30*time.Second, func() error {
		// The driver's revocation queue (one record per token under
		// <state>/revoke) must be empty: it has nothing left to revoke.
		if pending, _ := os.ReadDir(filepath.Join(d.stateDir, "revoke")); len(pending) > 0 {
			return fmt.Errorf("%d tokens still queued for revocation by the driver", len(pending))
		}
		orphans = orphans[:0]
		for _, tok := range loginTokens(t, c.API, existing) {
			if tok.created.After(killed.Add(time.Second)) { // creation_time has whole seconds
				return fmt.Errorf("token %s created %.1fs after the kill is alive with no volume", tok.accessor, tok.created.Sub(killed).Seconds())
			}
			orphans = append(orphans, tok)
		}
		if len(orphans) > inFlight {
			return fmt.Errorf("%d tokens alive with no volume, more than the %d logins in flight at the kill", len(orphans), inFlight)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	// Revoke those (root) until only the tokens from before the burst are
	// left; Vault may list a token being revoked for a moment, and a lookup
	// may fail during that: poll (bounded).
	revoked := map[string]bool{}
	if err := pollUntil(30*time.Second, func() error {
		for _, tok := range loginTokens(t, c.API, existing) {
			if tok.created.After(killed.Add(time.Second)) {
				return fmt.Errorf("token %s created %.1fs after the kill is alive with no volume", tok.accessor, tok.created.Sub(killed).Seconds())
			}
			if _, err := c.API.Root.Logical().Write("auth/token/revoke-accessor", map[string]any{"accessor": tok.accessor}); err == nil {
				revoked[tok.accessor] = true
			}
		}
		if n := len(aliveAccessors(t, c.API)); n != tokensBefore {
			return fmt.Errorf("%d live tokens at the end, want %d as before the burst", n, tokensBefore)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if len(revoked) > inFlight {
		t.Errorf("%d tokens were alive with no volume, more than the %d logins in flight at the kill", len(revoked), inFlight)
	}
	t.Logf("after unpublish: %d tokens the killed leader issued and never answered (of %d logins in flight), revoked by the test", len(revoked), inFlight)
}

// liveToken is one live Vault token, by accessor.
type liveToken struct {
	accessor string
	created  time.Time
}

// accessorSet returns the accessors of the live tokens.
func accessorSet(t *testing.T, v *vaulttest.Server) map[string]bool {
	t.Helper()
	s, err := v.Root.Logical().List("auth/token/accessors")
	if err != nil {
		t.Fatalf("list token accessors: %v", err)
	}
	out := map[string]bool{}
	if s != nil {
		keys, _ := s.Data["keys"].([]any)
		for _, k := range keys {
			out[k.(string)] = true
		}
	}
	return out
}

// aliveAccessors is the accessors whose token Vault still looks up. A
// leader killed mid-revocation can leave an accessor listed whose token is
// gone (lookup fails, revoke-accessor too, until Vault's token tidy): that
// is not a live token.
func aliveAccessors(t *testing.T, v *vaulttest.Server) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for k := range accessorSet(t, v) {
		if sec, err := v.Root.Logical().Write("auth/token/lookup-accessor", map[string]any{"accessor": k}); err == nil && sec != nil {
			out[k] = true
		}
	}
	return out
}

// loginTokens lists the live tokens from a jwt login, except those in skip.
func loginTokens(t *testing.T, v *vaulttest.Server, skip map[string]bool) []liveToken {
	t.Helper()
	var out []liveToken
	for k := range accessorSet(t, v) {
		if skip[k] {
			continue
		}
		sec, err := v.Root.Logical().Write("auth/token/lookup-accessor", map[string]any{"accessor": k})
		if err != nil || sec == nil {
			continue // revoked meanwhile
		}
		ct, _ := sec.Data["creation_time"].(json.Number)
		n, _ := ct.Int64()
		created := time.Unix(n, 0)
		if path, _ := sec.Data["path"].(string); strings.HasPrefix(path, "auth/"+v.JWTMount+"/login") {
			out = append(out, liveToken{accessor: k, created: created})
		}
	}
	return out
}

// pollUntil polls f (bounded) until it returns nil, and returns its last error.
func pollUntil(within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ownMounts counts the driver's tmpfs mounts (source vault-csi) at the
// volumes' targets.
func ownMounts(t *testing.T, vols []volume) int {
	t.Helper()
	targets := map[string]bool{}
	for _, v := range vols {
		targets[v.target] = true
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		for i := 6; i+2 < len(f); i++ {
			if f[i] == "-" && targets[f[4]] && f[i+2] == "vault-csi" {
				n++
			}
		}
	}
	return n
}

// attempt is one NodePublishVolume call as kubelet makes it.
type attempt struct {
	code codes.Code
	took time.Duration
	msg  string
}

// publishRetrying publishes v as kubelet does: each call with its own
// deadline, a failed one retried (up to tries) after a short pause.
func publishRetrying(t *testing.T, d *driverProc, srv *vaulttest.Server, v volume, tries int, deadline time.Duration) []attempt {
	t.Helper()
	var out []attempt
	for i := 0; i < tries; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		start := time.Now()
		_, err := d.node.NodePublishVolume(ctx, requestFor(srv, v))
		cancel()
		out = append(out, attempt{code: status.Code(err), took: time.Since(start), msg: status.Convert(err).Message()})
		if err == nil {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out
}

// driverFront is a front of its own for one driver, listing first ahead
// of the other nodes, so the driver's first connection goes to it.
func driverFront(t *testing.T, c *vaulttest.Cluster, first *vaulttest.Node) *vaulttest.Front {
	t.Helper()
	order := []string{first.Listen}
	for _, n := range c.Nodes {
		if n != first {
			order = append(order, n.Listen)
		}
	}
	f, err := vaulttest.NewFront(order)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// testSealedNode: a sealed node stays in the front's rotation (it still
// accepts connections). A publish that reaches it fails fast, Unavailable,
// never past its deadline, and the next attempt reaches another node, even
// though the driver's connection to the sealed node was already open.
func testSealedNode(t *testing.T, c *vaulttest.Cluster) {
	cases := []struct {
		name string
		// pick chooses the node to seal; seal seals it.
		pick func(active, standby *vaulttest.Node) *vaulttest.Node
		seal func(*vaulttest.Node) error
		// sealFirst seals before the driver starts, so its very first
		// connection goes to the sealed node.
		sealFirst bool
	}{
		// sys/seal on the active node: the driver's open connection to it
		// stays open and now answers 503; another node is elected.
		{"active node sealed under an open connection",
			func(a, _ *vaulttest.Node) *vaulttest.Node { return a }, c.Seal, false},
		// A standby restarted without unseal: back in the rotation, sealed.
		{"standby restarted sealed",
			func(_, s *vaulttest.Node) *vaulttest.Node { return s }, c.RestartSealed, true},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			active, err := c.WaitActive(30 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var standby *vaulttest.Node
			for _, n := range c.Nodes {
				if n != active {
					standby = n
					break
				}
			}
			sealed := tc.pick(active, standby)
			front := driverFront(t, c, sealed)
			seal := func() {
				if err := tc.seal(sealed); err != nil {
					t.Fatalf("seal %s: %v", sealed.ID, err)
				}
				t.Cleanup(func() {
					if err := c.Unseal(sealed); err != nil {
						t.Errorf("unseal %s: %v", sealed.ID, err)
					}
				})
			}
			if tc.sealFirst {
				seal()
			}
			d := startDriverFor(t, c.API, "--vault-addr=https://"+front.Addr, "--vault-ca-cert="+c.CA.File)
			if !tc.sealFirst {
				// Open the driver's connection (to the node to seal) first;
				// retried: a node that just rejoined may not know the leader yet.
				warm := haVolume(t, fmt.Sprintf("sealed-%d-warm", ci))
				if a := publishRetrying(t, d, c.API, warm, 5, 5*time.Second); a[len(a)-1].code != codes.OK {
					t.Fatalf("publish before the seal: %v %s", a[len(a)-1].code, a[len(a)-1].msg)
				}
				seal()
			}
			const pods, tries, deadline = 6, 3, 5 * time.Second
			var slowest time.Duration
			failed := 0
			for i := 0; i < pods; i++ {
				v := haVolume(t, fmt.Sprintf("sealed-%d-%d", ci, i))
				as := publishRetrying(t, d, c.API, v, tries, deadline)
				for _, a := range as {
					slowest = max(slowest, a.took)
					if a.code != codes.OK && a.code != codes.Unavailable {
						t.Errorf("pod %d: attempt %v after %s: %s", i, a.code, a.took, a.msg)
					}
					if a.code == codes.Unavailable {
						failed++
						t.Logf("pod %d: Unavailable after %s: %s", i, a.took.Round(time.Millisecond), a.msg)
					}
				}
				if last := as[len(as)-1]; last.code != codes.OK {
					t.Fatalf("pod %d: no success in %d attempts with %s sealed; last: %v %s", i, tries, sealed.ID, last.code, last.msg)
				}
			}
			if failed == 0 {
				t.Fatalf("no attempt reached the sealed node %s: the test proves nothing", sealed.ID)
			}
			t.Logf("%s sealed: %d pods published, %d attempts failed Unavailable, slowest attempt %s; front connections %v",
				sealed.ID, pods, failed, slowest.Round(time.Millisecond), front.Accepted())
		})
	}
}

// haVolume is a one-file volume of shopPod's secret/data/db password.
func haVolume(t *testing.T, seed string) volume {
	pod := shopPod
	pod.PodName, pod.PodUID = "ha-"+seed, vaulttest.PodUID("ha-"+seed)
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
