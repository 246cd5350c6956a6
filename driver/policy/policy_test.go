package policy

import (
	"strings"
	"testing"
)

const testPolicy = `
rules:
  - name: block-quarantine
    effect: deny
    podLabels: "quarantine=true"
  - name: no-admin-secrets
    effect: deny
    paths: ["secret/data/admin/**"]
  - name: payment-paypal
    effect: allow
    namespaces: ["shop"]
    serviceAccounts: ["payment"]
    podNames: ["payment-*"]
    podLabels: "app=payment,tier in (web)"
    roles: ["payments"]
    paths: ["secret/data/paypal", "secret/data/shop/*"]
  - name: paypal-nobody-else
    effect: deny
    paths: ["secret/data/paypal"]
  - name: shop-common
    effect: allow
    namespaces: ["shop", "shop-*"]
    roles: ["shop", "payments"]
    paths: ["secret/data/shop/**"]
  - name: dev-anything
    effect: allow
    namespaces: ["dev"]
    paths: ["**"]
`

func mustParse(t testing.TB, s string) *Policy {
	t.Helper()
	p, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

// payment is a subject the payment-paypal rule allows.
func payment() Subject {
	return Subject{
		Namespace: "shop", ServiceAccount: "payment", PodName: "payment-7d9f-x2k", PodUID: "uid-1",
		Role: "payments", Labels: map[string]string{"app": "payment", "tier": "web"},
		Paths: []string{"secret/data/paypal"},
	}
}

func TestDecide(t *testing.T) {
	p := mustParse(t, testPolicy)
	tests := []struct {
		name    string
		edit    func(*Subject)
		allowed bool
		rule    string
		reason  string // substring
	}{
		{"allow", func(s *Subject) {}, true, "payment-paypal", `allowed by rule "payment-paypal"`},
		{"allow all paths by one rule", func(s *Subject) { s.Paths = []string{"secret/data/paypal", "secret/data/shop/db"} }, true, "payment-paypal", ""},
		{"deny by namespace", func(s *Subject) { s.Namespace = "web" }, false, "paypal-nobody-else", `denied by rule "paypal-nobody-else" for path "secret/data/paypal"`},
		{"deny by service account", func(s *Subject) { s.ServiceAccount = "default" }, false, "paypal-nobody-else", ""},
		{"deny by pod name", func(s *Subject) { s.PodName = "web-1" }, false, "paypal-nobody-else", ""},
		{"deny by label value", func(s *Subject) { s.Labels = map[string]string{"app": "payment", "tier": "db"} }, false, "paypal-nobody-else", ""},
		{"deny when labels missing", func(s *Subject) { s.Labels = nil }, false, "paypal-nobody-else", ""},
		{"deny by role", func(s *Subject) { s.Role = "shop" }, false, "paypal-nobody-else", ""},
		{"deny by path glob", func(s *Subject) { s.Paths = []string{"secret/data/admin/root"} }, false, "no-admin-secrets", `for path "secret/data/admin/root"`},
		{"deny rule on labels alone", func(s *Subject) { s.Labels = map[string]string{"quarantine": "true"} }, false, "block-quarantine", `denied by rule "block-quarantine"`},
		{"first match: deny before a later allow", func(s *Subject) { s.Namespace = "dev"; s.Paths = []string{"secret/data/admin/x"} }, false, "no-admin-secrets", ""},
		{"first match: allow before a later deny", func(s *Subject) {}, true, "payment-paypal", ""},
		{"later allow rule", func(s *Subject) { s.Namespace = "shop-eu"; s.Role = "shop"; s.Paths = []string{"secret/data/shop/a/b"} }, true, "shop-common", ""},
		{"paths split over two allow rules", func(s *Subject) { s.Paths = []string{"secret/data/paypal", "secret/data/shop/eu/db"} }, true, "payment-paypal,shop-common", `allowed by rules ["payment-paypal" "shop-common"]`},
		{"one denied path denies the request", func(s *Subject) { s.Paths = []string{"secret/data/shop/db", "secret/data/admin/x"} }, false, "no-admin-secrets", ""},
		{"no rule matched", func(s *Subject) { s.Namespace = "other"; s.Paths = []string{"kv/app"} }, false, "", `no rule matched for path "kv/app"`},
		{"no rule matched for one path", func(s *Subject) { s.Paths = []string{"secret/data/paypal", "kv/app"} }, false, "", `no rule matched for path "kv/app"`},
		{"no paths", func(s *Subject) { s.Paths = nil }, false, "", "no Vault path"},
		{"dot-dot path", func(s *Subject) { s.Paths = []string{"secret/data/shop/../admin/x"} }, false, "", "not canonical"},
		{"leading slash", func(s *Subject) { s.Paths = []string{"/secret/data/paypal"} }, false, "", "not canonical"},
		{"empty namespace never matches a glob", func(s *Subject) { s.Namespace = ""; s.Paths = []string{"secret/data/shop/x"} }, false, "", reasonNoMatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := payment()
			tt.edit(&s)
			d := p.Decide(s)
			if d.Allowed != tt.allowed || d.Rule != tt.rule || !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("Decide = %+v, want allowed=%v rule=%q reason~%q", d, tt.allowed, tt.rule, tt.reason)
			}
		})
	}
}

