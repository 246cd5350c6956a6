package provider

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrBusy is a fetch that needed more memory than the driver-wide budget
// had free (ResourceExhausted; kubelet and the refresh backoff retry it).
var ErrBusy = errors.New("driver memory budget exhausted")

// Budget bounds the bytes that all fetches in flight hold at once: Vault
// responses being decoded and files rendered but not yet written. Without
// it, each of 16 concurrent fetches may hold several MiB, well past the
// chart's memory limit.
//
// It cannot deadlock. Everything a fetch needs beyond its reservation it
// takes with Charge, which never waits: it succeeds at once or fails with
// ErrBusy. Only Reserve and Await wait, and only while the fetch holds no
// more than its small up-front reservation: a fetch that ran out of room
// first gives back everything else, then waits in line for all it may
// need. With the budget at least one volume's need plus every fetch's
// up-front reservation, the waiter at the head of the line is always
// served once the fetches that do not wait finish.
type Budget struct {
	mu      sync.Mutex
	size    int64
	used    int64
	waiters []*budgetWaiter // FIFO
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed once the bytes are granted
}

// NewBudget returns a budget of size bytes (size > 0).
func NewBudget(size int64) *Budget { return &Budget{size: size} }

// Size is the budget's total in bytes.
func (b *Budget) Size() int64 { return b.size }

// InUse is the bytes currently taken (for tests and metrics).
func (b *Budget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Waiting is the number of Reserve calls waiting (for tests and metrics).
func (b *Budget) Waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiters)
}

// Reserve waits until n bytes are free, in arrival order, and returns a
// reservation holding them; or the context's error when it ends first.
// n is capped at the budget's size. A nil Budget gives a nil (unbounded)
// Reservation.
func (b *Budget) Reserve(ctx context.Context, n int64) (*Reservation, error) {
	if b == nil {
		return nil, nil
	}
	n = min(max(n, 0), b.size)
	if err := b.wait(ctx, n); err != nil {
		return nil, err
	}
	return &Reservation{b: b, first: n, base: n, held: n}, nil
}

// wait takes n (<= size) bytes, waiting in arrival order.
func (b *Budget) wait(ctx context.Context, n int64) error {
	b.mu.Lock()
	if len(b.waiters) == 0 && b.size-b.used >= n {
		b.used += n
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-w.ready:
			// Granted while giving up: hand the bytes back.
			b.used -= n
		default:
			for i, x := range b.waiters {
				if x == w {
					b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
					break
				}
			}
		}
		b.grantLocked()
		b.mu.Unlock()
		return fmt.Errorf("wait for the driver's memory budget: %w", ctx.Err())
	}
}

// take takes n bytes if they are free, without waiting. It may pass
// waiters: they hold nothing yet, and the fetch asking is already under
// way, so letting it finish frees memory soonest.
func (b *Budget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.size-b.used < n {
		return false
	}
	b.used += n
	return true
}

func (b *Budget) give(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.grantLocked()
	b.mu.Unlock()
}

// grantLocked wakes waiters in order while the head one fits.
func (b *Budget) grantLocked() {
	for len(b.waiters) > 0 && b.size-b.used >= b.waiters[0].n {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.used += w.n
		close(w.ready)
	}
}

// Reservation is one fetch's share of a Budget: the bytes reserved up front
// and whatever it charged beyond them. It is safe for concurrent use (a
// fetch reads up to 8 paths at once). A nil Reservation charges nothing.
type Reservation struct {
	b     *Budget
	mu    sync.Mutex
	first int64 // what Reserve gave it
	base  int64 // reserved (Reserve, Await); held until Close
	held  int64 // taken from the budget: max(base, used)
	used  int64 // charged
}

// Charge accounts n more bytes. What the reservation lacks is taken from
// the budget without waiting; when it is not free, Charge fails with
// ErrBusy and charges nothing.
func (r *Reservation) Charge(n int64) error {
	if r == nil || n <= 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b == nil {
		return fmt.Errorf("%w: the fetch's reservation is closed", ErrBusy)
	}
	if need := r.used + n - r.held; need > 0 {
		if !r.b.take(need) {
			return fmt.Errorf("%w: %d more bytes needed, the budget of %d bytes is in use by fetches in flight", ErrBusy, need, r.b.size)
		}
		r.held += need
	}
	r.used += n
	return nil
}

// Await makes the reservation hold at least n bytes (capped at the
// budget's size), waiting for them in line; charges up to n then never
// fail. It refuses with ErrBusy, without waiting, unless the reservation
// holds only what Reserve gave it: only a fetch that holds nothing else
// may wait (no hold-and-wait), and so at most once.
func (r *Reservation) Await(ctx context.Context, n int64) error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	if r.b == nil {
		r.mu.Unlock()
		return fmt.Errorf("%w: the fetch's reservation is closed", ErrBusy)
	}
	b := r.b
	n = min(n, b.size)
	if r.held >= n {
		r.base = max(r.base, n)
		r.mu.Unlock()
		return nil
	}
	if r.held > r.first {
		r.mu.Unlock()
		return fmt.Errorf("%w: the fetch holds %d bytes and may not wait for more", ErrBusy, r.held)
	}
	need := n - r.held
	r.mu.Unlock()
	if err := b.wait(ctx, need); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b == nil { // closed while waiting
		b.give(need)
		return fmt.Errorf("%w: the fetch's reservation is closed", ErrBusy)
	}
	r.held += need
	r.base = max(r.base, n)
	return nil
}

// Refund gives back n charged bytes; what is then held beyond the
// reservation goes back to the budget.
func (r *Reservation) Refund(n int64) {
	if r == nil || n <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b == nil {
		return
	}
	r.used = max(r.used-n, 0)
	if extra := r.held - max(r.base, r.used); extra > 0 {
		r.held -= extra
		r.b.give(extra)
	}
}

// Close gives everything back. Calling it again does nothing.
func (r *Reservation) Close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b == nil {
		return
	}
	r.b.give(r.held)
	r.b, r.held, r.used = nil, 0, 0
}
