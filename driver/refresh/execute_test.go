package refresh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"vaultcsi.dev/driver/driver/atomicwriter"
	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider"
)

// The volume of every case: one KV secret and one database lease.
const (
	kvPath   = "secret/data/app"
	dbPath   = "database/creds/app"
	hash     = "h1"
	period   = 2 * time.Hour
	leaseTTL = time.Hour
	tokenTTL = 6 * time.Hour
)

var (
	t0      = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	specs   = []provider.SecretSpec{{File: "app", Path: kvPath}, {File: "db", Path: dbPath}}
	errDown = fmt.Errorf("vault: %w: connection refused", provider.ErrUnavailable)
)

// fakeVault is a scripted Vault: tokens tok-1, tok-2, ... by login; a
// read of path by token tok gives "path@tok".
type fakeVault struct {
	clock    *clocktesting.FakeClock
	log      []string
	logins   int
	unusable map[string]bool  // tokens Fetch will not reuse (it logs in)
	fetchErr []error          // by Fetch call; nil: success
	leaseErr map[string]error // by lease id
	tokenErr error
	fetches  int
}

func (f *fakeVault) Fetch(_ context.Context, req *provider.Request) (*provider.Result, error) {
	res := &provider.Result{}
	var err error
	if f.fetches < len(f.fetchErr) {
		err = f.fetchErr[f.fetches]
	}
	f.fetches++
	sess := req.Session
	if sess == nil || f.unusable[sess.Token] {
		f.logins++
		sess = &provider.Session{Token: fmt.Sprintf("tok-%d", f.logins), Renewable: true,
			IssuedAt: f.clock.Now(), ExpiresAt: f.clock.Now().Add(tokenTTL)}
		res.LoggedIn = true
		res.VaultRequests++
		f.log = append(f.log, "login "+sess.Token)
		if req.OnLogin != nil {
			if lerr := req.OnLogin(sess); lerr != nil {
				return res, lerr
			}
		}
	}
	var paths []string
	for _, s := range req.Secrets {
		paths = append(paths, s.Path)
	}
	f.log = append(f.log, "read "+sess.Token+" "+strings.Join(paths, ","))
	if err != nil {
		if res.LoggedIn {
			res.Orphan = sess
		}
		return res, err
	}
	for _, s := range req.Secrets {
		res.VaultRequests++
		res.Files = append(res.Files, provider.File{Name: s.File, Data: []byte(s.Path + "@" + sess.Token), Mode: s.Mode})
		info := provider.SecretInfo{Path: s.Path, FetchedAt: f.clock.Now()}
		if s.Path == dbPath {
			info.LeaseID, info.LeaseDuration, info.IssuedTTL, info.Renewable = "lease@"+sess.Token, leaseTTL, leaseTTL, true
		}
		res.Secrets = append(res.Secrets, info)
	}
	res.Session = sess
	return res, nil
}

func (f *fakeVault) RenewLease(_ context.Context, s *provider.Session, id string, inc time.Duration) (time.Duration, int, error) {
	f.log = append(f.log, "renew-lease "+id+" "+s.Token)
	if err := f.leaseErr[id]; err != nil {
		return inc / 2, 1, err
	}
	return inc, 1, nil
}

func (f *fakeVault) RenewToken(_ context.Context, s *provider.Session) (*provider.Session, int, error) {
	f.log = append(f.log, "renew-token "+s.Token)
	if f.tokenErr != nil {
		return nil, 1, f.tokenErr
	}
	ns := *s
	ns.IssuedAt, ns.ExpiresAt = f.clock.Now(), f.clock.Now().Add(tokenTTL)
	return &ns, 1, nil
}

// fakeVolume is the volume on disk and its record.
type fakeVolume struct {
	files      map[string]string
	currentErr error
	writeErr   error
	recordErr  error
	records    []state.Volume // every Record and Login, in order
	released   []string       // "token why"
}

func (v *fakeVolume) Current() ([]atomicwriter.File, error) {
	if v.currentErr != nil {
		return nil, v.currentErr
	}
	var out []atomicwriter.File
	for name, data := range v.files {
		out = append(out, atomicwriter.File{Name: name, Data: []byte(data)})
	}
	return out, nil
}

func (v *fakeVolume) Login(s *provider.Session) error {
	v.records = append(v.records, state.Volume{Incoming: s})
	return nil
}

