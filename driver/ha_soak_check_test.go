package driver_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// How long the end of the soak waits for things to settle (bounded).
const (
	soakSettleFor = 90 * time.Second
	// vaultDrainFor is how long Vault gets to finish revocations it
	// answered before a leader change interrupted them, before its token
	// tidy runs.
	vaultDrainFor = 30 * time.Second
	// rssSettleFor covers the Go runtime's forced GC (every 2 minutes of
	// no collection): garbage of the last wave may wait for it, and the
	// driver exposes no way to force one.
	rssSettleFor    = 150 * time.Second
	rssSettleSample = time.Second
)

// testChurnSoak: volumes published and unpublished in waves (KV and
// database secrets) through the driver binary against the 3-node TLS
// cluster, with a leader kill -9 and a full-cluster restart in the
// middle. A publish failing Unavailable is retried as kubelet would;
// every unpublish succeeds eventually. Afterwards: no mount, no state
// record, no live token from the driver's logins, no database lease, and
// the driver's RSS within 10% of its start (measured after a warm-up wave).
func testChurnSoak(t *testing.T, c *vaulttest.Cluster) {
	total := soakVolumes(t)
	perWave := total / soakWaves
	pg := vaulttest.StartPostgres(t)
	c.API.EnableDatabase(t, pg, soakRole, time.Hour, 2*time.Hour)
	c.API.PutKV2(t, soakKV, map[string]any{"value": soakKVValue})
	c.API.Policy(t, soakRole, fmt.Sprintf(`
path "database/creds/%s" { capabilities = ["read"] }
path "secret/data/%s" { capabilities = ["read"] }
`, soakRole, soakKV))
	c.API.Role(t, soakRole, shopPod.Namespace, shopPod.ServiceAccount, soakRole)
	d := startObservedDriver(t, c.API, "--vault-addr="+c.Addr, "--vault-ca-cert="+c.CA.File)
	s := &soak{t: t, c: c, d: d}
	began := time.Now()

	// Warm-up: one wave in and out, so lazy initialisation (TLS sessions,
	// pools, caches) is in the baseline.
	warm := make([]volume, perWave)
	for i := range warm {
		warm[i] = soakVolume(t, fmt.Sprintf("soak-warm-%d", i), i)
	}
	if _, err := s.wave(nil, warm, soakNoEvent); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	if _, err := s.wave(warm, nil, soakNoEvent); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	s.vols = append(s.vols, warm...)
	if err := pollUntil(soakSettleFor, func() error { return s.leftovers(true) }); err != nil {
		t.Fatalf("after the warm-up: %v", err)
	}
	rssStart := settledRSS(t, d.cmd.Process.Pid, 0)
	reqStart := d.scrape(t).vaultRequests()
	s.log = nil

	var windows []eventWindow
	var prev []volume
	churnStart := time.Now()
	for w := range soakWaves {
		next := make([]volume, perWave)
		for i := range next {
			next[i] = soakVolume(t, fmt.Sprintf("soak-%d-%d", w, i), i)
		}
		s.vols = append(s.vols, next...)
		win, err := s.wave(prev, next, soakEventAt(w))
		if win != nil {
			windows = append(windows, *win)
			t.Logf("wave %d: %s, %.2fs without a leader", w, win.event, win.recovered.Seconds())
		}
		if err != nil {
			t.Fatalf("wave %d: %v", w, err)
		}
		prev = next
	}
	if _, err := s.wave(prev, nil, soakNoEvent); err != nil {
		t.Fatalf("last unpublishes: %v", err)
	}
	churn := time.Since(churnStart)
	if len(windows) != 2 {
		t.Fatalf("%d cluster events ran, want a leader kill and a full restart", len(windows))
	}

	// Every call's outcome: OK, or Unavailable while the cluster changed.
	counts := map[codes.Code]int{}
	publishes, unpublishes := 0, 0
	for _, call := range s.log {
		counts[call.code]++
		if call.publish {
			publishes++
		} else {
			unpublishes++
		}
		if call.publish && call.code != codes.OK && call.code != codes.Unavailable {
			t.Errorf("publish attempt failed %v (want OK or Unavailable): %s", call.code, call.msg)
		}
	}

	// The driver's background revocations finish (its queue is state
	// records): then no mount and no record is left.
	if err := pollUntil(soakSettleFor, func() error { return s.leftovers(false) }); err != nil {
		t.Errorf("after the soak: %v", err)
	}
	// What Vault issued across an event and never answered, and what its
	// interrupted revocations left (cleaned by its token tidy): counted
	// and reported; anything else is the driver's leak.
	unansweredTokens, leakedTokens := s.unansweredLogins(t, windows)
	_, pendingAtEnd := roleTokensOf(t, c.API, soakRole)
	leasesAtEnd := len(soakLeases(t, c.API))
	// Vault's own restore and revocation jobs first (bounded), then tidy.
	drainFrom := time.Now()
	_ = pollUntil(vaultDrainFor, func() error {
		_, pending := roleTokensOf(t, c.API, soakRole)
		if n := len(soakLeases(t, c.API)) + pending; n > 0 {
			return fmt.Errorf("%d left", n)
		}
		return nil
	})
	drained := time.Since(drainFrom)
	_, pendingBefore := roleTokensOf(t, c.API, soakRole)
	leasesBefore := len(soakLeases(t, c.API))
	s.tidy(t)
	_, pendingAfter := roleTokensOf(t, c.API, soakRole)
	leasesAfter := len(soakLeases(t, c.API))
	unansweredLeases, leakedLeases := s.unansweredLeases(t, windows)
	leaked := leakedTokens + leakedLeases
	if err := pollUntil(soakSettleFor, func() error { return s.leftovers(true) }); err != nil {
		t.Errorf("at the end: %v", err)
		s.explain(t)
		leaked++
	}
	reqEnd := d.scrape(t).vaultRequests()
	settleFrom := time.Now()
	rssEnd := settledRSS(t, d.cmd.Process.Pid, rssStart)
	settled := time.Since(settleFrom)
	if float64(rssEnd) > soakRSSSlack*float64(rssStart) {
		t.Errorf("driver RSS %.1f MiB after the soak, more than 10%% over its %.1f MiB start", mib(rssEnd), mib(rssStart))
	}
	t.Logf("churn soak: %d volumes in %d waves (%d in the warm-up), half with a database lease, %d in parallel, over %s; %d publish and %d unpublish calls %v; events %s; %.0f Vault requests (%.1f per volume); leaks %d (mounts, state records, tokens, leases); unanswered at an event and revoked by the test: %d logins, %d database leases; tokens pending revocation / database leases in Vault at the end %d/%d, %s later %d/%d, after Vault's token tidy %d/%d; the driver's revocations by Vault's answer: %s; driver RSS %.1f MiB -> %.1f MiB (settled in %s); total %s",
		perWave*soakWaves, soakWaves, perWave, soakParallel, churn.Round(time.Second), publishes, unpublishes, counts,
		describeWindows(windows), reqEnd-reqStart, (reqEnd-reqStart)/float64(perWave*soakWaves), leaked, unansweredTokens, unansweredLeases, pendingAtEnd, leasesAtEnd, drained.Round(time.Second), pendingBefore, leasesBefore, pendingAfter, leasesAfter, d.scrape(t).revokeAnswers(),
		mib(rssStart), mib(rssEnd), settled.Round(time.Second), time.Since(began).Round(time.Second))
}

