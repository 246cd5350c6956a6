package driver

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/provider"
)

var cachePod = provider.Identity{Namespace: "shop", PodName: "payment-1", PodUID: "7a1e1f0c-3c3e-4f4e-9a57-2b1b7a0e0001", ServiceAccount: "payment"}

// podTokens is kubelet's serviceAccount.tokens for p: a JWT with the
// API server's claims and a made-up signature (Parse never checks it).
func podTokens(p provider.Identity, aud string) string {
	enc := base64.RawURLEncoding
	claims, _ := json.Marshal(map[string]any{
		"sub": "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount,
		"aud": []string{aud},
		"kubernetes.io": map[string]any{
			"namespace":      p.Namespace,
			"pod":            map[string]any{"name": p.PodName, "uid": p.PodUID},
			"serviceaccount": map[string]any{"name": p.ServiceAccount},
		},
	})
	jwt := enc.EncodeToString([]byte(`{"alg":"RS256"}`)) + "." + enc.EncodeToString(claims) + ".c2ln"
	b, _ := json.Marshal(map[string]any{aud: map[string]string{"token": jwt, "expirationTimestamp": "2030-01-02T03:04:05Z"}})
	return string(b)
}

func cacheRequest(p provider.Identity) (vc, secrets map[string]string) {
	vc = map[string]string{
		attributes.KeyEphemeral: "true", attributes.KeyPodNamespace: p.Namespace, attributes.KeyPodName: p.PodName,
		attributes.KeyPodUID: p.PodUID, attributes.KeyServiceAccount: p.ServiceAccount,
		attributes.AttrRole: "payments", attributes.AttrSecrets: "- {file: db, path: secret/data/db}\n",
	}
	return vc, map[string]string{attributes.KeyTokens: podTokens(p, "vault")}
}

// A re-publish with the same maps takes the cached result: the same Volume
// as Parse gives, a copy of the caller's own, for a fraction of Parse's
// allocations (the JSON decodes of the token are skipped).
func TestParseCacheHit(t *testing.T) {
	var c parseCache
	vc, secrets := cacheRequest(cachePod)
	want, err := attributes.Parse(vc, secrets, "vault")
	if err != nil {
		t.Fatal(err)
	}
	first, _, err := c.parse("/t", vc, secrets, "vault")
	if err != nil {
		t.Fatal(err)
	}
	// kubelet's next call: equal maps, not the same ones.
	vc2, secrets2 := maps.Clone(vc), maps.Clone(secrets)
	got, _, err := c.parse("/t", vc2, secrets2, "vault")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(first, want) {
		t.Fatalf("cached parse = %+v, want %+v", got, want)
	}
	got.RotationPeriod = time.Hour // the caller's copy: the cache must not see it
	if again, _, _ := c.parse("/t", vc2, secrets2, "vault"); again.RotationPeriod != 0 || again == got {
		t.Fatalf("the cache handed out a shared Volume (period %v)", again.RotationPeriod)
	}
	parseAllocs := testing.AllocsPerRun(50, func() { _, _ = attributes.Parse(vc2, secrets2, "vault") })
	hitAllocs := testing.AllocsPerRun(50, func() { _, _, _ = c.parse("/t", vc2, secrets2, "vault") })
	if hitAllocs > 2 || hitAllocs*10 > parseAllocs {
		t.Fatalf("a cache hit allocates %.0f times, Parse %.0f: the hit is not taken", hitAllocs, parseAllocs)
	}
}

// Any change to the request, the audience or the target is parsed anew:
// a cached success never hides a request Parse refuses.
func TestParseCacheMissOnChange(t *testing.T) {
	other := cachePod
	other.PodName = "attacker-1"
	for _, tt := range []struct {
		name     string
		target   string
		audience string
		change   func(vc, secrets map[string]string)
		want     string // the error Parse gives
	}{
		{"pod name in the context", "/t", "vault", func(vc, _ map[string]string) { vc[attributes.KeyPodName] = "attacker-1" }, "pod.name"},
		{"another pod's token", "/t", "vault", func(_, s map[string]string) { s[attributes.KeyTokens] = podTokens(other, "vault") }, "pod.name"},
		{"token moved to the context and changed", "/t", "vault", func(vc, s map[string]string) {
			delete(s, attributes.KeyTokens)
			vc[attributes.KeyTokens] = podTokens(other, "vault")
		}, "pod.name"},
		{"unknown attribute", "/t", "vault", func(vc, _ map[string]string) { vc["extra"] = "x" }, "unknown attribute"},
		{"audience", "/t", "other", func(map[string]string, map[string]string) {}, "no token for audience"},
		{"secrets attribute", "/t", "vault", func(vc, _ map[string]string) { vc[attributes.AttrSecrets] = "- {file: ../x, path: secret/data/db}" }, "secrets[0].file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c parseCache
			vc, secrets := cacheRequest(cachePod)
			if _, _, err := c.parse(tt.target, vc, secrets, "vault"); err != nil {
				t.Fatal(err)
			}
			tt.change(vc, secrets)
			_, _, err := c.parse(tt.target, vc, secrets, tt.audience)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %q", err, tt.want)
			}
		})
	}
	// The same request at another target is parsed for that target.
	var c parseCache
	vc, secrets := cacheRequest(cachePod)
	if _, _, err := c.parse("/a", vc, secrets, "vault"); err != nil {
		t.Fatal(err)
	}
	if _, e, _ := c.parse("/b", vc, secrets, "vault"); e == c.m["/a"] {
		t.Fatal("target /b got /a's entry")
	}
}