func (v *fakeVolume) Render(files []provider.File) ([]atomicwriter.File, error) {
	out := make([]atomicwriter.File, 0, len(files))
	for _, f := range files {
		out = append(out, atomicwriter.File{Name: f.Name, Data: f.Data, Mode: f.Mode})
	}
	return out, nil
}

func (v *fakeVolume) Write(files []atomicwriter.File) (bool, error) {
	if v.writeErr != nil {
		return false, v.writeErr
	}
	next := map[string]string{}
	changed := len(files) != len(v.files)
	for _, f := range files {
		next[f.Name] = string(f.Data)
		if old, ok := v.files[f.Name]; !ok || !bytes.Equal([]byte(old), f.Data) {
			changed = true
		}
	}
	v.files = next
	return changed, nil
}

func (v *fakeVolume) Record(rec *state.Volume) error {
	if v.recordErr != nil {
		return v.recordErr
	}
	v.records = append(v.records, *rec)
	return nil
}

func (v *fakeVolume) Release(s *provider.Session, why Why) {
	if s == nil {
		return
	}
	v.released = append(v.released, fmt.Sprintf("%s %s", s.Token, map[Why]string{WhyFailed: "failed", WhyReplaced: "replaced"}[why]))
}

// mounted is the state of a volume published at t0 with token tok-0.
func mounted() (*state.Volume, *fakeVolume) {
	rec := &state.Volume{Target: "/t", VolumeID: "v", RequestHash: hash, FetchedAt: t0, RotationPeriod: period,
		Session: &provider.Session{Token: "tok-0", Renewable: true, IssuedAt: t0, ExpiresAt: t0.Add(tokenTTL)},
		Secrets: []provider.SecretInfo{
			{Path: kvPath, FetchedAt: t0},
			{Path: dbPath, LeaseID: "lease@tok-0", LeaseDuration: leaseTTL, IssuedTTL: leaseTTL, Renewable: true, FetchedAt: t0},
		}}
	return rec, &fakeVolume{files: map[string]string{"app": kvPath + "@tok-0", "db": dbPath + "@tok-0"}}
}

