package render

import (
	"errors"
	"strings"
	"testing"
)

func lookupOf(data map[string]map[string]any) Lookup {
	return func(r Ref) (map[string]any, error) {
		m, ok := data[RefKey(r)]
		if !ok {
			return nil, errors.New("not read")
		}
		return m, nil
	}
}

var dbCreds = map[string]map[string]any{
	"database/creds/app": {"username": "v-app-x1", "password": "A1a-pw/secret"},
	"secret/data/app":    {"host": "db.shop", "list": []any{"a", "b"}},
}

func TestTemplateRenders(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
		refs            int
	}{
		{"dsn", `{{- with secret "database/creds/app" }}postgres://{{ .username }}:{{ .password | queryEscape }}@db/app{{ end }}`,
			"postgres://v-app-x1:A1a-pw%2Fsecret@db/app", 1},
		{"two secrets", `{{ (secret "secret/data/app").host }} {{ (secret "database/creds/app").username | upper }}`,
			"db.shop V-APP-X1", 2},
		{"range over data", `{{ range (secret "secret/data/app").list }}[{{ . }}]{{ end }}`, "[a][b]", 1},
		{"join and default", `{{ with secret "secret/data/app" }}{{ join "," .list }} {{ index . "none" | default "d" }}{{ end }}`, "a,b d", 1},
		{"urlEscape", `{{ urlEscape "p@ss:w/rd +~" }}{{ with secret "secret/data/app" }}{{ end }}`, "p%40ss%3Aw%2Frd%20%2B~", 1},
		{"printf small width", `{{ printf "%5s" (secret "secret/data/app").host }}`, "db.shop", 1},
		{"toJson sorted", `{{ toJson (secret "database/creds/app") }}`, `{"password":"A1a-pw/secret","username":"v-app-x1"}`, 1},
		{"args", `{{ (secret "pki/issue/web" "ttl=1h" "common_name=a.b").cn }}`, "a.b", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm, err := Parse("f", tc.src)
			if err != nil {
				t.Fatal(err)
			}
			if len(tm.Refs) != tc.refs {
				t.Fatalf("refs %v, want %d", tm.Refs, tc.refs)
			}
			data := map[string]map[string]any{}
			for k, v := range dbCreds {
				data[RefKey(Ref{Path: k})] = v
			}
			data[RefKey(Ref{Path: "pki/issue/web", Args: map[string]string{"common_name": "a.b", "ttl": "1h"}})] = map[string]any{"cn": "a.b"}
			got, err := tm.Execute(lookupOf(data), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			// Deterministic: the same secrets give the same bytes.
			again, _ := tm.Execute(lookupOf(data), 1<<20)
			if string(got) != tc.want || string(again) != string(got) {
				t.Fatalf("got %q then %q, want %q", got, again, tc.want)
			}
		})
	}
}

// Every template that could burn CPU or memory without output, or read a
// path the policy cannot see, is refused at parse time.
func TestTemplateRejects(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"empty", "  ", "empty"},
		{"too long", `{{ secret "a/b" }}` + strings.Repeat("x", MaxTemplateBytes), "at most"},
		{"syntax", `{{ with secret "a/b" }`, "unexpected"},
		{"unknown function", `{{ env "HOME" }}{{ secret "a/b" }}`, `"env" not defined`},
		{"no secret", `hello`, "reads no secret"},
		{"variable path", `{{ $p := "a/b" }}{{ secret $p }}`, "literal"},
		{"piped path", `{{ "a/b" | secret }}`, "literal"},
		{"field path", `{{ secret .x }}`, "literal"},
		{"no path", `{{ secret }}`, "literal"},
		{"bad arg", `{{ secret "pki/issue/web" "ttl" }}`, "name=value"},
		{"dup arg", `{{ secret "pki/issue/web" "ttl=1h" "ttl=2h" }}`, "twice"},
		{"range over integer", `{{ secret "a/b" }}{{ range 1000000000 }}{{ end }}`, "range over an integer"},
		{"range over len", `{{ range len (secret "a/b").x }}{{ end }}`, "only allowed over data"},
		{"range nested 3", `{{ with secret "a/b" }}{{ range .l }}{{ range .l }}{{ range .l }}{{ end }}{{ end }}{{ end }}{{ end }}`, "nested deeper"},
		{"define", `{{ define "x" }}{{ template "x" }}{{ end }}{{ secret "a/b" }}`, "define"},
		{"template call", `{{ secret "a/b" }}{{ template "f" }}`, "not allowed"},
		{"block", `{{ block "b" . }}{{ secret "a/b" }}{{ end }}`, "define"},
		{"call", `{{ call .f }}{{ secret "a/b" }}`, "call is not allowed"},
		{"repeat", `{{ repeat 1000000000 "x" }}{{ secret "a/b" }}`, `"repeat" not defined`},
		{"seq", `{{ range seq 1 1000000 }}{{ end }}{{ secret "a/b" }}`, `"seq" not defined`},
		{"until", `{{ until 1000000 }}{{ secret "a/b" }}`, `"until" not defined`},
		{"now", `{{ now }}{{ secret "a/b" }}`, `"now" not defined`},
		{"rand", `{{ randAlphaNum 8 }}{{ secret "a/b" }}`, `"randAlphaNum" not defined`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f", tc.src)
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
	many := ""
	for i := 0; i <= MaxRefs; i++ {
		many += `{{ secret "kv/s` + strings.Repeat("x", i) + `" }}`
	}
	if _, err := Parse("f", many); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("%d secrets: err %v", MaxRefs+1, err)
	}
}

