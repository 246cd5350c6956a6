package provider_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"vaultcsi.dev/driver/provider"
	"vaultcsi.dev/driver/provider/render"
)

func templateSpec(t *testing.T, file, src string) provider.SecretSpec {
	t.Helper()
	tm, err := render.Parse(file, src)
	if err != nil {
		t.Fatal(err)
	}
	return provider.SecretSpec{File: file, Template: src, Tmpl: tm}
}

// A template is rendered from the same reads as plain entries on its paths
// (one read per path), after all of them arrive; the responses it kept are
// given back to the memory budget once it is rendered, or the fetch failed.
func TestFetchTemplateReadsOnce(t *testing.T) {
	v, p := setupLimits(t)
	v.PutKV1(t, "big", map[string]any{"blob": strings.Repeat("z", 1<<20-64), "name": "big-one"})
	v.PutKV1(t, "small", map[string]any{"name": "small-one"})
	budget := provider.NewBudget(64 << 20)
	const reserve = 64 << 10
	for _, c := range []struct {
		name  string
		specs []provider.SecretSpec
		want  string // the template's output; empty: the fetch fails
		kind  error
	}{
		{"two reads, one shared with a plain key", []provider.SecretSpec{
			{File: "name", Path: "kv/big", Key: "name"},
			templateSpec(t, "t", `{{ (secret "kv/big").name }}/{{ (secret "kv/small").name }}/{{ len (secret "kv/big").blob }}`),
		}, "big-one/small-one/1048512", nil},
		{"missing key", []provider.SecretSpec{
			{File: "name", Path: "kv/big", Key: "name"},
			templateSpec(t, "t", `{{ (secret "kv/big").nokey }}`),
		}, "", provider.ErrNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem, err := budget.Reserve(context.Background(), reserve)
			if err != nil {
				t.Fatal(err)
			}
			defer mem.Close()
			req := request(v, c.specs...)
			req.Memory = mem
			res, err := p.Fetch(context.Background(), req)
			if c.kind != nil {
				releaseOrphan(t, p, res)
				if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), `"nokey"`) || !strings.Contains(err.Error(), "kv/big") || !strings.Contains(err.Error(), "file t") {
					t.Fatalf("err = %v, want %v naming file, key and path", err, c.kind)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = p.Release(context.Background(), res.Session) }()
				if got := string(res.Files[1].Data); got != c.want || string(res.Files[0].Data) != "big-one" {
					t.Fatalf("files %q %q", res.Files[0].Data, got)
				}
				if res.VaultRequests != 3 {
					t.Errorf("%d Vault requests, want a login and one read per path (3)", res.VaultRequests)
				}
			}
			// The 1 MiB response the template kept is given back: only
			// the reservation (which covers the small files) is in use.
			if got := budget.InUse(); got != reserve {
				t.Errorf("budget in use %d, want the reservation (%d)", got, reserve)
			}
		})
	}
}

// A template's args are a write, sent only where Vault confirms a PKI
// issuing endpoint: on a KV path spelled like one, the fetch is refused
// naming the entry's template, and nothing is written there.
func TestFetchTemplateArgsOnlyToPKI(t *testing.T) {
	v, p := setupLimits(t)
	spec := templateSpec(t, "t", `{{ (secret "kv/issue/web" "common_name=a.b").certificate }}`)
	spec.Index = 2
	res, err := p.Fetch(context.Background(), request(v, spec))
	releaseOrphan(t, p, res)
	if !errors.Is(err, provider.ErrNotIssuing) || !strings.Contains(err.Error(), "secrets[2].template") {
		t.Fatalf("err = %v, want ErrNotIssuing naming secrets[2].template", err)
	}
	if s, err := v.Root.Logical().Read("kv/issue/web"); err != nil || s != nil {
		t.Fatalf("kv/issue/web was written: %v %v", s, err)
	}
}
