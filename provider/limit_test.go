package provider_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// setupLimits starts Vault with a role that may read everything under kv/.
func setupLimits(t *testing.T) (*vaulttest.Server, *provider.Provider) {
	t.Helper()
	v := vaulttest.Start(t)
	v.Policy(t, "limits", `path "kv/*" { capabilities = ["read"] }`)
	v.Role(t, "payments", pod.Namespace, pod.ServiceAccount, "limits")
	p, err := provider.New(provider.Config{Addr: v.Addr, AuthMethod: provider.AuthJWT, AuthMount: v.JWTMount})
	if err != nil {
		t.Fatal(err)
	}
	return v, p
}

// Per file at most provider.MaxSecretBytes, as before; per Vault response
// at most provider.MaxResponseBytes, refused while it is read. A value that
// JSON escapes sixfold in the response still fits. Nothing is left in
// Vault by a refused fetch, and no error carries a value.
func TestFetchSizeLimits(t *testing.T) {
	v, p := setupLimits(t)
	mib := 1 << 20
	// Vault refuses a JSON string over 1 MiB (escaped) in a request, so
	// larger secrets are lists or many fields.
	v.PutKV1(t, "exact", map[string]any{"v": strings.Repeat("a", provider.MaxSecretBytes)})
	v.PutKV1(t, "over", map[string]any{"v": []string{strings.Repeat("b", 600<<10), strings.Repeat("b", 600<<10)}})
	// Vault's responses escape < as \u003c: a 1 MiB value is 6 MiB there.
	putUnescaped(t, v, "kv/escaped", map[string]any{"v": strings.Repeat("<", mib-16)})
	v.PutKV1(t, "map", map[string]any{"v": strings.Repeat("c", mib-16)})
	v.PutKV1(t, "map-over", map[string]any{"v1": strings.Repeat("d", 600<<10), "v2": strings.Repeat("d", 600<<10)})
	huge := map[string]any{"small": "tiny-value"}
	for i := range 9 { // 9 MiB: past the response limit
		huge[fmt.Sprintf("pad%d", i)] = strings.Repeat("e", mib-64)
	}
	v.PutKV1(t, "huge", huge)

	cases := []struct {
		name    string
		spec    provider.SecretSpec
		size    int    // bytes of the file, when it must succeed
		errText string // in the error, when it must fail ErrTooLarge
	}{
		{"a value of exactly the limit", provider.SecretSpec{Path: "kv/exact", Key: "v"}, provider.MaxSecretBytes, ""},
		{"a list rendered over the limit", provider.SecretSpec{Path: "kv/over", Key: "v"}, 0, "at most 1048576"},
		{"a value escaped sixfold in the response", provider.SecretSpec{Path: "kv/escaped", Key: "v"}, mib - 16, ""},
		{"a whole map within the limit", provider.SecretSpec{Path: "kv/map"}, mib - 16 + len(`{"v":""}`), ""},
		{"a whole map over the limit", provider.SecretSpec{Path: "kv/map-over"}, 0, "at most 1048576"},
		{"a small key of a response over its limit", provider.SecretSpec{Path: "kv/huge", Key: "small"}, 0, "over the limit of 8388608 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := tokenCount(t, v)
			c.spec.File = "f"
			res, err := p.Fetch(context.Background(), request(v, c.spec))
			if c.errText == "" {
				if err != nil {
					t.Fatal(err)
				}
				if n := len(res.Files[0].Data); n != c.size {
					t.Errorf("file of %d bytes, want %d", n, c.size)
				}
				if err := p.Release(context.Background(), res.Session); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, provider.ErrTooLarge) || !strings.Contains(err.Error(), c.errText) {
				t.Fatalf("err = %v, want ErrTooLarge with %q", err, c.errText)
			}
			releaseOrphan(t, p, res) // the caller's part: the driver's revocation queue
			for _, ch := range "bde" {
				if strings.Contains(err.Error(), strings.Repeat(string(ch), 32)) {
					t.Errorf("the error carries the secret's value: %.200s", err)
				}
			}
			if after := tokenCount(t, v); after != before {
				t.Errorf("Vault tokens: %d before, %d after a refused fetch", before, after)
			}
		})
	}
}

// putUnescaped writes a KV v1 secret with < > & sent as they are (the Go
// client would escape them sixfold and pass Vault's string length limit).
func putUnescaped(t *testing.T, v *vaulttest.Server, path string, data map[string]any) {
	t.Helper()
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(data); err != nil {
		t.Fatal(err)
	}
	r := v.Root.NewRequest(http.MethodPut, "/v1/"+path)
	r.BodyBytes = body.Bytes()
	resp, err := v.Root.RawRequestWithContext(context.Background(), r) //nolint:staticcheck // a raw PUT with a body vault/api's helpers would re-encode
	if err != nil {
		t.Fatalf("put %s: %v", path, err)
	}
	resp.Body.Close()
}