// TestExecute drives the planner and the executor through every branch
// of a publish and a re-publish, with a fake Vault, a fake volume and a
// fake clock.
func TestExecute(t *testing.T) {
	nonRenewableToken := func(rec *state.Volume) { rec.Session.Renewable = false }
	tests := []struct {
		name     string
		step     time.Duration       // clock advance from t0 before planning
		edit     func(*state.Volume) // the record before planning
		vault    func(*fakeVault)    // script
		volume   func(*fakeVolume)   // script
		plan     *Plan               // nil: For(rec, hash, now)
		hash     string              // "": the recorded hash
		noRecord bool                // plan with no record
		// want
		reason   Reason
		err      error // errors.Is; nil: success
		log      []string
		requests int
		loggedIn bool
		changed  bool
		released []string
		token    string            // the recorded token afterwards
		files    map[string]string // nil: as before
	}{
		{name: "nothing due", step: time.Minute,
			reason: ReasonNone, token: "tok-0"},
		{name: "first publish: log in, read all, write, record", plan: ptr(Publish()),
			log: []string{"login tok-1", "read tok-1 " + kvPath + "," + dbPath}, requests: 3, loggedIn: true, changed: true, token: "tok-1",
			files: map[string]string{"app": kvPath + "@tok-1", "db": dbPath + "@tok-1"}},
		{name: "first publish: record fails -> the new token is released", plan: ptr(Publish()),
			volume: func(v *fakeVolume) { v.recordErr = errors.New("disk full") },
			err:    errAny, log: []string{"login tok-1", "read tok-1 " + kvPath + "," + dbPath}, requests: 3, loggedIn: true, changed: true,
			released: []string{"tok-1 failed"}, token: "",
			files: map[string]string{"app": kvPath + "@tok-1", "db": dbPath + "@tok-1"}},
		{name: "period due for KV only: the lease is left alone", step: period + time.Minute,
			edit: func(rec *state.Volume) {
				rec.Secrets[1].LeaseDuration = 24 * time.Hour
				rec.Session.ExpiresAt = t0.Add(24 * time.Hour)
			},
			reason: ReasonPeriod, log: []string{"read tok-0 " + kvPath}, requests: 1, changed: false, token: "tok-0"},
		{name: "renew OK: no read, no new file", step: 41 * time.Minute,
			reason: ReasonLease, log: []string{"renew-lease lease@tok-0 tok-0"}, requests: 1, token: "tok-0"},
		{name: "renew capped: that path alone anew", step: 41 * time.Minute,
			vault:  func(f *fakeVault) { f.leaseErr = map[string]error{"lease@tok-0": provider.ErrCapped} },
			reason: ReasonLease, log: []string{"renew-lease lease@tok-0 tok-0", "read tok-0 " + dbPath}, requests: 2, token: "tok-0"},
		{name: "renew denied: that path alone anew", step: 41 * time.Minute,
			vault:  func(f *fakeVault) { f.leaseErr = map[string]error{"lease@tok-0": provider.ErrDenied} },
			reason: ReasonLease, log: []string{"renew-lease lease@tok-0 tok-0", "read tok-0 " + dbPath}, requests: 2, token: "tok-0"},
		{name: "renew gone: that path alone anew", step: 41 * time.Minute,
			vault:  func(f *fakeVault) { f.leaseErr = map[string]error{"lease@tok-0": provider.ErrNotFound} },
			reason: ReasonLease, log: []string{"renew-lease lease@tok-0 tok-0", "read tok-0 " + dbPath}, requests: 2, token: "tok-0"},
		{name: "renew, Vault down: error, files and record kept", step: 41 * time.Minute,
			vault:  func(f *fakeVault) { f.leaseErr = map[string]error{"lease@tok-0": errDown} },
			reason: ReasonLease, err: provider.ErrUnavailable, log: []string{"renew-lease lease@tok-0 tok-0"}, requests: 1, token: "tok-0"},
		{name: "token renew OK, then the lease", step: 4*time.Hour + time.Minute,
			edit:   func(rec *state.Volume) { rec.RotationPeriod = 24 * time.Hour },
			reason: ReasonLease, log: []string{"renew-token tok-0", "renew-lease lease@tok-0 tok-0"}, requests: 2, token: "tok-0"},
		{name: "token renew capped: re-login moves every lease", step: 4*time.Hour + time.Minute,
			edit:   func(rec *state.Volume) { rec.RotationPeriod = 24 * time.Hour },
			vault:  func(f *fakeVault) { f.tokenErr = provider.ErrCapped },
			reason: ReasonLease, log: []string{"renew-token tok-0", "login tok-1", "read tok-1 " + kvPath + "," + dbPath}, requests: 4, loggedIn: true, changed: true,
			released: []string{"tok-0 replaced"}, token: "tok-1", files: map[string]string{"app": kvPath + "@tok-1", "db": dbPath + "@tok-1"}},
		{name: "token renew denied: re-login moves every lease", step: 4*time.Hour + time.Minute,
			edit:   func(rec *state.Volume) { rec.RotationPeriod = 24 * time.Hour },
			vault:  func(f *fakeVault) { f.tokenErr = provider.ErrDenied },
			reason: ReasonLease, log: []string{"renew-token tok-0", "login tok-1", "read tok-1 " + kvPath + "," + dbPath}, requests: 4, loggedIn: true, changed: true,
			released: []string{"tok-0 replaced"}, token: "tok-1", files: map[string]string{"app": kvPath + "@tok-1", "db": dbPath + "@tok-1"}},
		{name: "token renew, Vault down: error, nothing fetched", step: 4*time.Hour + time.Minute,
			edit:   func(rec *state.Volume) { rec.RotationPeriod = 24 * time.Hour },
			vault:  func(f *fakeVault) { f.tokenErr = errDown },
			reason: ReasonLease, err: provider.ErrUnavailable, log: []string{"renew-token tok-0"}, requests: 1, token: "tok-0"},
		{name: "non-renewable token due: everything anew under a new token", step: 4*time.Hour + time.Minute,
			edit: func(rec *state.Volume) {
				nonRenewableToken(rec)
				rec.RotationPeriod = 24 * time.Hour
			},
			vault:  func(f *fakeVault) { f.unusable = map[string]bool{"tok-0": true} },
			reason: ReasonLease, log: []string{"login tok-1", "read tok-1 " + kvPath + "," + dbPath}, requests: 3, loggedIn: true, changed: true,
			released: []string{"tok-0 replaced"}, token: "tok-1", files: map[string]string{"app": kvPath + "@tok-1", "db": dbPath + "@tok-1"}},
		{name: "write fails: the new token is released, the old one kept", step: 4*time.Hour + time.Minute,
			edit: func(rec *state.Volume) {
				nonRenewableToken(rec)
				rec.RotationPeriod = 24 * time.Hour
			},
			vault:  func(f *fakeVault) { f.unusable = map[string]bool{"tok-0": true} },
			volume: func(v *fakeVolume) { v.writeErr = errors.New("no space left on device") },
			reason: ReasonLease, err: errAny, log: []string{"login tok-1", "read tok-1 " + kvPath + "," + dbPath}, requests: 3, loggedIn: true,
			released: []string{"tok-1 failed"}, token: "tok-0"},
		{name: "write fails under the same token: nothing released", step: period + time.Minute,
			volume: func(v *fakeVolume) { v.writeErr = errors.New("no space left on device") },
			reason: ReasonPeriod, err: errAny, log: []string{"renew-lease lease@tok-0 tok-0", "read tok-0 " + kvPath}, requests: 2, token: "tok-0"},
		{name: "a partial fetch that logs in: a new plan moves every path", step: period + time.Minute,
			edit:   func(rec *state.Volume) { rec.Secrets[1].LeaseDuration = 24 * time.Hour },
			vault:  func(f *fakeVault) { f.unusable = map[string]bool{"tok-0": true} },
			reason: ReasonPeriod, log: []string{"login tok-1", "read tok-1 " + kvPath, "read tok-1 " + kvPath + "," + dbPath}, requests: 4, loggedIn: true, changed: true,
			released: []string{"tok-0 replaced"}, token: "tok-1", files: map[string]string{"app": kvPath + "@tok-1", "db": dbPath + "@tok-1"}},
		{name: "the re-login's second fetch fails: its token is released", step: period + time.Minute,
			edit: func(rec *state.Volume) { rec.Secrets[1].LeaseDuration = 24 * time.Hour },
			vault: func(f *fakeVault) {
				f.unusable = map[string]bool{"tok-0": true}
				f.fetchErr = []error{nil, errDown}
			},
			reason: ReasonPeriod, err: provider.ErrUnavailable, log: []string{"login tok-1", "read tok-1 " + kvPath, "read tok-1 " + kvPath + "," + dbPath},
			requests: 2, loggedIn: true, released: []string{"tok-1 failed"}, token: "tok-0"},
		{name: "Vault down on a fetch that logged in: the orphan is released", step: period + time.Minute,
			edit: func(rec *state.Volume) { rec.Secrets[1].LeaseDuration = 24 * time.Hour },
			vault: func(f *fakeVault) {
				f.unusable = map[string]bool{"tok-0": true}
				f.fetchErr = []error{errDown}
			},
			reason: ReasonPeriod, err: provider.ErrUnavailable, log: []string{"login tok-1", "read tok-1 " + kvPath},
			requests: 1, loggedIn: true, released: []string{"tok-1 failed"}, token: "tok-0"},
		{name: "unreadable files: a new plan fetches every path", step: period + time.Minute,
			edit:   func(rec *state.Volume) { rec.Secrets[1].LeaseDuration = 24 * time.Hour },
			volume: func(v *fakeVolume) { v.currentErr = errors.New("payload gone") },
			reason: ReasonPeriod, log: []string{"read tok-0 " + kvPath + "," + dbPath}, requests: 2, token: "tok-0",
			files: map[string]string{"app": kvPath + "@tok-0", "db": dbPath + "@tok-0"}},
		{name: "a file missing from the volume is fetched with the due ones", step: period + time.Minute,
			edit:   func(rec *state.Volume) { rec.Secrets[1].LeaseDuration = 24 * time.Hour },
			volume: func(v *fakeVolume) { delete(v.files, "db") },
			reason: ReasonPeriod, log: []string{"read tok-0 " + kvPath + "," + dbPath}, requests: 2, changed: true, token: "tok-0",
			files: map[string]string{"app": kvPath + "@tok-0", "db": dbPath + "@tok-0"}},
		{name: "request changed: everything anew", step: time.Minute, hash: "h2",
			reason: ReasonRequestChanged, log: []string{"read tok-0 " + kvPath + "," + dbPath}, requests: 2, token: "tok-0"},
		{name: "failed before, in backoff: nothing",
			edit:   func(rec *state.Volume) { Failed(rec, errDown, t0, 0.5) },
			reason: ReasonNone, token: "tok-0"},
		{name: "failed before, backoff passed, nothing due any more: retry records success", step: BackoffBase,
			edit:   func(rec *state.Volume) { Failed(rec, errDown, t0, 0.5) },
			reason: ReasonRetry, token: "tok-0"},
		{name: "failed before, backoff passed: retry renews a valid lease, never re-issues it", step: period + time.Minute,
			edit: func(rec *state.Volume) {
				rec.Secrets[1].LeaseDuration = 90 * time.Second // two thirds gone by now: renew
				Failed(rec, errDown, t0.Add(period), 0.5)
			},
			reason: ReasonRetry, log: []string{"renew-lease lease@tok-0 tok-0", "read tok-0 " + kvPath}, requests: 2, token: "tok-0"},
		{name: "no record: everything anew", step: time.Minute, noRecord: true,
			reason: ReasonNoState, log: []string{"login tok-1", "read tok-1 " + kvPath + "," + dbPath}, requests: 3, loggedIn: true, changed: true,
			token: "tok-1", files: map[string]string{"app": kvPath + "@tok-1", "db": dbPath + "@tok-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(t0)
			rec, vol := mounted()
			if tt.plan != nil && tt.plan.First {
				rec, vol = &state.Volume{Target: "/t"}, &fakeVolume{}
			}
			if tt.edit != nil {
				tt.edit(rec)
			}
			f := &fakeVault{clock: clk}
			if tt.vault != nil {
				tt.vault(f)
			}
			if tt.volume != nil {
				tt.volume(vol)
			}
			h := hash
			if tt.hash != "" {
				h = tt.hash
			}
			clk.Step(tt.step)
			p := For(rec, h, clk.Now())
			if tt.noRecord {
				p, rec = For(nil, h, clk.Now()), &state.Volume{Target: "/t"}
			}
			if tt.plan != nil {
				p = *tt.plan
			}
			if p.Reason != tt.reason {
				t.Fatalf("plan reason %q, want %q (plan %+v)", p.Reason, tt.reason, p)
			}
			before, filesBefore := *rec, vol.files
			per := rec.RotationPeriod
			if per == 0 {
				per = period
			}
			e := &Executor{Fetcher: f, Target: vol, Clock: clk, Request: provider.Request{Secrets: specs},
				VolumeID: "v", Hash: h, Period: per}
			var res Result
			var err error
			if p.Due() {
				res, err = e.Run(context.Background(), p, rec)
			}
			switch {
			case tt.err == nil && err != nil:
				t.Fatalf("Run: %v", err)
			case errors.Is(tt.err, errAny) && err == nil, tt.err != nil && !errors.Is(tt.err, errAny) && !errors.Is(err, tt.err):
				t.Fatalf("Run: %v, want %v", err, tt.err)
			}
			if !reflect.DeepEqual(f.log, tt.log) {
				t.Errorf("Vault calls %q, want %q", f.log, tt.log)
			}
			if res.Requests != tt.requests || res.LoggedIn != tt.loggedIn || res.Changed != tt.changed {
				t.Errorf("result {requests %d loggedIn %v changed %v}, want {%d %v %v}",
					res.Requests, res.LoggedIn, res.Changed, tt.requests, tt.loggedIn, tt.changed)
			}
			if !reflect.DeepEqual(vol.released, tt.released) {
				t.Errorf("released %q, want %q", vol.released, tt.released)
			}
			want := tt.files
			if want == nil {
				want = filesBefore
			}
			if !reflect.DeepEqual(vol.files, want) {
				t.Errorf("files %v, want %v", vol.files, want)
			}
			if got := token(rec.Session); got != tt.token {
				t.Errorf("recorded token %q, want %q", got, tt.token)
			}
			if err != nil || !p.Due() {
				if !reflect.DeepEqual(*rec, before) {
					t.Errorf("record changed by a run that did nothing or failed:\n%+v\nwas\n%+v", *rec, before)
				}
				return
			}
			checkRecord(t, rec, p, res, clk.Now(), h)
		})
	}
}

