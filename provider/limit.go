package provider

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// Bounds on what the provider reads from Vault.
const (
	// MaxResponseBytes bounds one Vault response body. A file holds at most
	// MaxSecretBytes; in the response a string value may take up to 6
	// bytes per byte (Vault escapes < > & and control characters as
	// \u00XX: 1 MiB of "<" is a 6 MiB response), and a whole-map file is
	// the map's own JSON, as long as in the response. 8 MiB holds a 1 MiB
	// value escaped throughout plus the envelope and some neighbouring
	// fields; a larger response is far beyond what any allowed file needs.
	MaxResponseBytes = 8 << 20
	// DecodeFactor is the bytes held per response byte while it is
	// decoded: the JSON decoder's buffer (up to twice the body, as it
	// grows) and the decoded values.
	DecodeFactor = 3
	// largeResponse is where a response stops being small: a fetch reads
	// up to maxParallel paths at once, but decodes only one response
	// larger than this at a time, so that one volume of large secrets fits
	// a budget (16 responses of 8 MiB at once would need 384 MiB). The
	// other reads' small responses together stay at 7 MiB, as with 8
	// reads of up to 1 MiB: MinBudget did not grow with the read cap.
	largeResponse = (7 << 20) / (maxParallel - 1)
)

// MinBudget is the smallest Budget with which one volume at maxVolumeBytes
// can always be fetched when it is alone: its rendered files (the last
// one may pass the limit by up to a file), one largest response and the
// other parallel reads' small ones being decoded.
func MinBudget(maxVolumeBytes int64) int64 {
	return maxVolumeBytes + MaxSecretBytes + DecodeFactor*(MaxResponseBytes+(maxParallel-1)*largeResponse)
}

// limitTransport refuses Vault responses larger than max before vault/api
// decodes them: by Content-Length when Vault sends one, and by counting
// the body as it is read (Vault streams large bodies chunked). It also
// charges the bytes read to the fetch's Reservation, when the request's
// context carries a meter.
type limitTransport struct {
	base http.RoundTripper
	max  int64
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.max {
		_ = resp.Body.Close()
		return nil, &bodyError{fmt.Errorf("%w: Vault's response is %d bytes, over the limit of %d", ErrTooLarge, resp.ContentLength, t.max)}
	}
	resp.Body = &limitBody{rc: resp.Body, max: t.max, meter: meterFrom(req.Context()), ctx: req.Context()}
	return resp, nil
}

// limitBody fails the read that passes max bytes, so no more than max+1
// bytes of one response ever reach the decoder.
type limitBody struct {
	rc    io.ReadCloser
	max   int64
	read  int64
	meter *meter
	ctx   context.Context
	err   error
}

func (b *limitBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if room := b.max + 1 - b.read; int64(len(p)) > room {
		p = p[:room] // one byte past the limit is enough to know
	}
	n, err := b.rc.Read(p)
	b.read += int64(n)
	if b.read > b.max {
		b.err = &bodyError{fmt.Errorf("%w: Vault's response is over the limit of %d bytes", ErrTooLarge, b.max)}
		return 0, b.err
	}
	if n > 0 && b.meter != nil {
		if b.read > largeResponse {
			if gerr := b.meter.enterLarge(b.ctx); gerr != nil {
				b.err = &bodyError{gerr}
				return 0, b.err
			}
		}
		if cerr := b.meter.charge(DecodeFactor * int64(n)); cerr != nil {
			b.err = &bodyError{cerr}
			return 0, b.err
		}
	}
	return n, err
}

func (b *limitBody) Close() error { return b.rc.Close() }

// bodyError is a response the provider refused to read; wrap keeps its
// cause (ErrTooLarge, ErrBusy) rather than calling Vault unavailable.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// meter is what one read charged to its fetch's Reservation, so that it
// can be refunded once the response is rendered.
type meter struct {
	res *Reservation
	// large is the fetch's one-at-a-time gate for large responses (a
	// channel of capacity 1). Waiting for it cannot deadlock: its holder
	// never waits for anything but Vault, and gives it back when its
	// response is rendered.
	large chan struct{}

	mu       sync.Mutex
	charged  int64
	hasLarge bool
}

type meterKey struct{}

func withMeter(ctx context.Context, m *meter) context.Context {
	if m == nil || m.res == nil {
		return ctx
	}
	return context.WithValue(ctx, meterKey{}, m)
}

func meterFrom(ctx context.Context) *meter {
	m, _ := ctx.Value(meterKey{}).(*meter)
	return m
}

func (m *meter) charge(n int64) error {
	if err := m.res.Charge(n); err != nil {
		return err
	}
	m.mu.Lock()
	m.charged += n
	m.mu.Unlock()
	return nil
}

// enterLarge takes the fetch's large-response gate, once per read.
func (m *meter) enterLarge(ctx context.Context) error {
	m.mu.Lock()
	has := m.hasLarge
	m.mu.Unlock()
	if has || m.large == nil {
		return nil
	}
	select {
	case m.large <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	m.mu.Lock()
	m.hasLarge = true
	m.mu.Unlock()
	return nil
}

// releaseLarge gives back the large-response gate but keeps the charge:
// the read's fields are kept for a composite file.
func (m *meter) releaseLarge() {
	m.mu.Lock()
	has := m.hasLarge
	m.hasLarge = false
	m.mu.Unlock()
	if has {
		<-m.large
	}
}

// refund gives back everything the meter charged, and the gate.
func (m *meter) refund() {
	m.mu.Lock()
	n, has := m.charged, m.hasLarge
	m.charged, m.hasLarge = 0, false
	m.mu.Unlock()
	m.res.Refund(n)
	if has {
		<-m.large
	}
}
