package refresh

import (
	"context"
	"errors"
	"time"

	"k8s.io/utils/clock"

	"vaultcsi.dev/driver/driver/atomicwriter"
	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider"
)

// Fetcher is the Vault side of the work (the provider).
type Fetcher interface {
	Fetch(ctx context.Context, req *provider.Request) (*provider.Result, error)
	RenewLease(ctx context.Context, s *provider.Session, leaseID string, increment time.Duration) (time.Duration, int, error)
	RenewToken(ctx context.Context, s *provider.Session) (*provider.Session, int, error)
}

// Why a token is let go.
type Why int

const (
	// WhyFailed: a token the work logged in for and will not keep.
	WhyFailed Why = iota
	// WhyReplaced: the volume's previous token, once a new one's files are in place.
	WhyReplaced
)

// Target is the volume the work is done on.
type Target interface {
	// Current reads the files in the volume; a partial refresh keeps those
	// it does not fetch.
	Current() ([]atomicwriter.File, error)
	// Login puts a new token on record before it is used (provider.Request.OnLogin).
	Login(s *provider.Session) error
	// Render checks fetched files and gives them their modes.
	Render(files []provider.File) ([]atomicwriter.File, error)
	// Write puts the files in place; changed: the payload differs.
	Write(files []atomicwriter.File) (changed bool, err error)
	// Record saves the volume's record.
	Record(rec *state.Volume) error
	// Release hands a token over for revocation (once the target is unlocked).
	Release(s *provider.Session, why Why)
}

// Executor carries out plans for one volume.
type Executor struct {
	Fetcher Fetcher
	Target  Target
	Clock   clock.PassiveClock
	// Request is the volume's request: its secrets, JWT and memory
	// reservation (charged for the files a partial refresh keeps).
	Request provider.Request
	// What the record is to say once the work is done.
	VolumeID, Hash string
	Period         time.Duration
}

// Result accounts for one Run, failed or not.
type Result struct {
	Requests int  // Vault requests sent
	LoggedIn bool // a fetch logged in
	Changed  bool // the files changed
	// Fetched is what the last successful fetch read (also when a later
	// step failed); nil when nothing was fetched.
	Fetched []provider.SecretInfo
}

// Run follows p on the volume recorded as rec, which it updates and saves
// once the files are in place. On error rec is as it was, and a token the
// run logged in for is released.
func (e *Executor) Run(ctx context.Context, p Plan, rec *state.Volume) (Result, error) {
	r := &run{e: e, f: &counter{f: e.Fetcher, t: e.Target}, rec: rec, old: rec.Session, now: e.Clock.Now()}
	err := r.follow(ctx, p, rec.Session)
	if err != nil && r.held != nil && (r.old == nil || r.held.Token != r.old.Token) {
		e.Target.Release(r.held, WhyFailed) // a new token the volume will not keep
	}
	return Result{Requests: r.f.requests, LoggedIn: r.f.loggedIn, Changed: r.changed, Fetched: r.fetched}, err
}

// run is one Run's state.
type run struct {
	e       *Executor
	f       *counter
	rec     *state.Volume
	old     *provider.Session // the record's token when the run began
	held    *provider.Session // the token of the last fetch, until recorded
	now     time.Time
	changed bool
	fetched []provider.SecretInfo
}

// follow does p with sess (nil: log in).
func (r *run) follow(ctx context.Context, p Plan, sess *provider.Session) error {
	infos := append([]provider.SecretInfo(nil), r.rec.Secrets...)
	fetch := make(map[string]bool, len(p.Fetch))
	for path := range p.Fetch {
		fetch[path] = true
	}
	if p.RenewToken {
		ns, err := r.f.RenewToken(ctx, sess)
		switch {
		case err == nil:
			sess = ns
		case errors.Is(err, provider.ErrCapped), errors.Is(err, provider.ErrDenied):
			return r.follow(ctx, Anew(p), nil) // log in again
		default:
			return err
		}
	}
	if !p.Full {
		for _, i := range p.Renew {
			s := infos[i]
			ttl, err := r.f.RenewLease(ctx, sess, s.LeaseID, s.IssuedTTL)
			switch {
			case err == nil:
				infos[i].FetchedAt, infos[i].LeaseDuration = r.now, ttl
			case errors.Is(err, provider.ErrCapped), errors.Is(err, provider.ErrDenied), errors.Is(err, provider.ErrNotFound):
				fetch[s.Path] = true // near max TTL or gone: a fresh credential
			default:
				return err
			}
		}
	}
	fetched := p.Full || len(fetch) > 0
	if fetched {
		var (
			next *Plan
			err  error
		)
		infos, sess, next, err = r.fetch(ctx, p, fetch, infos, sess)
		if err != nil {
			return err
		}
		if next != nil {
			return r.follow(ctx, *next, sess)
		}
	}
	return r.record(p, infos, sess, fetched)
}

