package driver

import (
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"vaultcsi.dev/driver/driver/ops"
	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider"
)

// Revoking Vault tokens the driver no longer needs. A token is first put on
// record in the state dir (so a crash or an outage cannot make the driver
// forget it), then revoked once with a short deadline by the call that let
// it go, after that call has released its target lock and Vault slot; a
// token that could not be revoked is retried in the background with
// backoff until Vault revokes it or it has expired.
const (
	// revokeTimeout bounds one revocation: a hanging Vault costs this much.
	revokeTimeout = 3 * time.Second
	// Backoff between failed revocations, with ±20% jitter.
	revokeBackoffBase = 2 * time.Second
	revokeBackoffMax  = 5 * time.Minute
	// revokeMaxAge bounds the retries of a token whose expiry is unknown:
	// Vault's default max TTL.
	revokeMaxAge = 768 * time.Hour
	// revokeParallel bounds background revocations in flight.
	revokeParallel = 4
	// revokeIdle is how long the retry loop sleeps with nothing to do (a
	// new record wakes it at once).
	revokeIdle = time.Hour
)

// Why a token is revoked (the record's Reason).
const (
	revokeUnpublish     = "unpublish"
	revokeFailedPublish = "failed-publish"
	revokeFailedRefresh = "failed-refresh"
	revokeReplaced      = "replaced"
	revokeUnfinished    = "unfinished-publish" // a publish the driver died in
	revokeLateLogin     = "late-login"         // Vault answered a login after its caller left
)

// A background revocation attempt is an Op of kind ops.RevokeRetry with
// outcome ops.OK (revoked, or already gone), ops.Failed (retried later) or
// ops.Expired (dropped: the token has expired in Vault).

// nextRevokeAttempt is when to try again after the failures-th failed
// revocation at now: exponential backoff from revokeBackoffBase, capped at
// revokeBackoffMax, ±20% jitter (r in [0,1)), and never after the token's
// expiry. drop is true once the token has expired: Vault has revoked it
// (and its leases) itself.
func nextRevokeAttempt(failures int, now, expires time.Time, r float64) (next time.Time, drop bool) {
	if !now.Before(expires) {
		return time.Time{}, true
	}
	d := revokeBackoffBase
	for i := 1; i < failures && d < revokeBackoffMax; i++ {
		d *= 2
	}
	d = min(d, revokeBackoffMax)
	next = now.Add(time.Duration(float64(d) * (0.8 + 0.4*r)))
	if next.After(expires) {
		next = expires
	}
	return next, false
}

// revocationExpiry is when a recorded token stops mattering.
func revocationExpiry(r *state.Revocation) time.Time {
	if !r.ExpiresAt.IsZero() {
		return r.ExpiresAt
	}
	return r.Added.Add(revokeMaxAge)
}

// revoker keeps the tokens still to be revoked, on disk and in memory.
type revoker struct {
	store   *state.Store
	release func(context.Context, *provider.Session) error
	clock   clock.Clock
	rand    func() float64
	observe func(Op)
	kick    chan struct{}

	mu      sync.Mutex
	entries map[string]*revokeEntry // by state.RevocationKey
}

// revokeEntry is one token to revoke; busy while someone is revoking it.
type revokeEntry struct {
	rec  state.Revocation
	busy bool
}

func newRevoker(store *state.Store, release func(context.Context, *provider.Session) error,
	clk clock.Clock, rnd func() float64, observe func(Op)) *revoker {
	q := &revoker{store: store, release: release, clock: clk, rand: rnd, observe: observe,
		kick: make(chan struct{}, 1), entries: map[string]*revokeEntry{}}
	// What a previous process could not revoke is still owed.
	recs, err := store.Revocations()
	if err != nil {
		klog.ErrorS(err, "some Vault tokens to revoke could not be read back")
	}
	for _, r := range recs {
		q.entries[r.Key()] = &revokeEntry{rec: *r}
	}
	if len(recs) > 0 {
		klog.InfoS("Vault tokens still to revoke from before the restart", "count", len(recs))
	}
	return q
}

