// Package policy is the cluster admin's access policy: which pods may mount
// which Vault paths with which roles. It is decided before any Vault call, on
// every publish, from facts kubelet supplies (plus pod labels when a rule
// needs them).
//
// A policy is an ordered list of rules:
//
//	rules:
//	  - name: payment-paypal            # required, unique; named in every decision
//	    effect: allow                   # allow | deny
//	    namespaces: ["shop"]            # globs; empty/absent = any
//	    serviceAccounts: ["payment"]    # globs on the service-account name; empty = any
//	    podNames: ["payment-*"]         # globs on the pod name; empty = any
//	    podLabels: "app=payment,tier in (web)"  # label selector; empty = any
//	    roles: ["payments"]             # globs on the Vault role; empty = any
//	    vaultNamespaces: ["team-a/**"]  # path globs on the pod's vaultNamespace override
//	    authMounts: ["kubernetes-*"]    # path globs on the pod's authMount override
//	    paths: ["secret/data/paypal", "secret/data/shop/**"]  # globs on Vault paths
//	    reloadSignals: ["SIGHUP"]       # reload signals the pod may ask for (volume attribute reload)
//
// A rule applies to a request when all its "who" matchers (namespace, service
// account, pod name, labels, role, Vault namespace, auth mount) match.
//
// vaultNamespaces and authMounts decide where a pod may send its login when
// it overrides the driver's --vault-namespace or --auth-mount (the volume
// attributes of the same names). A pod that does not override them is never
// held back by these fields. When it does:
//   - an allow rule applies only if it lists the field and a glob matches
//     the pod's value; an allow rule without the field does not apply, so a
//     policy written before these fields existed denies every override;
//   - a deny rule without the field applies whatever the pod chose, one with
//     the field only when a glob matches the pod's value.
//
// The value is matched as the pod wrote it (a trailing / of a namespace is
// dropped), even when it equals the driver's own setting. Paths are then decided one by one,
// each by the first applicable rule whose paths match it; a deny rule without
// paths matches every path. The request is allowed only when every path is
// allowed. A deny rule therefore wins as soon as it is the first match for
// any requested path, and a path no rule matches denies the request.
//
// Why per path rather than "one allow rule must cover every path": a pod can
// always split its secrets over several volumes, so requiring one rule to
// cover a whole volume adds no protection, only surprise (two allow rules
// that each grant one of the paths would deny the volume asking for both).
// Whenever one rule covers everything both readings agree.
//
// reloadSignals decides the pod's reload attribute (a signal the driver
// sends to one of the pod's containers after a refresh changed its files).
// It is not a who-matcher for allow rules; it is checked together with the
// paths:
//   - a pod that asks for no signal is never held back by it;
//   - for a pod that asks for one, the allow rule that decides a path must
//     list that signal, or the request is denied by that rule (named in the
//     denial, so the admin sees which rule to extend). Put a rule that grants
//     a signal before a broader one that does not;
//   - a deny rule with reloadSignals applies only to pods asking for one of
//     the signals it lists (with its paths, or every path without); a deny
//     rule without the field applies whatever the pod asks for.
//
// A request with no paths is denied. Requested paths must be canonical (no
// leading or trailing slash, no empty, "." or ".." segments), otherwise the
// request is denied before any rule is looked at, so that
// `secret/data/shop/**` cannot be satisfied by secret/data/shop/../../sys/x.
//
// # Patterns
//
//   - Patterns are case-sensitive and must match the whole value.
//   - Within one path segment the path.Match syntax applies: `*` matches any
//     run of characters except `/`, `?` one such character, `[a-z]` a class,
//     `\` escapes the next character.
//   - `**` as a whole segment matches across segments: `a/**/b` matches a/b,
//     a/x/b and a/x/y/b. A trailing `/**` matches everything below its prefix
//     but not the prefix itself: `secret/data/shop/**` matches
//     secret/data/shop/db, not secret/data/shop (the gitignore rule; in KV v2
//     a path can be a secret and a folder at once, and granting the folder
//     should not grant the secret of the same name). A lone `**` matches any path.
//   - `**` inside a longer segment (`db**`) is an error: it would act as `*`,
//     which is not what its author meant.
//   - Name patterns (namespaces, service accounts, pod names, roles) are a
//     single segment: no `/`, and they never match an empty value, so a
//     request without pod information does not pass a `*`.
//   - podLabels is a Kubernetes label selector (labels.Parse syntax).
package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"vaultcsi.dev/driver/driver/ops"
)

