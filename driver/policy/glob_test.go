package policy

import "testing"

func TestPathGlob(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"secret/data/paypal", "secret/data/paypal", true},
		{"secret/data/paypal", "secret/data/paypal2", false},
		{"secret/data/paypal", "secret/data", false},
		{"secret/data/*", "secret/data/db", true},
		{"secret/data/*", "secret/data/shop/db", false}, // * stays in its segment
		{"secret/data/*", "secret/data", false},
		{"secret/data/db-*", "secret/data/db-main", true},
		{"secret/data/db-?", "secret/data/db-1", true},
		{"secret/data/db-[0-9]", "secret/data/db-x", false},
		{"secret/*/db", "secret/data/db", true},
		{"secret/data/**", "secret/data/db", true},
		{"secret/data/**", "secret/data/a/b/c", true},
		{"secret/data/**", "secret/data", false}, // the folder, not the secret of the same name
		{"secret/data/shop/**", "secret/data/shop", false},
		{"secret/**/db", "secret/db", true}, // ** in the middle: zero or more
		{"secret/**/db", "secret/a/db", true},
		{"secret/**/db", "secret/a/b/db", true},
		{"secret/**/db", "secret/a/b/dbx", false},
		{"**/db", "db", true},
		{"**/db", "x/y/db", true},
		{"**", "anything/at/all", true},
		{"*/data/**/creds/*", "kv/data/x/y/creds/z", true},
		{"*/data/**/creds/*", "kv/data/creds/z", true},
		{"*/data/**/creds/*", "kv/data/creds", false},
	}
	for _, tt := range tests {
		g, err := compilePath(tt.pattern)
		if err != nil {
			t.Fatalf("compilePath(%q): %v", tt.pattern, err)
		}
		if got := g.match(tt.path); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

func TestNameGlob(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"shop", "shop", true},
		{"shop", "shop2", false},
		{"shop-*", "shop-eu", true},
		{"*", "anything", true},
		{"*", "", false}, // an empty value never passes a pattern
		{"**", "x", true},
		{"team-[ab]", "team-a", true},
		{"team-[ab]", "team-c", false},
	}
	for _, tt := range tests {
		g, err := compileName(tt.pattern)
		if err != nil {
			t.Fatalf("compileName(%q): %v", tt.pattern, err)
		}
		if got := g.match(tt.name); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestGlobErrors(t *testing.T) {
	paths := []string{"", "/secret/x", "secret/x/", "secret//x", "secret/../sys", "secret/./x", "secret/x**", "secret/[a"}
	for _, p := range paths {
		if _, err := compilePath(p); err == nil {
			t.Errorf("compilePath(%q): no error", p)
		}
	}
	names := []string{"", "a/b", "[a"}
	for _, n := range names {
		if _, err := compileName(n); err == nil {
			t.Errorf("compileName(%q): no error", n)
		}
	}
}