// who identifies whose token is revoked, for the record and the audit line.
type who struct {
	target string
	pod    provider.Identity
}

// hold puts a token on record and returns it marked busy for the caller
// to revoke (attempt); nil when there is nothing to do (no token, or it is
// being revoked already).
func (q *revoker) hold(s *provider.Session, why string, w who) *revokeEntry {
	return q.add(s, why, w, true)
}

// later puts a token on record for the background loop alone.
func (q *revoker) later(s *provider.Session, why string, w who) {
	q.add(s, why, w, false)
	q.wake()
}

func (q *revoker) add(s *provider.Session, why string, w who, busy bool) *revokeEntry {
	if s == nil || s.Token == "" {
		return nil
	}
	now := q.clock.Now()
	key := state.RevocationKey(s.Token)
	q.mu.Lock()
	defer q.mu.Unlock()
	if e, ok := q.entries[key]; ok {
		if e.busy || !busy {
			return nil
		}
		e.busy = true
		return e
	}
	e := &revokeEntry{busy: busy, rec: state.NewRevocation(s, w.target, w.pod)}
	e.rec.Reason, e.rec.Added, e.rec.NextAttempt = why, now, now
	if busy {
		// Due for the loop only if its holder never reports back (after a
		// crash, which empties memory, not the disk).
		e.rec.NextAttempt = now.Add(revokeTimeout)
	}
	q.entries[key] = e
	if err := q.store.PutRevocation(&e.rec); err != nil {
		// Kept in memory all the same; only a restart would lose it.
		klog.ErrorS(err, "record a Vault token to revoke", "target", w.target, "pod", podRef(w.pod))
	}
	return e
}

// attempt revokes a held token once, with a short deadline, and settles
// the record: gone on success, rescheduled (or dropped once expired) on
// failure. It returns the Vault requests made and Vault's error.
func (q *revoker) attempt(e *revokeEntry, background bool) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	err := q.release(ctx, e.rec.Session())
	cancel()
	outcome := q.settle(e, err)
	if err != nil && !background {
		klog.ErrorS(err, "revoke Vault token; retrying in the background", "target", e.rec.Target,
			"pod", podRef(e.rec.Pod()), "reason", e.rec.Reason)
	}
	if background {
		q.report(&e.rec, outcome, err)
	}
	return 1, err
}

func (q *revoker) settle(e *revokeEntry, err error) ops.Outcome {
	now := q.clock.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	e.busy = false
	key := e.rec.Key()
	outcome := ops.OK
	if err != nil {
		e.rec.Attempts++
		e.rec.LastError = err.Error() // provider errors carry no token
		next, drop := nextRevokeAttempt(e.rec.Attempts, now, revocationExpiry(&e.rec), q.rand())
		if !drop {
			e.rec.NextAttempt = next
			if perr := q.store.PutRevocation(&e.rec); perr != nil {
				klog.ErrorS(perr, "record a Vault token to revoke", "target", e.rec.Target)
			}
			q.wakeLocked()
			return ops.Failed
		}
		outcome = ops.Expired
	}
	delete(q.entries, key)
	if derr := q.store.DeleteRevocation(key); derr != nil {
		klog.ErrorS(derr, "delete revocation record", "target", e.rec.Target)
	}
	return outcome
}

func (q *revoker) report(r *state.Revocation, outcome ops.Outcome, err error) {
	if outcome != ops.Failed || r.Attempts == 1 {
		klog.InfoS("background revocation of a Vault token", "outcome", outcome, "failures", r.Attempts,
			"target", r.Target, "pod", podRef(r.Pod()), "reason", r.Reason)
	}
	if q.observe != nil {
		op := Op{Kind: ops.RevokeRetry, Outcome: outcome, Err: err, Target: r.Target, Pod: r.Pod(), Reason: r.Reason}
		if outcome != ops.Expired {
			op.Requests = 1 // an expired token is dropped without asking Vault
		}
		q.observe(op)
	}
}