// errAny: any error.
var errAny = errors.New("any error")

func ptr[T any](v T) *T { return &v }

func token(s *provider.Session) string {
	if s == nil {
		return ""
	}
	return s.Token
}

// checkRecord: a successful run records the request, every path once in
// the request's order, no failure, and a prune only after a change.
func checkRecord(t *testing.T, rec *state.Volume, p Plan, res Result, now time.Time, h string) {
	t.Helper()
	var paths []string
	for _, s := range rec.Secrets {
		paths = append(paths, s.Path)
	}
	if !reflect.DeepEqual(paths, []string{kvPath, dbPath}) {
		t.Errorf("recorded paths %q", paths)
	}
	if rec.RequestHash != h || rec.VolumeID != "v" || rec.Failures != 0 || !rec.NextAttempt.IsZero() || rec.LastError != "" {
		t.Errorf("record %+v", rec)
	}
	if rec.PrunePending != (res.Changed && !p.First) {
		t.Errorf("PrunePending %v after changed=%v first=%v", rec.PrunePending, res.Changed, p.First)
	}
	for _, s := range rec.Secrets {
		if s.LeaseID != "" && !now.Before(provider.RenewDue(s.FetchedAt, s.LeaseDuration)) {
			t.Errorf("lease %s still due after the run: %+v", s.LeaseID, s)
		}
	}
	if rec.Session != nil && !now.Before(provider.RenewDue(rec.Session.IssuedAt, rec.Session.ExpiresAt.Sub(rec.Session.IssuedAt))) {
		t.Errorf("token still due after the run: %+v", rec.Session)
	}
	// Nothing due right after a successful run.
	if q := For(rec, h, now); q.Due() {
		t.Errorf("plan right after the run: %+v", q)
	}
}