// Subject is one publish request as the policy sees it.
type Subject struct {
	Namespace, ServiceAccount, PodName, PodUID, Role string
	// VaultNamespace and AuthMount are the pod's overrides of the driver's
	// Vault namespace and auth mount; "" when the pod does not set them.
	VaultNamespace, AuthMount string
	// Labels are the pod's labels; only needed when NeedsLabels is true.
	Labels map[string]string
	// Paths are the Vault paths the volume reads, in canonical form.
	Paths []string
	// ReloadSignal is the signal the pod asks for after a rotation ("": none).
	ReloadSignal string
}

// Decision is the outcome of Decide. Reason is human text for errors and
// Events; Rule names the deciding rule ("" when none did). When several
// allow rules together grant a request, Rule lists them joined by commas.
type Decision struct {
	Allowed bool
	Rule    string
	Reason  string
}

// Policy is a parsed, immutable access policy; safe for concurrent use.
type Policy struct {
	rules       []rule
	allowAll    bool
	needsLabels bool
}

type rule struct {
	name            string
	deny            bool
	namespaces      []nameGlob
	serviceAccounts []nameGlob
	podNames        []nameGlob
	roles           []nameGlob
	vaultNamespaces []pathGlob // overrides an allow rule admits; a deny rule's filter
	authMounts      []pathGlob
	selector        labels.Selector // nil: any labels
	paths           []pathGlob
	reloadSignals   []string // signals an allow rule grants; a deny rule's filter
	reason          string   // precomputed so that Decide does not format
}

const (
	reasonNoPolicy = "no access policy configured"
	reasonNoMatch  = "no rule matched"
)

// AllowAll is the policy used when no policy file is configured: every
// request is allowed, and the decision says why.
func AllowAll() *Policy { return &Policy{allowAll: true} }

// NeedsLabels reports whether some rule selects on pod labels; the driver
// asks the API server for a pod's labels only then.
func (p *Policy) NeedsLabels() bool { return p != nil && p.needsLabels }

// Len is the number of rules (0 for AllowAll); for logs.
func (p *Policy) Len() int {
	if p == nil {
		return 0
	}
	return len(p.rules)
}

// Decide evaluates s. It does not allocate unless it denies a request or
// joins several rule names. A nil policy denies: failing closed is safer
// than guessing what an unwired caller meant.
func (p *Policy) Decide(s Subject) Decision {
	switch {
	case p == nil:
		return Decision{Reason: "no access policy loaded"}
	case p.allowAll:
		return Decision{Allowed: true, Reason: reasonNoPolicy}
	case len(s.Paths) == 0:
		return Decision{Reason: "request names no Vault path"}
	}
	for _, path := range s.Paths {
		if err := checkPathForm(path); err != nil {
			return Decision{Reason: fmt.Sprintf("Vault path %q is not canonical: %v", path, err)}
		}
	}
	s.VaultNamespace = strings.TrimSuffix(s.VaultNamespace, "/")
	for _, o := range []struct{ field, v string }{{fieldVaultNamespace, s.VaultNamespace}, {fieldAuthMount, s.AuthMount}} {
		if o.v == "" {
			continue
		}
		if err := checkPathForm(o.v); err != nil {
			return Decision{Reason: fmt.Sprintf("%s %q is not canonical: %v", o.field, o.v, err)}
		}
	}

	// done[i] is set once path i is allowed; a deny ends the evaluation.
	var buf [32]bool
	var done []bool
	if len(s.Paths) <= len(buf) {
		done = buf[:len(s.Paths)]
	} else {
		done = make([]bool, len(s.Paths))
	}
	left := len(s.Paths)
	var byBuf [4]int
	allowedBy := byBuf[:0] // rule indexes that allowed at least one path
	ls := labels.Set(s.Labels)

	for i := range p.rules {
		r := &p.rules[i]
		if !r.appliesTo(&s, ls) {
			continue
		}
		if r.deny && len(r.paths) == 0 {
			return Decision{Rule: r.name, Reason: r.reason}
		}
		hit := false
		for j, path := range s.Paths {
			if done[j] || !matchPaths(r.paths, path) {
				continue
			}
			if r.deny {
				return Decision{Rule: r.name, Reason: fmt.Sprintf("%s for path %q", r.reason, path)}
			}
			if s.ReloadSignal != "" && !slices.Contains(r.reloadSignals, s.ReloadSignal) {
				return Decision{Rule: r.name, Reason: fmt.Sprintf("rule %q allows path %q but not reload signal %s (not in its %s)",
					r.name, path, s.ReloadSignal, fieldReloadSignals)}
			}
			done[j], hit = true, true
			left--
		}
		if hit {
			allowedBy = append(allowedBy, i)
		}
		if left == 0 {
			return p.allowed(allowedBy)
		}
	}
	for j, path := range s.Paths {
		if !done[j] {
			return Decision{Reason: fmt.Sprintf("%s for path %q%s", reasonNoMatch, path, overrideNote(&s))}
		}
	}
	return Decision{Reason: reasonNoMatch} // not reached: left > 0 means a path is pending
}