const overridePolicy = `
rules:
  - name: no-root-auth
    effect: deny
    authMounts: ["kubernetes"]
  - name: no-admin-ns
    effect: deny
    vaultNamespaces: ["admin", "admin/**"]
    paths: ["secret/data/**"]
  - name: team-a
    effect: allow
    namespaces: ["team-a"]
    vaultNamespaces: ["team-a", "team-a/**"]
    authMounts: ["k8s-*", "clusters/*/k8s"]
    paths: ["secret/data/**"]
  - name: shop
    effect: allow
    namespaces: ["shop"]
    paths: ["secret/data/**"]
  - name: any-ns-no-auth
    effect: allow
    namespaces: ["ops"]
    vaultNamespaces: ["**"]
    paths: ["secret/data/**"]
`

// vaultNamespace and authMount overrides: a pod that sets one needs an allow
// rule that lists it; a pod that sets neither is never held back by them.
func TestDecideOverrides(t *testing.T) {
	p := mustParse(t, overridePolicy)
	subj := func(ns, vaultNS, authMount string) Subject {
		return Subject{Namespace: ns, ServiceAccount: "sa", PodName: "p", Role: "r",
			VaultNamespace: vaultNS, AuthMount: authMount, Paths: []string{"secret/data/x"}}
	}
	tests := []struct {
		name    string
		s       Subject
		allowed bool
		rule    string
		reason  string
	}{
		{"no override, rule without the fields", subj("shop", "", ""), true, "shop", ""},
		{"no override, rule with the fields", subj("team-a", "", ""), true, "team-a", ""},
		{"auth override, rule without authMounts", subj("shop", "", "k8s-east"), false, "", `authMount "k8s-east" (no allow rule lists it in authMounts)`},
		{"namespace override, rule without vaultNamespaces", subj("shop", "team-a", ""), false, "", `vaultNamespace "team-a" (no allow rule lists it in vaultNamespaces)`},
		{"auth override listed", subj("team-a", "", "k8s-east"), true, "team-a", ""},
		{"auth override with a slash listed", subj("team-a", "", "clusters/eu/k8s"), true, "team-a", ""},
		{"auth override not listed", subj("team-a", "", "jwt"), false, "", "authMounts"},
		{"namespace override listed", subj("team-a", "team-a", ""), true, "team-a", ""},
		{"child namespace listed by **", subj("team-a", "team-a/child", ""), true, "team-a", ""},
		{"trailing slash is dropped", subj("team-a", "team-a/", ""), true, "team-a", ""},
		{"namespace override not listed", subj("team-a", "team-b", ""), false, "", "vaultNamespaces"},
		{"both overrides listed", subj("team-a", "team-a/x", "k8s-1"), true, "team-a", ""},
		{"one of two overrides not listed", subj("team-a", "team-a/x", "jwt"), false, "", "authMounts"},
		{"deny rule without paths on an auth override", subj("team-a", "", "kubernetes"), false, "no-root-auth", `denied by rule "no-root-auth"`},
		{"deny rule on a namespace override", subj("ops", "admin/sub", ""), false, "no-admin-ns", `denied by rule "no-admin-ns"`},
		{"deny rules with the field ignore pods without override", subj("ops", "", ""), true, "any-ns-no-auth", ""},
		{"deny rule with authMounts ignores other mounts", subj("team-a", "", "k8s-kubernetes"), true, "team-a", ""},
		{"rule listing only namespaces admits no auth override", subj("ops", "ops", "k8s-1"), false, "", "authMounts"},
		{"rule listing only namespaces admits its namespaces", subj("ops", "ops", ""), true, "any-ns-no-auth", ""},
		{"non-canonical override", subj("team-a", "team-a//x", ""), false, "", "not canonical"},
		{"dot-dot override", subj("team-a", "team-a/../admin", ""), false, "", "not canonical"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(tt.s)
			if d.Allowed != tt.allowed || d.Rule != tt.rule || !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("Decide = %+v, want allowed=%v rule=%q reason~%q", d, tt.allowed, tt.rule, tt.reason)
			}
		})
	}
	// A policy written before these fields existed denies every override.
	old := mustParse(t, testPolicy)
	s := payment()
	s.AuthMount = "kubernetes"
	if d := old.Decide(s); d.Allowed {
		t.Errorf("old policy allowed an authMount override: %+v", d)
	}
	s = payment()
	s.VaultNamespace = "other"
	if d := old.Decide(s); d.Allowed {
		t.Errorf("old policy allowed a vaultNamespace override: %+v", d)
	}
}