// TestExecuteMemoryBusy: the files a partial refresh keeps are charged to
// the fetch's reservation; when the driver's budget is in use the refresh
// fails with ErrBusy before any read, and nothing changes.
func TestExecuteMemoryBusy(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	rec, vol := mounted()
	rec.Secrets[1].LeaseDuration = 24 * time.Hour
	budget := provider.NewBudget(8)
	mem, err := budget.Reserve(context.Background(), 8)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	f := &fakeVault{clock: clk}
	clk.Step(period + time.Minute)
	p := For(rec, hash, clk.Now())
	before := *rec
	e := &Executor{Fetcher: f, Target: vol, Clock: clk, Request: provider.Request{Secrets: specs, Memory: mem},
		VolumeID: "v", Hash: hash, Period: period}
	res, err := e.Run(context.Background(), p, rec)
	if !errors.Is(err, provider.ErrBusy) {
		t.Fatalf("Run: %v, want ErrBusy", err)
	}
	if len(f.log) != 0 || res.Requests != 0 || len(vol.released) != 0 || !reflect.DeepEqual(*rec, before) {
		t.Errorf("busy refresh did work: calls %q, result %+v, released %q", f.log, res, vol.released)
	}
}

// TestBackoffThenRetry: Vault down keeps the old files and backs off; the
// fake clock crosses the backoff and the retry fetches everything.
func TestBackoffThenRetry(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	rec, vol := mounted()
	f := &fakeVault{clock: clk, fetchErr: []error{errDown}}
	e := &Executor{Fetcher: f, Target: vol, Clock: clk, Request: provider.Request{Secrets: specs},
		VolumeID: "v", Hash: hash, Period: period}
	clk.Step(period + time.Minute)
	filesBefore := vol.files
	var attempts []Reason
	for i := 0; i < 20 && (rec.Failures > 0 || len(attempts) == 0); i++ {
		p := For(rec, hash, clk.Now())
		if p.Due() {
			attempts = append(attempts, p.Reason)
			if _, err := e.Run(context.Background(), p, rec); err != nil {
				Failed(rec, err, clk.Now(), 0.5)
				if !reflect.DeepEqual(vol.files, filesBefore) {
					t.Fatalf("files changed by a failed refresh")
				}
			}
		}
		clk.Step(time.Second)
	}
	want := []Reason{ReasonPeriod, ReasonRetry}
	if !reflect.DeepEqual(attempts, want) || rec.Failures != 0 {
		t.Fatalf("attempts %q (failures %d), want %q", attempts, rec.Failures, want)
	}
	if !strings.Contains(vol.files["app"], "@tok-0") {
		t.Errorf("files after the retry: %v", vol.files)
	}
	keys := make([]string, 0, len(vol.files))
	for k := range vol.files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !reflect.DeepEqual(keys, []string{"app", "db"}) {
		t.Errorf("files %v", keys)
	}
}