func describeWindows(ws []eventWindow) string {
	var parts []string
	for _, w := range ws {
		parts = append(parts, fmt.Sprintf("%s %s-%s (%.2fs to a leader)", w.event,
			w.start.UTC().Format("15:04:05.000"), w.end.UTC().Format("15:04:05.000"), w.recovered.Seconds()))
	}
	return strings.Join(parts, ", ")
}

// revokeAnswers is the driver's revoke requests by Vault's answer.
func (s promSnapshot) revokeAnswers() string {
	var parts []string
	for _, st := range []string{"2xx", "4xx", "5xx", "error"} {
		parts = append(parts, fmt.Sprintf("%s=%.0f", st, s.value("vault_csi_vault_requests_total", map[string]string{"operation": "revoke", "status": st})))
	}
	return strings.Join(parts, " ")
}

// leftovers names what the driver left behind: mounts at the soak's
// targets, state records (volumes and queued revocations) and, with
// vault, live tokens from logins as the soak's role and leases under
// database/creds/<role>.
func (s *soak) leftovers(vault bool) error {
	var left []string
	if n := ownMounts(s.t, s.vols); n > 0 {
		left = append(left, fmt.Sprintf("%d mounts", n))
	}
	if n := countFiles(s.d.stateDir); n > 0 {
		left = append(left, fmt.Sprintf("%d state records", n))
	}
	if !vault {
		return leftErr(left)
	}
	// A token Vault holds "revocation pending" is refused for any use and
	// only Vault can finish it: reported, not counted here.
	if live, _ := roleTokensOf(s.t, s.c.API, soakRole); len(live) > 0 {
		left = append(left, fmt.Sprintf("%d live tokens", len(live)))
	}
	if n := len(soakLeases(s.t, s.c.API)); n > 0 {
		left = append(left, fmt.Sprintf("%d database leases", n))
	}
	return leftErr(left)
}

func leftErr(left []string) error {
	if len(left) > 0 {
		return fmt.Errorf("left behind: %s", strings.Join(left, ", "))
	}
	return nil
}

