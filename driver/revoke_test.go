package driver

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
	"vaultcsi.dev/driver/driver/ops"

	clocktesting "k8s.io/utils/clock/testing"

	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider"
)

// The retry schedule of a failed revocation: exponential from 2s, capped at
// 5m, ±20% jitter, never past the token's expiry, dropped once expired.
func TestNextRevokeAttempt(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	far := t0.Add(100 * time.Hour)
	tests := []struct {
		name     string
		failures int
		now      time.Time
		expires  time.Time
		r        float64
		wantIn   time.Duration // from now; ignored when drop
		wantDrop bool
	}{
		{"first failure", 1, t0, far, 0.5, 2 * time.Second, false},
		{"second", 2, t0, far, 0.5, 4 * time.Second, false},
		{"third", 3, t0, far, 0.5, 8 * time.Second, false},
		{"eighth: 256s", 8, t0, far, 0.5, 256 * time.Second, false},
		{"ninth: capped at 5m", 9, t0, far, 0.5, 5 * time.Minute, false},
		{"a thousandth: capped, the loop is bounded", 1000, t0, far, 0.5, 5 * time.Minute, false},
		{"zero failures counts as one", 0, t0, far, 0.5, 2 * time.Second, false},
		{"jitter low end", 1, t0, far, 0, 1600 * time.Millisecond, false},
		{"jitter high end", 1, t0, far, 0.999, 2399 * time.Millisecond, false},
		{"capped at the expiry", 3, t0, t0.Add(5 * time.Second), 0.5, 5 * time.Second, false},
		{"at the expiry: dropped", 1, t0, t0, 0.5, 0, true},
		{"past the expiry: dropped", 4, t0.Add(time.Minute), t0, 0.5, 0, true},
	}
	for _, tt := range tests {
		next, drop := nextRevokeAttempt(tt.failures, tt.now, tt.expires, tt.r)
		if drop != tt.wantDrop {
			t.Errorf("%s: drop = %v, want %v", tt.name, drop, tt.wantDrop)
			continue
		}
		if drop {
			continue
		}
		if got := next.Sub(tt.now); got.Round(time.Millisecond) != tt.wantIn {
			t.Errorf("%s: next in %s, want %s", tt.name, got, tt.wantIn)
		}
	}
}

// scriptedVault is a Release that fails each token a set number of times
// (forever with -1) and records when it was asked, on the fake clock: the
// only way to see a schedule of minutes without waiting for it.
type scriptedVault struct {
	clock *clocktesting.FakeClock
	t0    time.Time
	mu    sync.Mutex
	fails map[string]int
	asked map[string][]time.Duration
}

func (v *scriptedVault) release(_ context.Context, s *provider.Session) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.asked[s.Token] = append(v.asked[s.Token], v.clock.Now().Sub(v.t0))
	if n := v.fails[s.Token]; n != 0 {
		v.fails[s.Token] = n - 1
		return errors.New("vault unavailable")
	}
	return nil
}

func (v *scriptedVault) times(token string) []time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]time.Duration(nil), v.asked[token]...)
}

