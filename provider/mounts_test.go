package provider

import (
	"fmt"
	"testing"
	"time"
)

func TestIssuingSuffix(t *testing.T) {
	tests := []struct {
		rest string
		want bool
	}{
		{"issue/web", true},
		{"issuer/default/issue/web", true},
		{"issuer/7c1e/issue/web", true},
		{"issue", false},
		{"issue/", false},
		{"issue/web/extra", false},
		{"sign/web", false},
		{"issuer/default/sign/web", false},
		{"issuer//issue/web", false},
		{"roles/web", false},
		{"data/team/pki/issue/app", false}, // a KV v2 path below its mount
		{"", false},
	}
	for _, tt := range tests {
		if got := issuingSuffix(tt.rest); got != tt.want {
			t.Errorf("issuingSuffix(%q) = %v, want %v", tt.rest, got, tt.want)
		}
	}
}

// The cache answers for every path below a mount, per namespace, only
// while fresh, and stays bounded.
func TestMountCache(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := newMountCache(func() time.Time { return now })
	c.put("", vaultMount{path: "pki/", typ: "pki"})
	c.put("team-a/", vaultMount{path: "certs/", typ: "pki"})

	steps := []struct {
		name      string
		advance   time.Duration
		namespace string
		path      string
		wantPath  string // "" = miss
	}{
		{"hit below the mount", 0, "", "pki/issue/web", "pki/"},
		{"hit, issuer form", 0, "", "pki/issuer/default/issue/web", "pki/"},
		{"mount name is a prefix only at a slash", 0, "", "pki_kv/issue/web", ""},
		{"other namespace is another key", 0, "team-a/", "pki/issue/web", ""},
		{"namespaced hit", 0, "team-a/", "certs/issue/web", "certs/"},
		{"still fresh just before the TTL", mountCacheTTL - time.Second, "", "pki/issue/web", "pki/"},
		{"expired at the TTL", time.Second, "", "pki/issue/web", ""},
		{"an expired entry is gone", 0, "", "pki/issue/web", ""},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		m, ok := c.get(s.namespace, s.path)
		if got := map[bool]string{true: m.path}[ok]; got != s.wantPath {
			t.Errorf("%s: get(%q, %q) = %q, want %q", s.name, s.namespace, s.path, got, s.wantPath)
		}
	}

	// A clock that goes backwards does not make an entry live forever.
	c.put("", vaultMount{path: "pki/", typ: "pki"})
	now = now.Add(-time.Hour)
	if _, ok := c.get("", "pki/issue/web"); ok {
		t.Error("an entry from the future was trusted")
	}

	// Bounded: never more than mountCacheMax entries.
	for i := 0; i < 3*mountCacheMax; i++ {
		c.put("", vaultMount{path: fmt.Sprintf("m%d/", i), typ: "kv"})
		if n := len(c.m); n > mountCacheMax {
			t.Fatalf("cache holds %d entries, bound %d", n, mountCacheMax)
		}
	}
}