// eventFailures counts the publish attempts that failed across an event:
// each may have left one login and one database read unanswered.
func (s *soak) eventFailures(ws []eventWindow) int {
	n := 0
	for _, call := range s.log {
		for _, w := range ws {
			if call.publish && call.code != codes.OK && call.start.Before(w.end) && call.end.After(w.start) {
				n++
				break
			}
		}
	}
	return n
}

// inWindow reports whether a creation time (whole seconds) falls in an event.
func inWindow(ws []eventWindow, created time.Time) bool {
	for _, w := range ws {
		if !created.Before(w.start.Add(-time.Second)) && !created.After(w.end.Add(time.Second)) {
			return true
		}
	}
	return false
}

// unansweredLogins revokes (root) the usable tokens of the soak's role
// created across an event: a login the dying leader committed while its
// caller got an error, so nobody ever held the token (README: it ends
// with its TTL). Any other usable token fails the test as the driver's
// leak. It returns how many it revoked and how many leaked.
func (s *soak) unansweredLogins(t *testing.T, ws []eventWindow) (revoked, leaked int) {
	t.Helper()
	return s.revokeUnanswered(t, ws, "usable tokens", "tokens alive from logins",
		func() map[string]time.Time {
			live, _ := roleTokensOf(t, s.c.API, soakRole)
			return live
		},
		func(acc string) error {
			_, err := s.c.API.Root.Logical().Write("auth/token/revoke-accessor", map[string]any{"accessor": acc})
			return err
		})
}

// revokeUnanswered revokes (root) each object list() names that was
// created across an event, and counts any other as the driver's leak
// (failing the test), polled until the list settles: Vault may still list
// an object being revoked for a moment. It also fails the test when more
// objects were revoked than publish attempts failed across the events.
func (s *soak) revokeUnanswered(t *testing.T, ws []eventWindow, what, alive string,
	list func() map[string]time.Time, revoke func(id string) error) (revoked, leaked int) {
	t.Helper()
	done := map[string]bool{}
	err := pollUntil(soakSettleFor, func() error {
		var strays, failed []string
		for id, created := range list() {
			if !inWindow(ws, created) {
				strays = append(strays, fmt.Sprintf("%s (created %s)", id, created.Format(time.RFC3339Nano)))
				continue
			}
			if err := revoke(id); err != nil {
				failed = append(failed, fmt.Sprintf("revoke %s: %v", id, err))
			} else {
				done[id] = true
			}
		}
		leaked = len(strays)
		if leaked > 0 {
			return fmt.Errorf("%d %s that no cluster event explains, the driver's leak: %s", leaked, what, strings.Join(strays, ", "))
		}
		if len(failed) > 0 {
			return errors.New(strings.Join(failed, "; "))
		}
		return nil
	})
	if err != nil {
		t.Errorf("%v; events %s", err, describeWindows(ws))
		s.explain(t)
	}
	if allowed := s.eventFailures(ws); len(done) > allowed {
		t.Errorf("%d %s during events, more than the %d publish attempts that failed across them", len(done), alive, allowed)
	}
	return len(done), leaked
}

// tidy runs Vault's token tidy (what operators schedule) and waits,
// bounded, until it has revoked what it will: the leases of tokens whose
// revocation a leader loss interrupted after Vault had answered the
// driver (the token left "revocation pending", its leases unrevoked).
func (s *soak) tidy(t *testing.T) {
	t.Helper()
	if _, err := s.c.API.Root.Logical().Write("auth/token/tidy", nil); err != nil {
		t.Errorf("token tidy: %v", err)
		return
	}
	// Tidy runs in the background and says nothing when done: wait until
	// nothing is left or the count has not moved for tidyQuiet polls.
	const tidyQuiet = 10
	last, same := -1, 0
	_ = pollUntil(soakSettleFor, func() error {
		_, pending := roleTokensOf(t, s.c.API, soakRole)
		n := len(soakLeases(t, s.c.API)) + pending
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
		if n == 0 || same >= tidyQuiet {
			return nil
		}
		return fmt.Errorf("%d left", n)
	})
}

// unansweredLeases revokes (root) the database leases left after the
// tidy that were issued across an event: a read the dying leader
// half-committed ("leadership lost while committing log") while its
// caller got an error, so the driver never held the lease ID and Vault
// never indexed it under the token. Any other lease fails the test.
func (s *soak) unansweredLeases(t *testing.T, ws []eventWindow) (revoked, leaked int) {
	t.Helper()
	path := func(id string) string { return vaulttest.DatabaseMount + "/creds/" + soakRole + "/" + id }
	return s.revokeUnanswered(t, ws, "database leases", "leases alive from reads",
		func() map[string]time.Time {
			issued := map[string]time.Time{}
			for _, id := range soakLeases(t, s.c.API) {
				sec, err := s.c.API.Root.Logical().Write("sys/leases/lookup", map[string]any{"lease_id": path(id)})
				if err != nil || sec == nil {
					continue // revoked meanwhile
				}
				issued[id], _ = time.Parse(time.RFC3339Nano, fmt.Sprint(sec.Data["issue_time"]))
			}
			return issued
		},
		func(id string) error {
			_, err := s.c.API.Root.Logical().Write("sys/leases/revoke", map[string]any{"lease_id": path(id), "sync": true})
			return err
		})
}