func TestDecideManyPaths(t *testing.T) {
	p := mustParse(t, testPolicy)
	s := payment()
	s.Namespace, s.Role = "dev", "any"
	s.Paths = nil
	for i := range 100 { // more than the on-stack buffer
		s.Paths = append(s.Paths, "kv/app/"+strings.Repeat("x", i+1))
	}
	if d := p.Decide(s); !d.Allowed || d.Rule != "dev-anything" {
		t.Errorf("Decide = %+v", d)
	}
}

func TestAllowAllAndNil(t *testing.T) {
	d := AllowAll().Decide(payment())
	if !d.Allowed || d.Rule != "" || d.Reason != reasonNoPolicy {
		t.Errorf("AllowAll().Decide = %+v", d)
	}
	if AllowAll().NeedsLabels() {
		t.Error("AllowAll needs labels")
	}
	var nilPolicy *Policy
	if d := nilPolicy.Decide(payment()); d.Allowed {
		t.Errorf("nil policy allowed: %+v", d)
	}
}

func TestNeedsLabels(t *testing.T) {
	if !mustParse(t, testPolicy).NeedsLabels() {
		t.Error("policy with podLabels: NeedsLabels false")
	}
	p := mustParse(t, "rules: [{name: a, effect: allow, paths: [x], podLabels: ' '}]")
	if p.NeedsLabels() {
		t.Error("policy without podLabels: NeedsLabels true")
	}
}