func (q *revoker) wake() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.wakeLocked()
}

func (q *revoker) wakeLocked() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// pending is the number of tokens on record (for tests and metrics).
func (q *revoker) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.entries)
}

// due takes the records whose attempt is due (marking them busy), drops
// the expired ones, and says how long until the next is due.
func (q *revoker) due() (due []*revokeEntry, expired []state.Revocation, wait time.Duration) {
	now := q.clock.Now()
	wait = revokeIdle
	q.mu.Lock()
	defer q.mu.Unlock()
	for key, e := range q.entries {
		switch {
		case e.busy:
		case !now.Before(revocationExpiry(&e.rec)):
			delete(q.entries, key)
			if err := q.store.DeleteRevocation(key); err != nil {
				klog.ErrorS(err, "delete revocation record", "target", e.rec.Target)
			}
			expired = append(expired, e.rec)
		case !now.Before(e.rec.NextAttempt):
			e.busy = true
			due = append(due, e)
		default:
			wait = min(wait, e.rec.NextAttempt.Sub(now))
		}
	}
	return due, expired, wait
}

// Run retries revocations until ctx ends. Each pass attempts what is due
// (a bounded number at once, each with revokeTimeout) and then sleeps
// until the next record is due or a new one arrives.
func (q *revoker) Run(ctx context.Context) {
	sem := make(chan struct{}, revokeParallel)
	for {
		due, expired, wait := q.due()
		for i := range expired {
			q.report(&expired[i], ops.Expired, nil)
		}
		var wg sync.WaitGroup
		for _, e := range due {
			sem <- struct{}{}
			wg.Add(1)
			go func(e *revokeEntry) {
				defer func() { <-sem; wg.Done() }()
				_, _ = q.attempt(e, true)
			}(e)
		}
		wg.Wait()
		if len(due) > 0 || len(expired) > 0 {
			// Attempts reschedule their records: look again at once.
			if ctx.Err() != nil {
				return
			}
			continue
		}
		t := q.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-q.kick:
			t.Stop()
		case <-t.C():
		}
	}
}

// afterLock is what one CSI call does once it has let go of its target
// lock and Vault slot: revoke the tokens it no longer needs (Vault may
// hang; no other call must wait on that), then report the call with those
// revocations counted among its Vault requests. The tokens are on record
// from the moment they are handed over, so a crash cannot lose them.
type afterLock struct {
	d    *Driver
	op   *Op
	revs []*revokeEntry
	// signal, when set, sends a reload signal once the call is reported.
	signal func()
}

// observe reports op once the call's revocations are done.
func (a *afterLock) observe(op Op) { a.op = &op }

// revoke hands a token over for revocation after the call.
func (a *afterLock) revoke(s *provider.Session, why string, w who) {
	if e := a.d.revoker.hold(s, why, w); e != nil {
		a.revs = append(a.revs, e)
	}
}

// run revokes (all at once, each bounded by revokeTimeout) and reports.
func (a *afterLock) run() {
	if a.signal != nil {
		defer a.signal() // after the refresh's own report
	}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		n        int
		firstErr error
	)
	for _, e := range a.revs {
		wg.Add(1)
		go func(e *revokeEntry) {
			defer wg.Done()
			k, err := a.d.revoker.attempt(e, false)
			mu.Lock()
			defer mu.Unlock()
			n += k
			if firstErr == nil {
				firstErr = err
			}
		}(e)
	}
	wg.Wait()
	if a.op == nil {
		return
	}
	a.op.Requests += n
	if a.op.Kind == ops.Unpublish && a.op.Err == nil {
		// An unpublish is about the revocation: its audit line says if it
		// failed (it is retried in the background).
		a.op.Err = firstErr
	}
	a.d.observer.Observe(*a.op)
}