// fetch reads the paths p and fetch name, keeps the other files as they
// are, and writes the merged set. next, when set, is the plan to follow
// instead (with the returned session).
func (r *run) fetch(ctx context.Context, p Plan, fetch map[string]bool, infos []provider.SecretInfo,
	sess *provider.Session) (_ []provider.SecretInfo, _ *provider.Session, next *Plan, _ error) {
	current := map[string]atomicwriter.File{}
	if !p.Full {
		files, err := r.e.Target.Current()
		if err != nil {
			n := Anew(p) // files that cannot be read cannot be kept
			return nil, sess, &n, nil
		}
		for _, f := range files {
			current[f.Name] = f
			// The files kept are in memory until the merged set is written.
			// Charged beyond the reservation, they also keep this fetch from
			// waiting for room (no hold-and-wait): when the budget is short,
			// the refresh fails and is retried with backoff.
			if err := r.e.Request.Memory.Charge(int64(len(f.Data))); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	specs := r.e.Request.Secrets
	req := r.e.Request
	req.Session, req.OnLogin, req.Secrets = sess, r.e.Target.Login, specs
	if !p.Full {
		leased := map[string]bool{}
		for _, s := range infos {
			leased[s.Path] = s.LeaseDuration > 0
		}
		have := func(name string) bool { _, ok := current[name]; return ok }
		req.Secrets = selectSpecs(specs, fetch, have, leased)
		deferUnread(infos, req.Secrets, fetch, r.now)
	}
	res := &provider.Result{Session: sess} // nothing to render anew: no Vault call
	if p.Full || len(req.Secrets) > 0 {
		var err error
		if res, err = r.f.Fetch(ctx, &req); err != nil {
			return nil, nil, nil, err
		}
	}
	r.held, r.fetched = res.Session, res.Secrets
	if res.LoggedIn && !p.Full {
		// A new token: leases made by the old one die when it is revoked,
		// so every path moves under the new token now.
		n := Anew(p)
		return nil, res.Session, &n, nil
	}
	byName := map[string]provider.File{}
	for _, f := range res.Files {
		byName[f.Name] = f
	}
	merged := make([]provider.File, 0, len(specs))
	for _, s := range specs {
		if f, ok := byName[s.File]; ok {
			merged = append(merged, f)
		} else {
			c := current[s.File]
			merged = append(merged, provider.File{Name: c.Name, Data: c.Data, Mode: s.Mode})
		}
	}
	files, err := r.e.Target.Render(merged)
	if err == nil {
		r.changed, err = r.e.Target.Write(files)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	// Fetched paths replace their old entries, in the request's order.
	byPath := map[string]provider.SecretInfo{}
	if !p.Full {
		for _, s := range infos {
			byPath[s.Path] = s
		}
	}
	for _, s := range res.Secrets {
		byPath[s.Path] = s
	}
	out := make([]provider.SecretInfo, 0, len(byPath))
	seen := map[string]bool{}
	for _, s := range specs {
		for _, r := range s.Reads() {
			if info, ok := byPath[r.Path]; ok && !seen[r.Path] {
				seen[r.Path] = true
				out = append(out, info)
			}
		}
	}
	return out, res.Session, nil, nil
}

// record saves what the run did and lets the replaced token go.
func (r *run) record(p Plan, infos []provider.SecretInfo, sess *provider.Session, fetched bool) error {
	rec := *r.rec
	rec.VolumeID, rec.RequestHash, rec.RotationPeriod = r.e.VolumeID, r.e.Hash, r.e.Period
	rec.Pod, rec.Role = r.e.Request.Pod, r.e.Request.Role
	rec.Secrets, rec.Session = infos, sess
	if fetched {
		rec.FetchedAt = r.now
	}
	rec.Failures, rec.NextAttempt, rec.LastError = 0, time.Time{}, ""
	if r.changed && !p.First {
		rec.PrunePending = true // the old payload is pruned on the next call
	}
	r.held = sess
	if err := r.e.Target.Record(&rec); err != nil {
		return err
	}
	*r.rec = rec
	if r.old != nil && sess != nil && r.old.Token != sess.Token {
		// The new token's files are in place; the old token and the leases
		// it made are no longer needed by anyone.
		r.e.Target.Release(r.old, WhyReplaced)
	}
	return nil
}

// counter counts Vault requests and logins in one place, and releases the
// token of a failed fetch's login.
type counter struct {
	f        Fetcher
	t        Target
	requests int
	loggedIn bool
}

func (c *counter) Fetch(ctx context.Context, req *provider.Request) (*provider.Result, error) {
	res, err := c.f.Fetch(ctx, req)
	if res != nil {
		c.requests += res.VaultRequests
		c.loggedIn = c.loggedIn || res.LoggedIn
		c.t.Release(res.Orphan, WhyFailed)
	}
	return res, err
}

func (c *counter) RenewLease(ctx context.Context, s *provider.Session, id string, inc time.Duration) (time.Duration, error) {
	ttl, n, err := c.f.RenewLease(ctx, s, id, inc)
	c.requests += n
	return ttl, err
}

func (c *counter) RenewToken(ctx context.Context, s *provider.Session) (*provider.Session, error) {
	ns, n, err := c.f.RenewToken(ctx, s)
	c.requests += n
	return ns, err
}
