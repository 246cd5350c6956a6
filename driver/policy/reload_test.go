package policy

import (
	"strings"
	"testing"
)

// reloadPolicy grants SIGHUP to the shop's web pods, SIGTERM to nobody in
// prod, and leaves the rest of the shop without reload signals.
const reloadPolicy = `
rules:
  - name: no-restarts-in-prod
    effect: deny
    namespaces: ["prod"]
    reloadSignals: ["SIGTERM"]
  - name: web-may-reload
    effect: allow
    namespaces: ["shop", "prod"]
    podNames: ["web-*"]
    paths: ["secret/data/shop/**"]
    reloadSignals: ["SIGHUP", "SIGTERM"]
  - name: shop-common
    effect: allow
    namespaces: ["shop"]
    paths: ["secret/data/shop/**", "secret/data/common"]
`

func TestDecideReloadSignals(t *testing.T) {
	p := mustParse(t, reloadPolicy)
	web := func(sig string, paths ...string) Subject {
		return Subject{Namespace: "shop", ServiceAccount: "web", PodName: "web-1", Role: "shop", Paths: paths, ReloadSignal: sig}
	}
	tests := []struct {
		name    string
		s       Subject
		allowed bool
		rule    string
		reason  string // substring
	}{
		{"no signal: the field holds nothing back", web("", "secret/data/shop/db"), true, "web-may-reload", ""},
		{"a granted signal", web("SIGHUP", "secret/data/shop/db"), true, "web-may-reload", ""},
		{"a signal the deciding rule does not list", web("SIGUSR1", "secret/data/shop/db"), false, "web-may-reload",
			`rule "web-may-reload" allows path "secret/data/shop/db" but not reload signal SIGUSR1`},
		{"a path decided by a rule without reloadSignals", web("SIGHUP", "secret/data/shop/db", "secret/data/common"), false, "shop-common",
			`rule "shop-common" allows path "secret/data/common" but not reload signal SIGHUP`},
		{"another pod: the broader rule decides and grants no signal", func() Subject {
			s := web("SIGHUP", "secret/data/shop/db")
			s.PodName = "batch-1"
			return s
		}(), false, "shop-common", "not reload signal SIGHUP"},
		{"another pod without a signal", func() Subject {
			s := web("", "secret/data/shop/db")
			s.PodName = "batch-1"
			return s
		}(), true, "shop-common", ""},
		{"a deny rule with reloadSignals: a listed signal", func() Subject {
			s := web("SIGTERM", "secret/data/shop/db")
			s.Namespace = "prod"
			return s
		}(), false, "no-restarts-in-prod", `denied by rule "no-restarts-in-prod"`},
		{"a deny rule with reloadSignals: another signal", func() Subject {
			s := web("SIGHUP", "secret/data/shop/db")
			s.Namespace = "prod"
			return s
		}(), true, "web-may-reload", ""},
		{"a deny rule with reloadSignals: no signal", func() Subject {
			s := web("", "secret/data/shop/db")
			s.Namespace = "prod"
			return s
		}(), true, "web-may-reload", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(tt.s)
			if d.Allowed != tt.allowed || d.Rule != tt.rule || !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("Decide = %+v, want allowed=%v rule=%q reason containing %q", d, tt.allowed, tt.rule, tt.reason)
			}
		})
	}
}

// A deny rule without reloadSignals applies whatever the pod asks for,
// and without a policy file a signal is not the policy's business.
func TestDecideReloadSignalsDenyWithoutField(t *testing.T) {
	p := mustParse(t, "rules:\n  - {name: deny-all, effect: deny}\n")
	if d := p.Decide(Subject{Namespace: "a", PodName: "b", Role: "r", Paths: []string{"x"}, ReloadSignal: "SIGHUP"}); d.Allowed || d.Rule != "deny-all" {
		t.Errorf("Decide = %+v, want denied by deny-all", d)
	}
	if d := AllowAll().Decide(Subject{Paths: []string{"x"}, ReloadSignal: "SIGTERM"}); !d.Allowed {
		t.Errorf("AllowAll().Decide = %+v, want allowed", d)
	}
}