// The attack of issue 9 against the provider: 256 files that each ask for
// the whole map of one ~1 MiB secret. Rendering shares one copy, counts
// each file's pages, and stops at the first file past the volume limit;
// every byte it charged goes back to the budget.
func TestFetchVolumeLimitStopsRendering(t *testing.T) {
	v, p := setupLimits(t)
	v.PutKV1(t, "big", map[string]any{"blob": strings.Repeat("x", 1<<20-64)})
	const limit = 8 << 20
	specs := func(n int) []provider.SecretSpec {
		out := make([]provider.SecretSpec, n)
		for i := range out {
			out[i] = provider.SecretSpec{File: fmt.Sprintf("f%03d", i), Path: "kv/big"}
		}
		return out
	}
	budget := provider.NewBudget(64 << 20)
	const reserve = 64 << 10

	t.Run("256 files", func(t *testing.T) {
		mem, err := budget.Reserve(context.Background(), reserve)
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		req := request(v, specs(256)...)
		req.MaxVolumeBytes, req.Memory = limit, mem
		res, err := p.Fetch(context.Background(), req)
		releaseOrphan(t, p, res)
		// Each file costs 256 pages: 8 fit, the 9th (f008) passes the limit.
		if !errors.Is(err, provider.ErrTooLarge) || !strings.Contains(err.Error(), "file f008 ") || !strings.Contains(err.Error(), "8388608") {
			t.Fatalf("err = %v, want ErrTooLarge naming f008 and the limit", err)
		}
		if got := budget.InUse(); got != reserve {
			t.Errorf("budget in use %d after the refused fetch, want only the reservation (%d)", got, reserve)
		}
	})
	t.Run("8 files share one copy", func(t *testing.T) {
		mem, err := budget.Reserve(context.Background(), reserve)
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		req := request(v, specs(8)...)
		req.MaxVolumeBytes, req.Memory = limit, mem
		res, err := p.Fetch(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = p.Release(context.Background(), res.Session) }()
		first := res.Files[0].Data
		for _, f := range res.Files {
			if len(f.Data) != len(first) || &f.Data[0] != &first[0] {
				t.Errorf("file %s does not share the rendered copy", f.Name)
			}
		}
		// Charged: the one copy, until the driver has written it.
		if got := budget.InUse(); got != int64(len(first)) {
			t.Errorf("budget in use %d, want one copy (%d bytes)", got, len(first))
		}
	})
}

// A fetch whose responses need more than the budget has free does not
// wait while it holds budget: it gives back what it charged, waits in line
// for a whole volume's room, and reads again. A budget too small for the
// secret at all ends in ErrBusy. No token is left behind either way.
func TestFetchMemoryBudget(t *testing.T) {
	v, p := setupLimits(t)
	v.PutKV1(t, "big", map[string]any{"blob": strings.Repeat("y", 1<<20-64)})
	spec := provider.SecretSpec{File: "f", Path: "kv/big", Key: "blob"}
	for _, c := range []struct {
		name   string
		budget int64
		hog    int64 // held by another fetch until this one waits
		busy   bool
		reads  int // Vault requests: a login and one read per attempt
	}{
		{"2 MiB: a 1 MiB response needs about 3 MiB while decoded", 2 << 20, 0, true, 0},
		{"room only after another fetch finishes", 20 << 20, 18 << 20, false, 3},
		{"the minimum budget", provider.MinBudget(8 << 20), 0, false, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := tokenCount(t, v)
			b := provider.NewBudget(c.budget)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if c.hog > 0 {
				hog, err := b.Reserve(ctx, c.hog)
				if err != nil {
					t.Fatal(err)
				}
				go func() {
					for i := 0; i < 2000 && b.Waiting() == 0; i++ {
						time.Sleep(5 * time.Millisecond)
					}
					hog.Close()
				}()
			}
			mem, err := b.Reserve(ctx, 64<<10)
			if err != nil {
				t.Fatal(err)
			}
			req := request(v, spec)
			req.Memory = mem
			res, err := p.Fetch(ctx, req)
			if c.busy {
				if !errors.Is(err, provider.ErrBusy) {
					t.Fatalf("err = %v, want ErrBusy", err)
				}
				releaseOrphan(t, p, res)
			} else if err != nil {
				t.Fatal(err)
			} else {
				if len(res.Files[0].Data) != 1<<20-64 {
					t.Errorf("file of %d bytes", len(res.Files[0].Data))
				}
				if res.VaultRequests != c.reads {
					t.Errorf("%d Vault requests, want %d", res.VaultRequests, c.reads)
				}
				if err := p.Release(context.Background(), res.Session); err != nil {
					t.Fatal(err)
				}
			}
			mem.Close()
			if b.InUse() != 0 {
				t.Errorf("budget in use %d after close", b.InUse())
			}
			if after := tokenCount(t, v); after != before {
				t.Errorf("Vault tokens: %d before, %d after", before, after)
			}
		})
	}
}

// A response whose Content-Length is over the limit is refused before its
// body is read. (A real Vault streams large bodies without one; a proxy
// in front of it, or a hostile server, can send one.)
func TestResponseContentLengthRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(provider.MaxResponseBytes+1))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("{")) // the rest never comes; the client must not wait for it
	}))
	defer srv.Close()
	p, err := provider.New(provider.Config{Addr: srv.URL, AuthMethod: provider.AuthJWT})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := &provider.Request{Role: "r", JWT: "header.payload.sig", Secrets: []provider.SecretSpec{{File: "f", Path: "kv/x"}}}
	_, err = p.Fetch(ctx, req)
	if !errors.Is(err, provider.ErrTooLarge) || !strings.Contains(err.Error(), fmt.Sprintf("is %d bytes", provider.MaxResponseBytes+1)) {
		t.Fatalf("err = %v, want ErrTooLarge from the Content-Length", err)
	}
}