// The digest's encoding is unambiguous: moving a boundary between key and
// value, or an entry between the two maps, is another digest.
func TestParseDigestDistinct(t *testing.T) {
	m := func(kv ...string) map[string]string {
		out := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	inputs := []struct {
		vc, secrets map[string]string
		aud         string
	}{
		{m("ab", "c"), nil, "v"},
		{m("a", "bc"), nil, "v"},
		{nil, m("a", "bc"), "v"},
		{m("a", "b", "c", ""), nil, "v"},
		{m("a", "b"), m("c", ""), "v"},
		{m("a", "bc"), nil, "va"},
		{m("", "abc"), nil, "v"},
		{nil, nil, "v"},
		{nil, nil, ""},
	}
	seen := map[[32]byte]int{}
	for i, in := range inputs {
		sum := parseDigest(in.vc, in.secrets, in.aud)
		if j, ok := seen[sum]; ok {
			t.Errorf("inputs %d and %d share a digest", j, i)
		}
		seen[sum] = i
		if parseDigest(maps.Clone(in.vc), maps.Clone(in.secrets), in.aud) != sum {
			t.Errorf("input %d: digest not stable", i)
		}
	}
}

// The cache holds at most parseCacheMax entries, and an unpublish drops
// its target's.
func TestParseCacheBounded(t *testing.T) {
	var c parseCache
	vc, secrets := cacheRequest(cachePod)
	for i := 0; i < parseCacheMax+10; i++ {
		if _, _, err := c.parse(fmt.Sprintf("/t%d", i), vc, secrets, "vault"); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.m) != parseCacheMax {
		t.Fatalf("%d entries, want %d", len(c.m), parseCacheMax)
	}
	last := fmt.Sprintf("/t%d", parseCacheMax+9)
	c.forget(last)
	if _, ok := c.m[last]; ok {
		t.Fatal("forget left the entry")
	}
	var fe *attributes.FieldError
	if _, _, err := c.parse(last, map[string]string{}, nil, "vault"); !errors.As(err, &fe) {
		t.Fatalf("err = %v, want a FieldError", err)
	}
	if _, ok := c.m[last]; ok {
		t.Fatal("a refused request was cached")
	}
}

// An entry does not keep a copy of the token when it can point into the
// request's tokens JSON; a hit hands out the same token either way.
func TestParseCacheTokenNotKept(t *testing.T) {
	for _, tt := range []struct {
		name    string
		escape  bool // the JSON writes a letter of the token as a \u escape
		inCtx   bool
		wantRef bool
	}{
		{name: "in secrets", wantRef: true},
		{name: "in the context", inCtx: true, wantRef: true},
		{name: "escaped in the JSON", escape: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c parseCache
			vc, secrets := cacheRequest(cachePod)
			raw := secrets[attributes.KeyTokens]
			if tt.escape { // \u0065 is "e": the same token, not verbatim in the JSON
				i := strings.Index(raw, `"token":"ey`) + len(`"token":"`)
				raw = raw[:i] + `\u0065` + raw[i+1:]
			}
			if tt.inCtx {
				delete(secrets, attributes.KeyTokens)
				vc[attributes.KeyTokens] = raw
			} else {
				secrets[attributes.KeyTokens] = raw
			}
			want, err := attributes.Parse(vc, secrets, "vault")
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.parse("/t", vc, secrets, "vault"); err != nil {
				t.Fatal(err)
			}
			if kept := c.m["/t"].vol.Request.JWT != ""; kept == tt.wantRef {
				t.Errorf("entry keeps the token: %v, want %v", kept, !tt.wantRef)
			}
			got, _, err := c.parse("/t", maps.Clone(vc), maps.Clone(secrets), "vault")
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("hit = %+v, %v; want %+v", got, err, want)
			}
		})
	}
}