// The retry loop on a fake clock: a token Vault refuses three times is
// retried on the schedule and revoked on the fourth attempt; one that
// always fails is dropped at its expiry without another request; both
// records are then gone; each attempt is reported. A second revoker on the
// same state dir (a restart) picks up what the first left.
func TestRevokerRetries(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	fc := clocktesting.NewFakeClock(t0)
	v := &scriptedVault{clock: fc, t0: t0, fails: map[string]int{"tok-a": 3, "tok-b": -1}, asked: map[string][]time.Duration{}}
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var outcomes []string
	observe := func(op Op) {
		mu.Lock()
		defer mu.Unlock()
		if op.Kind != ops.RevokeRetry {
			t.Errorf("op kind %q", op.Kind)
		}
		outcomes = append(outcomes, op.Target+":"+string(op.Outcome))
	}
	q := newRevoker(store, v.release, fc, func() float64 { return 0.5 }, observe)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	q.later(&provider.Session{Token: "tok-a", ExpiresAt: t0.Add(time.Hour)}, revokeUnpublish, who{target: "a"})
	q.later(&provider.Session{Token: "tok-b", ExpiresAt: t0.Add(10 * time.Second)}, revokeUnpublish, who{target: "b"})
	if recs, _ := store.Revocations(); len(recs) != 2 {
		t.Fatalf("%d records on disk, want 2", len(recs))
	}
	// Step the fake clock in 500ms steps, each once the loop sleeps again.
	for step := 0; step < 60 && q.pending() > 0; step++ {
		waitForSleep(t, fc)
		fc.Step(500 * time.Millisecond)
	}
	waitFor(t, func() bool { return q.pending() == 0 })

	if got, want := v.times("tok-a"), []time.Duration{0, 2 * time.Second, 6 * time.Second, 14 * time.Second}; !equalDurations(got, want) {
		t.Errorf("tok-a asked at %v, want %v", got, want)
	}
	// 0, +2s, +4s; the next (+8s, at 14s) would be past the expiry (10s).
	if got, want := v.times("tok-b"), []time.Duration{0, 2 * time.Second, 6 * time.Second}; !equalDurations(got, want) {
		t.Errorf("tok-b asked at %v, want %v", got, want)
	}
	if recs, _ := store.Revocations(); len(recs) != 0 {
		t.Errorf("%d records left on disk", len(recs))
	}
	mu.Lock()
	count := map[string]int{}
	for _, o := range outcomes {
		count[o]++
	}
	mu.Unlock()
	want := map[string]int{"a:failed": 3, "a:ok": 1, "b:failed": 3, "b:expired": 1}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("reported %v, want %v", count, want)
			break
		}
	}

	// A restart: what one revoker could not revoke, the next one does.
	v.fails["tok-c"] = -1
	q.later(&provider.Session{Token: "tok-c", ExpiresAt: t0.Add(time.Hour)}, revokeUnpublish, who{target: "c"})
	waitFor(t, func() bool { return len(v.times("tok-c")) == 1 && q.pending() == 1 })
	cancel()
	<-done
	v.mu.Lock()
	v.fails["tok-c"] = 0
	v.mu.Unlock()
	q2 := newRevoker(store, v.release, fc, func() float64 { return 0.5 }, nil)
	if q2.pending() != 1 {
		t.Fatalf("after a restart %d tokens to revoke, want 1", q2.pending())
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { q2.Run(ctx2); close(done2) }()
	defer func() { cancel2(); <-done2 }()
	for step := 0; step < 20 && q2.pending() > 0; step++ {
		waitForSleep(t, fc)
		fc.Step(500 * time.Millisecond)
	}
	waitFor(t, func() bool { return q2.pending() == 0 })
	if n := len(v.times("tok-c")); n != 2 {
		t.Errorf("tok-c asked %d times, want 2", n)
	}
	if recs, _ := store.Revocations(); len(recs) != 0 {
		t.Errorf("%d records left on disk after the restart", len(recs))
	}
}

// A token handed over by a call (hold) is not attempted by the loop while
// the call revokes it; a held token the call fails to revoke is the
// loop's to retry.
func TestRevokerHoldIsExclusive(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	fc := clocktesting.NewFakeClock(t0)
	v := &scriptedVault{clock: fc, t0: t0, fails: map[string]int{"tok": 1}, asked: map[string][]time.Duration{}}
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	q := newRevoker(store, v.release, fc, func() float64 { return 0.5 }, nil)
	s := &provider.Session{Token: "tok", ExpiresAt: t0.Add(time.Hour)}
	e := q.hold(s, revokeFailedPublish, who{target: "t"})
	if e == nil || q.hold(s, revokeFailedPublish, who{target: "t"}) != nil {
		t.Fatal("a token was handed over twice")
	}
	if due, _, _ := q.due(); len(due) != 0 {
		t.Fatal("the loop took a token its holder is revoking")
	}
	if n, err := q.attempt(e, false); n != 1 || err == nil {
		t.Fatalf("attempt = %d, %v; want one failed request", n, err)
	}
	fc.Step(3 * time.Second)
	due, _, _ := q.due()
	if len(due) != 1 {
		t.Fatalf("after a failed attempt the loop has %d due, want 1", len(due))
	}
	if n, err := q.attempt(due[0], true); n != 1 || err != nil {
		t.Fatalf("retry = %d, %v", n, err)
	}
	if q.pending() != 0 {
		t.Error("token still pending after it was revoked")
	}
	if q.hold(nil, revokeUnpublish, who{}) != nil || q.hold(&provider.Session{}, revokeUnpublish, who{}) != nil {
		t.Error("a session without a token was held")
	}
}

// waitForSleep waits (bounded) until the loop sleeps on the fake clock.
func waitForSleep(t *testing.T, fc *clocktesting.FakeClock) {
	t.Helper()
	for i := 0; i < 2000 && !fc.HasWaiters(); i++ {
		time.Sleep(time.Millisecond)
	}
	if !fc.HasWaiters() {
		t.Fatal("the retry loop never went to sleep")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 2000 && !cond(); i++ {
		time.Sleep(time.Millisecond)
	}
	if !cond() {
		t.Fatal("condition not reached")
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