func TestParseJSON(t *testing.T) {
	p := mustParse(t, `{"rules": [{"name": "a", "effect": "allow", "namespaces": ["shop"], "paths": ["secret/data/*"]}]}`)
	d := p.Decide(Subject{Namespace: "shop", Paths: []string{"secret/data/x"}})
	if !d.Allowed || d.Rule != "a" {
		t.Errorf("Decide = %+v", d)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string // substrings of the error
	}{
		{"empty file", ``, []string{"empty document"}},
		{"no rules", `rules: []`, []string{"no rules"}},
		{"unknown top field", `rule: []`, []string{`unknown field "rule"`}},
		{"rules not a list", `rules: {a: 1}`, []string{"rules: must be a list"}},
		{"unknown rule field", `rules: [{name: a, effect: allow, paths: [x], podname: [p]}]`, []string{`rules[0] ("a")`, `unknown field "podname"`}},
		{"field case matters", `rules: [{name: a, effect: allow, paths: [x], PodNames: [p]}]`, []string{`unknown field "PodNames"`}},
		{"duplicate key", "rules:\n  - name: a\n    name: b\n    effect: allow\n    paths: [x]\n", []string{"name"}},
		{"missing name", `rules: [{effect: allow, paths: [x]}]`, []string{"rules[0]", "name: required"}},
		{"bad name", `rules: [{name: "a b", effect: allow, paths: [x]}]`, []string{"rules[0]", "name:"}},
		{"duplicate name", `rules: [{name: a, effect: deny}, {name: a, effect: deny}]`, []string{`rules[1] ("a")`, "name: duplicate of rules[0]"}},
		{"missing effect", `rules: [{name: a, paths: [x]}]`, []string{`rules[0] ("a")`, "effect: required"}},
		{"bad effect", `rules: [{name: a, effect: permit, paths: [x]}]`, []string{`rules[0] ("a")`, `effect: "permit"`}},
		{"wrong type", `rules: [{name: a, effect: allow, paths: [x], namespaces: shop}]`, []string{`rules[0] ("a")`, "namespaces"}},
		{"bad selector", `rules: [{name: a, effect: allow, paths: [x], podLabels: "app in (a"}]`, []string{`rules[0] ("a")`, "podLabels:"}},
		{"bad namespace glob", `rules: [{name: a, effect: allow, paths: [x], namespaces: ["[a"]}]`, []string{`rules[0] ("a")`, "namespaces[0]", "bad pattern"}},
		{"slash in name glob", `rules: [{name: a, effect: allow, paths: [x], serviceAccounts: [a/b]}]`, []string{"serviceAccounts[0]"}},
		{"empty pod name glob", `rules: [{name: a, effect: allow, paths: [x], podNames: [""]}]`, []string{"podNames[0]", "empty pattern"}},
		{"bad role glob", `rules: [{name: a, effect: allow, paths: [x], roles: ["r["]}]`, []string{"roles[0]"}},
		{"bad path glob", `rules: [{name: a, effect: allow, paths: [ok, "secret/**x"]}]`, []string{`rules[0] ("a")`, "paths[1]", "whole path segment"}},
		{"non-canonical path glob", `rules: [{name: a, effect: allow, paths: ["/secret/x"]}]`, []string{"paths[0]", "empty segment"}},
		{"allow without paths", `rules: [{name: ok, effect: deny}, {name: a, effect: allow, namespaces: [x]}]`, []string{`rules[1] ("a")`, "paths: required"}},
		{"rule not a mapping", `rules: [hello]`, []string{"rules[0]", "must be a mapping"}},
		{"bad vaultNamespaces glob", `rules: [{name: a, effect: allow, paths: [x], vaultNamespaces: ["team/**x"]}]`, []string{`rules[0] ("a")`, "vaultNamespaces[0]", "whole path segment"}},
		{"non-canonical vaultNamespaces glob", `rules: [{name: a, effect: allow, paths: [x], vaultNamespaces: ["team/"]}]`, []string{"vaultNamespaces[0]", "trailing /"}},
		{"empty authMounts glob", `rules: [{name: a, effect: allow, paths: [x], authMounts: [""]}]`, []string{"authMounts[0]", "empty pattern"}},
		{"authMounts not a list", `rules: [{name: a, effect: allow, paths: [x], authMounts: k8s}]`, []string{`rules[0] ("a")`, "authMounts"}},
		{"field case matters for overrides", `rules: [{name: a, effect: allow, paths: [x], authmounts: [k8s]}]`, []string{`unknown field "authmounts"`}},
		{"unknown reload signal", `rules: [{name: a, effect: allow, paths: [x], reloadSignals: [SIGHUP, SIGKILL]}]`, []string{`rules[0] ("a")`, "reloadSignals[1]", `"SIGKILL"`}},
		{"reload signal number", `rules: [{name: a, effect: allow, paths: [x], reloadSignals: ["1"]}]`, []string{"reloadSignals[0]"}},
		{"reload signal twice", `rules: [{name: a, effect: allow, paths: [x], reloadSignals: [SIGHUP, SIGHUP]}]`, []string{"reloadSignals[1]", "twice"}},
		{"reloadSignals not a list", `rules: [{name: a, effect: allow, paths: [x], reloadSignals: SIGHUP}]`, []string{`rules[0] ("a")`, "reloadSignals"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatal("Parse: no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// BenchmarkDecide measures the common case: a publish of three paths
// allowed by a rule behind several that do not apply.
func BenchmarkDecide(b *testing.B) {
	p := mustParse(b, testPolicy)
	s := payment()
	s.Namespace, s.PodName, s.Role = "shop-eu", "web-1", "shop"
	s.Paths = []string{"secret/data/shop/db", "secret/data/shop/eu/api", "secret/data/shop/cache"}
	if d := p.Decide(s); !d.Allowed || d.Rule != "shop-common" {
		b.Fatalf("Decide = %+v", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Decide(s)
	}
}

func BenchmarkDecideLabels(b *testing.B) {
	p := mustParse(b, testPolicy)
	s := payment()
	s.Paths = []string{"secret/data/paypal", "secret/data/shop/db"}
	b.ReportAllocs()
	for b.Loop() {
		p.Decide(s)
	}
}