func (p *Policy) allowed(by []int) Decision {
	if len(by) == 1 {
		r := &p.rules[by[0]]
		return Decision{Allowed: true, Rule: r.name, Reason: r.reason}
	}
	names := make([]string, len(by))
	for i, idx := range by {
		names[i] = p.rules[idx].name
	}
	return Decision{
		Allowed: true,
		Rule:    strings.Join(names, ","),
		Reason:  fmt.Sprintf("allowed by rules %q", names),
	}
}

// appliesTo checks the who-part of a rule, cheapest matchers first.
func (r *rule) appliesTo(s *Subject, ls labels.Set) bool {
	return matchNames(r.namespaces, s.Namespace) &&
		matchNames(r.serviceAccounts, s.ServiceAccount) &&
		matchNames(r.roles, s.Role) &&
		matchNames(r.podNames, s.PodName) &&
		r.matchOverride(r.vaultNamespaces, s.VaultNamespace) &&
		r.matchOverride(r.authMounts, s.AuthMount) &&
		(!r.deny || len(r.reloadSignals) == 0 || slices.Contains(r.reloadSignals, s.ReloadSignal)) &&
		(r.selector == nil || r.selector.Matches(ls))
}

// matchOverride applies a vaultNamespaces or authMounts matcher to a pod's
// override v ("" = none). A rule without the field applies to pods without
// an override, and (deny rules only) to any override. A rule with the field
// applies to the overrides it lists, and (allow rules only) to pods without
// an override: a deny rule naming authMounts is about those mounts only.
func (r *rule) matchOverride(gs []pathGlob, v string) bool {
	switch {
	case len(gs) == 0:
		return v == "" || r.deny
	case v == "":
		return !r.deny
	}
	return matchPaths(gs, v)
}

// Names of the override fields, as the pod writes them and as the policy
// file lists them.
const (
	fieldVaultNamespace = "vaultNamespace"
	fieldAuthMount      = "authMount"
	fieldReloadSignals  = "reloadSignals"
)

// overrideNote explains a no-match for a pod that overrides its login
// target: only allow rules that list the override can admit it.
func overrideNote(s *Subject) string {
	var parts []string
	if s.VaultNamespace != "" {
		parts = append(parts, fmt.Sprintf("%s %q (no allow rule lists it in vaultNamespaces)", fieldVaultNamespace, s.VaultNamespace))
	}
	if s.AuthMount != "" {
		parts = append(parts, fmt.Sprintf("%s %q (no allow rule lists it in authMounts)", fieldAuthMount, s.AuthMount))
	}
	if len(parts) == 0 {
		return ""
	}
	return "; the pod overrides " + strings.Join(parts, " and ")
}

// ruleSpec is the file format of one rule.
type ruleSpec struct {
	Name            string   `json:"name"`
	Effect          string   `json:"effect"`
	Namespaces      []string `json:"namespaces"`
	ServiceAccounts []string `json:"serviceAccounts"`
	PodNames        []string `json:"podNames"`
	PodLabels       string   `json:"podLabels"`
	Roles           []string `json:"roles"`
	VaultNamespaces []string `json:"vaultNamespaces"`
	AuthMounts      []string `json:"authMounts"`
	Paths           []string `json:"paths"`
	ReloadSignals   []string `json:"reloadSignals"`
}

// Field names are checked case-sensitively before decoding: encoding/json
// would otherwise accept "podnames" for "podNames" without a word.
var (
	topFields  = []string{"rules"}
	ruleFields = []string{"name", "effect", "namespaces", "serviceAccounts", "podNames", "podLabels", "roles", "vaultNamespaces", "authMounts", "paths", fieldReloadSignals}
)

// Rule names end up in Decisions, audit lines, Events and a metric label:
// keep them short and plain. No comma, so that joined names stay readable.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Parse reads a policy from YAML or JSON. It is strict: unknown or duplicate
// fields, duplicate rule names, a bad effect, selector or glob, an allow
// rule without paths and an empty rule list are errors that name the rule
// and the field.
func Parse(data []byte) (*Policy, error) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	top, err := strictObject(j, topFields)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	var raws []json.RawMessage
	if r, ok := top["rules"]; ok {
		if err := json.Unmarshal(r, &raws); err != nil {
			return nil, fmt.Errorf("policy: rules: must be a list: %w", err)
		}
	}
	if len(raws) == 0 {
		// An empty file denies everything; far more often it is a mistake
		// (wrong ConfigMap key, truncated write) than an intent. A deny-all
		// policy is one rule: {name: deny-all, effect: deny}.
		return nil, errors.New("policy: rules: no rules")
	}

	p := &Policy{rules: make([]rule, 0, len(raws))}
	seen := make(map[string]int, len(raws))
	for i, raw := range raws {
		r, err := parseRule(raw)
		if err != nil {
			return nil, fmt.Errorf("policy: rules[%d]%s: %w", i, ruleLabel(raw), err)
		}
		if prev, dup := seen[r.name]; dup {
			return nil, fmt.Errorf("policy: rules[%d] (%q): name: duplicate of rules[%d]", i, r.name, prev)
		}
		seen[r.name] = i
		p.needsLabels = p.needsLabels || r.selector != nil
		p.rules = append(p.rules, r)
	}
	return p, nil
}

