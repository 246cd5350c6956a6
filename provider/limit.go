package provider

import (
	"fmt"
	"io"
	"net/http"
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
)

// limitTransport refuses Vault responses larger than max before vault/api
// decodes them: by Content-Length when Vault sends one, and by counting
// the body as it is read (Vault streams large bodies chunked).
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
	resp.Body = &limitBody{rc: resp.Body, max: t.max}
	return resp, nil
}

// limitBody fails the read that passes max bytes, so no more than max+1
// bytes of one response ever reach the decoder.
type limitBody struct {
	rc   io.ReadCloser
	max  int64
	read int64
	err  error
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
	return n, err
}

func (b *limitBody) Close() error { return b.rc.Close() }

// bodyError is a response the provider refused to read; wrap keeps its
// cause (ErrTooLarge) rather than calling Vault unavailable.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }
