package provider_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider"
)

// The budget's arithmetic: what a reservation takes from the budget as it
// charges and refunds, and that a charge that does not fit takes nothing.
func TestBudgetCharges(t *testing.T) {
	type step struct {
		op      string // charge, refund, await, close
		n       int64
		busy    bool  // the charge must fail ErrBusy
		inUse   int64 // budget bytes taken after the step
		comment string
	}
	cases := []struct {
		name    string
		reserve int64
		steps   []step
	}{
		{"within the reservation", 20, []step{
			{op: "charge", n: 15, inUse: 20, comment: "the reservation covers it"},
			{op: "charge", n: 5, inUse: 20},
			{op: "refund", n: 20, inUse: 20, comment: "the reservation is kept until close"},
			{op: "close", inUse: 0},
		}},
		{"beyond the reservation", 20, []step{
			{op: "charge", n: 50, inUse: 50},
			{op: "charge", n: 50, inUse: 100},
			{op: "charge", n: 1, busy: true, inUse: 100, comment: "full: fails at once, takes nothing"},
			{op: "refund", n: 90, inUse: 20, comment: "back to the reservation"},
			{op: "charge", n: 1, inUse: 20},
			{op: "close", inUse: 0},
			{op: "charge", n: 1, busy: true, inUse: 0, comment: "a closed reservation charges nothing"},
			{op: "close", inUse: 0, comment: "twice is harmless"},
		}},
		{"await room for a whole volume", 20, []step{
			{op: "await", n: 60, inUse: 60, comment: "free: taken at once"},
			{op: "charge", n: 60, inUse: 60, comment: "within what it awaited"},
			{op: "refund", n: 60, inUse: 60, comment: "kept until close"},
			{op: "await", n: 100, busy: true, inUse: 60, comment: "waiting twice would hold more than its first reservation"},
			{op: "close", inUse: 0},
			{op: "await", n: 10, busy: true, inUse: 0, comment: "closed"},
		}},
		{"await while holding charges", 20, []step{
			{op: "charge", n: 50, inUse: 50},
			{op: "await", n: 80, busy: true, inUse: 50, comment: "it must give back first"},
			{op: "refund", n: 50, inUse: 20},
			{op: "await", n: 10, inUse: 20, comment: "it holds that much already"},
			{op: "await", n: 500, inUse: 100, comment: "capped at the size"},
			{op: "close", inUse: 0},
		}},
		{"larger than the whole budget", 500, []step{
			{op: "charge", n: 100, inUse: 100, comment: "the reservation was capped at the size"},
			{op: "charge", n: 1, busy: true, inUse: 100},
			{op: "close", inUse: 0},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := provider.NewBudget(100)
			r, err := b.Reserve(context.Background(), c.reserve)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range c.steps {
				var err error
				switch s.op {
				case "charge":
					err = r.Charge(s.n)
				case "refund":
					r.Refund(s.n)
				case "await":
					err = r.Await(context.Background(), s.n)
				case "close":
					r.Close()
				}
				if gotBusy := errors.Is(err, provider.ErrBusy); gotBusy != s.busy || (err != nil && !gotBusy) {
					t.Errorf("step %d (%s %d): err = %v, want busy=%v", i, s.op, s.n, err, s.busy)
				}
				if got := b.InUse(); got != s.inUse {
					t.Errorf("step %d (%s %d, %s): in use %d, want %d", i, s.op, s.n, s.comment, got, s.inUse)
				}
			}
		})
	}
}

// Reserve waits in arrival order while the budget is taken, and a waiter
// that gives up leaves nothing behind.
func TestBudgetReserveWaits(t *testing.T) {
	b := provider.NewBudget(100)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	big, err := b.Reserve(ctx, 80)
	if err != nil {
		t.Fatal(err)
	}
	// A waiter that gives up.
	gctx, gcancel := context.WithCancel(ctx)
	gave := make(chan error, 1)
	go func() { _, err := b.Reserve(gctx, 50); gave <- err }()
	waitQueued(t, b, 1)
	// Then 50 and 60, which do not fit together: 50 came first, so it
	// goes first, and 60 (which would fit alone) waits behind it.
	granted := [2]chan *provider.Reservation{make(chan *provider.Reservation, 1), make(chan *provider.Reservation, 1)}
	for i, n := range []int64{50, 60} {
		go func() {
			r, err := b.Reserve(ctx, n)
			if err != nil {
				t.Error(err)
			}
			granted[i] <- r
		}()
		waitQueued(t, b, 2+i)
	}
	gcancel()
	if err := <-gave; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled waiter: %v", err)
	}
	if b.InUse() != 80 || b.Waiting() != 2 {
		t.Errorf("in use %d, %d waiting after a waiter gave up; want 80 and 2", b.InUse(), b.Waiting())
	}
	big.Close()
	first := <-granted[0]
	if b.InUse() != 50 || b.Waiting() != 1 {
		t.Errorf("in use %d, %d waiting after the first grant; want 50 and 1 (arrival order)", b.InUse(), b.Waiting())
	}
	first.Close()
	second := <-granted[1]
	if b.InUse() != 60 {
		t.Errorf("in use %d after the second grant, want 60", b.InUse())
	}
	second.Close()
	if b.InUse() != 0 {
		t.Errorf("in use %d after all closed, want 0", b.InUse())
	}
}

// waitQueued polls (bounded) until n reservations are waiting.
func waitQueued(t *testing.T, b *provider.Budget, n int) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if b.Waiting() >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%d waiters never queued (have %d)", n, b.Waiting())
}

// Many fetches reserving, charging past their reservation, refunding and
// closing at once never deadlock and give every byte back; a fetch refused
// gives back what it charged, awaits room for its whole need and then
// gets it. The budget is sized as the driver sizes it: one fetch's need
// plus every fetch's up-front reservation.
func TestBudgetNoDeadlock(t *testing.T) {
	const fetches, reserve, need = 32, 16, 400
	b := provider.NewBudget(need + fetches*reserve + 88)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	busy, done := 0, 0
	for g := 0; g < fetches; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				r, err := b.Reserve(ctx, reserve)
				if err != nil {
					t.Errorf("reserve: %v (deadlock?)", err)
					return
				}
				var charged int64
				for j := 0; j < 4; j++ {
					n := rand.Int64N(need / 4)
					runtime.Gosched() // overlap with the others
					if err := r.Charge(n); err != nil {
						mu.Lock()
						busy++
						mu.Unlock()
						r.Refund(charged)
						if err := r.Await(ctx, need); err != nil {
							t.Errorf("await: %v (deadlock?)", err)
							r.Close()
							return
						}
						if err := r.Charge(need); err != nil {
							t.Errorf("charge after await: %v", err)
						}
						charged = need
						break
					}
					charged += n
				}
				r.Refund(charged / 2)
				r.Close()
				mu.Lock()
				done++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if done != fetches*300 {
		t.Errorf("%d of %d fetches finished", done, fetches*300)
	}
	if b.InUse() != 0 {
		t.Errorf("in use %d after every reservation closed, want 0", b.InUse())
	}
	t.Logf("%d fetches, %d refused as busy, then awaited", done, busy)
}