func parseRule(raw json.RawMessage) (rule, error) {
	if _, err := strictObject(raw, ruleFields); err != nil {
		return rule{}, err
	}
	var sp ruleSpec
	if err := json.Unmarshal(raw, &sp); err != nil {
		return rule{}, err
	}
	if !nameRE.MatchString(sp.Name) {
		if sp.Name == "" {
			return rule{}, errors.New("name: required")
		}
		return rule{}, fmt.Errorf("name: %q must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", sp.Name)
	}
	r := rule{name: sp.Name}
	switch sp.Effect {
	case "allow":
		r.reason = fmt.Sprintf("allowed by rule %q", sp.Name)
	case "deny":
		r.deny = true
		r.reason = fmt.Sprintf("denied by rule %q", sp.Name)
	case "":
		return rule{}, errors.New("effect: required (allow or deny)")
	default:
		return rule{}, fmt.Errorf("effect: %q is not allow or deny", sp.Effect)
	}
	var err error
	if r.namespaces, err = compileNames("namespaces", sp.Namespaces); err != nil {
		return rule{}, err
	}
	if r.serviceAccounts, err = compileNames("serviceAccounts", sp.ServiceAccounts); err != nil {
		return rule{}, err
	}
	if r.podNames, err = compileNames("podNames", sp.PodNames); err != nil {
		return rule{}, err
	}
	if r.roles, err = compileNames("roles", sp.Roles); err != nil {
		return rule{}, err
	}
	if r.vaultNamespaces, err = compilePaths("vaultNamespaces", sp.VaultNamespaces); err != nil {
		return rule{}, err
	}
	if r.authMounts, err = compilePaths("authMounts", sp.AuthMounts); err != nil {
		return rule{}, err
	}
	if strings.TrimSpace(sp.PodLabels) != "" {
		sel, err := labels.Parse(sp.PodLabels)
		if err != nil {
			return rule{}, fmt.Errorf("podLabels: %w", err)
		}
		r.selector = sel
	}
	for i, g := range sp.Paths {
		pg, err := compilePath(g)
		if err != nil {
			return rule{}, fmt.Errorf("paths[%d]: %w", i, err)
		}
		r.paths = append(r.paths, pg)
	}
	if !r.deny && len(r.paths) == 0 {
		return rule{}, errors.New("paths: required for an allow rule")
	}
	for i, sig := range sp.ReloadSignals {
		if !ops.ReloadSignal(sig).Valid() {
			return rule{}, fmt.Errorf("%s[%d]: %q is not one of %v", fieldReloadSignals, i, sig, ops.ReloadSignals)
		}
		if slices.Contains(r.reloadSignals, sig) {
			return rule{}, fmt.Errorf("%s[%d]: %q is listed twice", fieldReloadSignals, i, sig)
		}
		r.reloadSignals = append(r.reloadSignals, sig)
	}
	return r, nil
}

func compileNames(field string, pats []string) ([]nameGlob, error) {
	var gs []nameGlob
	for i, pat := range pats {
		g, err := compileName(pat)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		gs = append(gs, g)
	}
	return gs, nil
}

// compilePaths compiles path globs for the override fields.
func compilePaths(field string, pats []string) ([]pathGlob, error) {
	var gs []pathGlob
	for i, pat := range pats {
		g, err := compilePath(pat)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		gs = append(gs, g)
	}
	return gs, nil
}

// strictObject decodes a JSON object and rejects keys outside known
// (case-sensitive). Duplicate keys were already rejected by YAMLToJSONStrict.
func strictObject(j []byte, known []string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, fmt.Errorf("must be a mapping: %w", err)
	}
	if m == nil {
		return nil, errors.New("empty document")
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys) // report the same field every time
	for _, k := range keys {
		if !slices.Contains(known, k) {
			return nil, fmt.Errorf("unknown field %q (known: %s)", k, strings.Join(known, ", "))
		}
	}
	return m, nil
}

// ruleLabel names a rule in an error when its name can be read.
func ruleLabel(raw json.RawMessage) string {
	var n struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(raw, &n) == nil && n.Name != "" {
		return fmt.Sprintf(" (%q)", n.Name)
	}
	return ""
}