// Functions that could build a large value out of nothing fail at run time
// (their arguments may come from a secret); output is bounded while it is
// written; a missing key names the key and the secret; no error holds a value.
func TestTemplateRunErrors(t *testing.T) {
	long := make([]any, 1000) // 1000 x 1000 iterations write nothing
	for i := range long {
		long[i] = "x"
	}
	data := map[string]map[string]any{RefKey(Ref{Path: "database/creds/app"}): {
		"username": dbCreds["database/creds/app"]["username"], "password": dbCreds["database/creds/app"]["password"], "l": long}}
	for _, tc := range []struct {
		name, src string
		max       int64
		kind      error
		want      string
	}{
		{"missing key", `{{ with secret "database/creds/app" }}{{ .usernam }}{{ end }}`, 0, ErrMissingKey, `key "usernam" not in database/creds/app`},
		{"printf width", `{{ printf "%0999999999d" 1 }}{{ secret "database/creds/app" }}`, 0, ErrInvalid, "width"},
		{"printf star", `{{ printf "%*d" 999999999 1 }}{{ secret "database/creds/app" }}`, 0, ErrInvalid, "width"},
		{"indent", `{{ indent 1000000000 (secret "database/creds/app").username }}`, 0, ErrInvalid, "indent"},
		{"replace empty", `{{ replace "" "xxxxxxxx" (secret "database/creds/app").password }}`, 0, ErrInvalid, "replace"},
		{"b64dec", `{{ b64dec (secret "database/creds/app").password }}`, 0, ErrInvalid, "b64dec"},
		{"over limit", `{{ with secret "database/creds/app" }}{{ .username }}{{ .username }}{{ end }}`, 10, ErrTooLarge, ""},
		{"nested range over large lists", `{{ $l := (secret "database/creds/app").l }}{{ range $l }}{{ range $l }}{{ end }}{{ end }}`, 0, ErrInvalid, "more than 100000"},
		{"value in type error", `{{ with secret "database/creds/app" }}{{ .password.x }}{{ end }}`, 0, ErrInvalid, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm, err := Parse("f", tc.src)
			if err != nil {
				t.Fatal(err)
			}
			_, err = tm.Execute(lookupOf(data), tc.max)
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %v containing %q", err, tc.kind, tc.want)
			}
			for _, v := range dbCreds["database/creds/app"] {
				if strings.Contains(err.Error(), v.(string)) {
					t.Fatalf("error holds a secret value: %v", err)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`{{ with secret "database/creds/app" }}{{ .username }}{{ end }}`)
	f.Add(`{{ range (secret "a/b").l }}{{ range . }}{{ . }}{{ end }}{{ end }}`)
	f.Add(`{{ define "x" }}{{ end }}`)
	f.Add(`{{ secret "pki/issue/w" "a=b" }}{{ printf "%9999d" 1 }}`)
	f.Add(`{{ $x := secret "a" }}{{ range $i, $e := $x }}{{ $i }}{{ end }}`)
	f.Fuzz(func(t *testing.T, src string) {
		tm, err := Parse("f", src)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if len(tm.Refs) == 0 || len(tm.Refs) > MaxRefs {
			t.Fatalf("accepted with %d refs", len(tm.Refs))
		}
		// Whatever parses runs bounded over small data: an error or output
		// within the limit, never a hang or a panic.
		data := map[string]map[string]any{}
		for _, r := range tm.Refs {
			data[RefKey(r)] = map[string]any{"username": "u", "l": []any{"a", "b"}}
		}
		out, err := tm.Execute(lookupOf(data), 4096)
		if err == nil && len(out) > 4096 {
			t.Fatalf("output %d bytes over the limit", len(out))
		}
	})
}

// BenchmarkTemplateExecute is the CPU a template adds to a fetch: a clone
// bound to the fetch's reads, and the execution.
func BenchmarkTemplateExecute(b *testing.B) {
	tm, err := Parse("db.env", `{{- with secret "database/creds/app" }}
DATABASE_URL=postgres://{{ .username }}:{{ .password | urlEscape }}@db.shop.svc:5432/app
{{- end }}`)
	if err != nil {
		b.Fatal(err)
	}
	data := map[string]map[string]any{RefKey(Ref{Path: "database/creds/app"}): dbCreds["database/creds/app"]}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tm.Execute(lookupOf(data), 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTemplateValueBound: a value built inside an expression is bounded
// by the output limit before it is allocated, not only when written: each
// of these would build far more than the limit (gigabytes, for some)
// from a small secret and a short template.
func TestTemplateValueBound(t *testing.T) {
	const limit = 64 << 10
	big := strings.Repeat("a", 32<<10)
	lines := strings.Repeat("\n", 32<<10)
	get := func(Ref) (map[string]any, error) {
		return map[string]any{"a": big, "nl": lines, "list": []any{big, big, big}, "short": "ab"}, nil
	}
	bad := map[string]string{
		"replace grows":          `{{ with secret "secret/data/x" }}{{ replace "a" .a .a }}{{ end }}`,
		"replace then contains":  `{{ with secret "secret/data/x" }}{{ if contains "b" (replace "a" .a .a) }}x{{ end }}{{ end }}`,
		"doubling chain":         `{{ with secret "secret/data/x" }}{{ len (replace "a" "aa" (replace "a" "aa" (replace "a" "aa" .a))) }}{{ end }}`,
		"printf repeats an arg":  `{{ with secret "secret/data/x" }}{{ len (printf "%[1]s%[1]s%[1]s" .a) }}{{ end }}`,
		"printf extra args":      `{{ with secret "secret/data/x" }}{{ len (printf "" .a .a .a) }}{{ end }}`,
		"printf bad verb":        `{{ with secret "secret/data/x" }}{{ len (printf "%!%!%!" .a .a .a) }}{{ end }}`,
		"indent many lines":      `{{ with secret "secret/data/x" }}{{ len (indent 8 .nl) }}{{ end }}`,
		"join with a long sep":   `{{ with secret "secret/data/x" }}{{ len (join .a .list) }}{{ end }}`,
		"quote of a long value":  `{{ with secret "secret/data/x" }}{{ len (quote (replace "a" "\x01" .a)) }}{{ end }}`,
		"b64enc of a long value": `{{ with secret "secret/data/x" }}{{ len (b64enc (printf "%s%s" .a .a)) }}{{ end }}`,
	}
	for name, src := range bad {
		t.Run(name, func(t *testing.T) {
			tpl, err := Parse("f", src)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if _, err := tpl.Execute(get, limit); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("got %v, want ErrTooLarge", err)
			}
		})
	}
	// Within the bound the same functions work.
	good := `{{ with secret "secret/data/x" }}{{ replace "a" "bb" .short }}{{ printf "%[1]s-%[1]q" .short }}{{ indent 2 .short }}{{ join "," (keys .) }}{{ end }}`
	tpl, err := Parse("f", good)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tpl.Execute(get, limit)
	if err != nil {
		t.Fatal(err)
	}
	if want := `bbb` + `ab-"ab"` + `  ab` + "a,list,nl,short"; string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
}