// roleTokensOf maps the accessors of the usable tokens from logins as
// role to their creation time, and counts those pending revocation.
func roleTokensOf(t *testing.T, v *vaulttest.Server, role string) (live map[string]time.Time, pending int) {
	t.Helper()
	live = map[string]time.Time{}
	for acc := range accessorSet(t, v) {
		sec, err := v.Root.Logical().Write("auth/token/lookup-accessor", map[string]any{"accessor": acc})
		if err != nil || sec == nil {
			continue // revoked meanwhile, or listed while being revoked
		}
		if meta, _ := sec.Data["meta"].(map[string]any); meta == nil || meta["role"] != role {
			continue
		}
		// num_uses -1: revocation pending in Vault; the token is refused
		// for any use (revoke-self answers 403), only Vault can finish it.
		if uses, _ := sec.Data["num_uses"].(json.Number); uses.String() == "-1" {
			pending++
			continue
		}
		ct, _ := sec.Data["creation_time"].(json.Number)
		n, _ := ct.Int64()
		live[acc] = time.Unix(n, 0)
	}
	return live, pending
}

// soakLeases lists the leases under database/creds/<soakRole>.
func soakLeases(t *testing.T, v *vaulttest.Server) []string {
	t.Helper()
	sec, err := v.Root.Logical().List("sys/leases/lookup/" + vaulttest.DatabaseMount + "/creds/" + soakRole)
	if err != nil {
		t.Fatalf("list leases: %v", err)
	}
	var out []string
	if sec != nil {
		keys, _ := sec.Data["keys"].([]any)
		for _, k := range keys {
			out = append(out, fmt.Sprint(k))
		}
	}
	return out
}

// countFiles counts the regular files under dir (the driver's records).
func countFiles(dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// vmRSS is a process's resident set size in bytes (/proc/<pid>/status).
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// settledRSS samples the idle driver's RSS until two samples in a row
// agree within 1% (the Go runtime has returned what it will for now) and,
// with a baseline, until it is within soakRSSSlack of it; bounded by
// rssSettleFor. It returns the last sample.
func settledRSS(t *testing.T, pid int, baseline int64) int64 {
	t.Helper()
	last := vmRSS(t, pid)
	deadline := time.Now().Add(rssSettleFor)
	for time.Now().Before(deadline) {
		time.Sleep(rssSettleSample)
		cur := vmRSS(t, pid)
		steady := cur <= last+last/100 && cur >= last-last/100
		last = cur
		if steady && (baseline == 0 || float64(cur) <= soakRSSSlack*float64(baseline)) {
			break
		}
	}
	return last
}

// explain logs, for a failure's diagnosis, the driver's revocations by
// Vault's answer and its log lines about them, what Vault says of the
// leases left, and what its nodes logged about leases.
func (s *soak) explain(t *testing.T) {
	t.Helper()
	t.Logf("the driver's revocations by Vault's answer: %s", s.d.scrape(t).revokeAnswers())
	for _, line := range strings.Split(s.d.logs.String(), "\n") {
		if strings.Contains(line, "evoke") || strings.Contains(line, "late") {
			t.Logf("driver: %s", line)
		}
	}
	for _, id := range soakLeases(t, s.c.API) {
		lease := vaulttest.DatabaseMount + "/creds/" + soakRole + "/" + id
		sec, err := s.c.API.Root.Logical().Write("sys/leases/lookup", map[string]any{"lease_id": lease})
		if err == nil && sec != nil {
			t.Logf("lease %s: issued %v, expires %v, ttl %v", id, sec.Data["issue_time"], sec.Data["expire_time"], sec.Data["ttl"])
		}
	}
	if sec, err := s.c.API.Root.Logical().ReadWithData("sys/leases", map[string][]string{"type": {"irrevocable"}}); err == nil && sec != nil {
		t.Logf("irrevocable leases: %v", sec.Data)
	}
	for _, n := range s.c.Nodes {
		for _, line := range strings.Split(n.Logs(), "\n") {
			if strings.Contains(line, "lease") || strings.Contains(line, "revok") || strings.Contains(line, "expiration") {
				t.Logf("%s: %s", n.ID, line)
			}
		}
	}
}
