package attributes

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider"
)

const audience = "vault"

// basePod is the identity baseContext names and testToken carries.
var basePod = provider.Identity{Namespace: "shop", PodName: "payment-1",
	PodUID: "0e8a1c3a-8d7e-4c61-9a51-1d3c4f6f2b10", ServiceAccount: "payment"}

// testToken is distinctive (its signature part) so that a leak into an
// error message shows.
var testToken = podToken(basePod, audience, "TOKEN-MUST-NOT-LEAK")

func tokensJSON(aud, tok, exp string) string {
	m := map[string]map[string]string{aud: {"token": tok}}
	if exp != "" {
		m[aud]["expirationTimestamp"] = exp
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// baseContext is a minimal valid volume context as kubelet sends it.
func baseContext() map[string]string {
	return map[string]string{
		AttrRole:          "payments",
		AttrSecrets:       "- file: password\n  path: secret/data/db\n  key: password\n",
		KeyPodName:        basePod.PodName,
		KeyPodNamespace:   basePod.Namespace,
		KeyPodUID:         basePod.PodUID,
		KeyServiceAccount: basePod.ServiceAccount,
		KeyEphemeral:      "true",
		KeyTokens:         tokensJSON(audience, testToken, "2030-01-02T03:04:05Z"),
	}
}

// entries renders one secrets entry per file name; names are JSON-quoted so
// that NULs and other bytes reach Parse unchanged.
func entries(files ...string) string {
	var b strings.Builder
	for _, f := range files {
		q, _ := json.Marshal(f)
		fmt.Fprintf(&b, "- file: %s\n  path: secret/data/x\n", q)
	}
	return b.String()
}

func TestParseValid(t *testing.T) {
	ctx := baseContext()
	ctx[AttrSecrets] = `
- file: db/password
  path: secret/data/db
  key: password
  mode: "0400"
- file: db-creds.json
  path: database/creds/payments
  mode: 0444
- file: tls/cert
  path: pki_int/issue/web
  key: certificate
  args:
    common_name: web.shop.svc
    ttl: 24h
`
	ctx[AttrAuthMount] = "kubernetes-prod"
	ctx[AttrVaultNamespace] = "team-a/"
	ctx[AttrRotationPeriod] = "5m"

	v, err := Parse(ctx, nil, audience)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Volume{
		Request: provider.Request{
			Role:           "payments",
			AuthMount:      "kubernetes-prod",
			VaultNamespace: "team-a/",
			JWT:            testToken,
			Pod: provider.Identity{
				Namespace: "shop", PodName: "payment-1",
				PodUID: "0e8a1c3a-8d7e-4c61-9a51-1d3c4f6f2b10", ServiceAccount: "payment",
			},
			Secrets: []provider.SecretSpec{
				{File: "db/password", Path: "secret/data/db", Key: "password", Mode: 0o400},
				{File: "db-creds.json", Path: "database/creds/payments", Mode: 0o444, Index: 1},
				{File: "tls/cert", Path: "pki_int/issue/web", Key: "certificate", Index: 2,
					Args: map[string]string{"common_name": "web.shop.svc", "ttl": "24h"}},
			},
		},
		RotationPeriod: 5 * time.Minute,
		TokenExpiry:    time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("Parse =\n%+v\nwant\n%+v", v, want)
	}
}

func TestParseMinimalDefaults(t *testing.T) {
	ctx := baseContext()
	ctx[KeyTokens] = tokensJSON(audience, testToken, "") // expiry is optional
	v, err := Parse(ctx, nil, audience)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	// Unset optional attributes stay zero so the driver applies its defaults.
	if v.RotationPeriod != 0 || !v.TokenExpiry.IsZero() || v.Request.AuthMount != "" ||
		v.Request.VaultNamespace != "" || v.Request.Secrets[0].Mode != 0 || v.Request.Secrets[0].Args != nil {
		t.Errorf("defaults not zero: %+v", v)
	}
}

func TestParseTokenSource(t *testing.T) {
	fromSecrets := podToken(basePod, audience, "token-from-request-secrets")
	tests := []struct {
		name    string
		ctxTok  bool
		secrets map[string]string
		want    string
	}{
		{"volume context only", true, nil, testToken},
		{"secrets map wins over volume context", true,
			map[string]string{KeyTokens: tokensJSON(audience, fromSecrets, "")}, fromSecrets},
		{"secrets map only (serviceAccountTokenInSecrets)", false,
			map[string]string{KeyTokens: tokensJSON(audience, fromSecrets, "")}, fromSecrets},
		{"unrelated secrets keys fall back to volume context", true,
			map[string]string{"other": "x"}, testToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := baseContext()
			if !tt.ctxTok {
				delete(ctx, KeyTokens)
			}
			v, err := Parse(ctx, tt.secrets, audience)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if v.Request.JWT != tt.want {
				t.Errorf("JWT = %q, want %q", v.Request.JWT, tt.want)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	// A quoted octal string, a YAML 1.1 octal number and its decimal value
	// must all mean 0400.
	for _, mode := range []string{`"0400"`, `"400"`, `0400`, `256`} {
		t.Run(mode, func(t *testing.T) {
			ctx := baseContext()
			ctx[AttrSecrets] = "- file: a\n  path: secret/data/a\n  mode: " + mode + "\n"
			v, err := Parse(ctx, nil, audience)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := v.Request.Secrets[0].Mode; got != 0o400 {
				t.Errorf("mode = %#o, want 0400", got)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	withSecrets := func(yaml string) func(map[string]string, map[string]string) {
		return func(c, _ map[string]string) { c[AttrSecrets] = yaml }
	}
	// second puts a bad entry after a good one, so the index must be 1.
	second := func(entry string) func(map[string]string, map[string]string) {
		return withSecrets("- file: ok\n  path: secret/data/ok\n" + entry)
	}
	set := func(k, v string) func(map[string]string, map[string]string) {
		return func(c, _ map[string]string) { c[k] = v }
	}
	del := func(k string) func(map[string]string, map[string]string) {
		return func(c, _ map[string]string) { delete(c, k) }
	}
	var many string
	for i := 0; i <= MaxFiles; i++ {
		many += fmt.Sprintf("- file: f%d\n  path: secret/data/x\n", i)
	}
	long := strings.Repeat("x", MaxComponentLen+1)

	tests := []struct {
		name   string
		mutate func(ctx, secrets map[string]string)
		field  string
	}{
		// File names (CVE-2020-8567 class).
		{"file absolute", withSecrets(entries("ok", "/etc/passwd")), "secrets[1].file"},
		{"file is ..", withSecrets(entries("ok", "..")), "secrets[1].file"},
		{"file contains ..", withSecrets(entries("ok", "a/../../b")), "secrets[1].file"},
		{"file ends in ..", withSecrets(entries("ok", "a/..")), "secrets[1].file"},
		{"file empty", withSecrets(entries("ok", "")), "secrets[1].file"},
		{"file missing", second("- path: secret/data/x\n"), "secrets[1].file"},
		{"file has NUL", withSecrets(entries("ok", "a\x00b")), "secrets[1].file"},
		{"file a//b", withSecrets(entries("ok", "a//b")), "secrets[1].file"},
		{"file ./a", withSecrets(entries("ok", "./a")), "secrets[1].file"},
		{"file a/", withSecrets(entries("ok", "a/")), "secrets[1].file"},
		{"file a/./b", withSecrets(entries("ok", "a/./b")), "secrets[1].file"},
		// "." is the volume root itself: the writer cannot create it.
		{"file is .", withSecrets(entries("ok", ".")), "secrets[1].file"},
		{"file component over 255 bytes", withSecrets(entries("ok", long)), "secrets[1].file"},
		{"file inner component over 255 bytes", withSecrets(entries("ok", "d/"+long)), "secrets[1].file"},
		{"file over MaxPathLen", withSecrets(entries("ok", strings.Repeat("d/", MaxPathLen/2)+"f")), "secrets[1].file"},
		{"file ..data", withSecrets(entries("ok", "..data")), "secrets[1].file"},
		{"file ..foo/x", withSecrets(entries("ok", "..foo/x")), "secrets[1].file"},
		{"file ..data_tmp", withSecrets(entries("ok", "..data_tmp")), "secrets[1].file"},
		{"duplicate file", withSecrets(entries("a", "a")), "secrets[1].file"},
		{"file then its subfile", withSecrets(entries("a", "a/b")), "secrets[1].file"},
		{"subfile then its dir as file", withSecrets(entries("a/b", "a")), "secrets[1].file"},
		{"deep subfile then ancestor as file", withSecrets(entries("a/b/c", "a")), "secrets[1].file"},
		{"file then deep subfile", withSecrets(entries("a", "a/b/c")), "secrets[1].file"},

		// Shape and size of the secrets attribute.
		{"more than MaxFiles entries", withSecrets(many), "secrets"},
		{"secrets YAML over 64 KiB", withSecrets(entries("a") + "#" + strings.Repeat("x", MaxSecretsYAML) + "\n"), "secrets"},
		{"unknown YAML field", second("- path: secret/data/x\n  file: b\n  owner: root\n"), "secrets"},
		{"malformed YAML", withSecrets("- file: [a\n  path: x"), "secrets"},
		{"not a list", withSecrets("file: a\npath: secret/data/a\n"), "secrets"},
		{"empty list", withSecrets("[]"), "secrets"},
		{"missing secrets", del(AttrSecrets), "secrets"},
		{"blank secrets", withSecrets(" \n\t"), "secrets"},

		// Other attributes.
		{"unknown attribute", set("owner", "root"), "volumeAttributes"},
		{"missing role", del(AttrRole), "role"},
		{"role with slash", set(AttrRole, "a/b"), "role"},
		{"missing pod name", del(KeyPodName), KeyPodName},
		{"missing pod namespace", del(KeyPodNamespace), KeyPodNamespace},
		{"missing pod uid", del(KeyPodUID), KeyPodUID},
		{"missing service account", del(KeyServiceAccount), KeyServiceAccount},
		{"pod name with control char", set(KeyPodName, "a\nb"), KeyPodName},
		{"ephemeral false", set(KeyEphemeral, "false"), KeyEphemeral},
		{"ephemeral missing", del(KeyEphemeral), KeyEphemeral},
		{"authMount absolute", set(AttrAuthMount, "/kubernetes"), AttrAuthMount},
		{"vaultNamespace with ..", set(AttrVaultNamespace, "a/../b"), AttrVaultNamespace},
		{"rotationPeriod not a duration", set(AttrRotationPeriod, "5"), AttrRotationPeriod},
		{"rotationPeriod words", set(AttrRotationPeriod, "often"), AttrRotationPeriod},
		{"rotationPeriod negative", set(AttrRotationPeriod, "-1m"), AttrRotationPeriod},
		{"rotationPeriod zero", set(AttrRotationPeriod, "0s"), AttrRotationPeriod},
		{"rotationPeriod above the bound", set(AttrRotationPeriod, "721h"), AttrRotationPeriod},
		{"rotationPeriod that overflowed the due time", set(AttrRotationPeriod, "2562047h"), AttrRotationPeriod},
		{"rotationPeriod at Duration's limit", set(AttrRotationPeriod, "2562047h47m16.854775807s"), AttrRotationPeriod},

		// Token; each variant carries the token so a leak would show.
		{"missing token", del(KeyTokens), KeyTokens},
		{"empty token JSON", set(KeyTokens, ""), KeyTokens},
		{"token JSON malformed", set(KeyTokens, `{"vault":{"token":"`+testToken+`"`), KeyTokens},
		{"token JSON wrong type", set(KeyTokens, `["`+testToken+`"]`), KeyTokens},
		{"no token for audience", set(KeyTokens, tokensJSON("other", testToken, "")), KeyTokens},
		{"empty token for audience", set(KeyTokens, tokensJSON(audience, "", "")), KeyTokens},
		{"bad expirationTimestamp", set(KeyTokens, tokensJSON(audience, testToken, "tomorrow")), KeyTokens},
		{"malformed token in secrets map wins", func(_, s map[string]string) {
			s[KeyTokens] = `{"vault":` + testToken
		}, KeyTokens},

		// Mode: read bits only.
		{"mode with write bit", second("- file: b\n  path: secret/data/x\n  mode: 0644\n"), "secrets[1].mode"},
		{"mode string with write bit", second("- file: b\n  path: secret/data/x\n  mode: \"0600\"\n"), "secrets[1].mode"},
		{"mode with exec bit", second("- file: b\n  path: secret/data/x\n  mode: 0555\n"), "secrets[1].mode"},
		{"mode setuid", second("- file: b\n  path: secret/data/x\n  mode: \"4444\"\n"), "secrets[1].mode"},
		{"mode zero", second("- file: b\n  path: secret/data/x\n  mode: 0\n"), "secrets[1].mode"},
		// A mode that does not decode fails the YAML decoding as a whole.
		{"mode non-octal string", second("- file: b\n  path: secret/data/x\n  mode: \"0489\"\n"), "secrets"},
		{"mode word", second("- file: b\n  path: secret/data/x\n  mode: \"ro\"\n"), "secrets"},
		{"mode negative", second("- file: b\n  path: secret/data/x\n  mode: -1\n"), "secrets"},

		// Key and args.
		{"empty key", second("- file: b\n  path: secret/data/x\n  key: \"\"\n"), "secrets[1].key"},
		{"args on a read path", second("- file: b\n  path: secret/data/x\n  args: {common_name: a}\n"), "secrets[1].args"},

		// Vault paths.
		{"path absolute", second("- file: b\n  path: /secret/data/x\n"), "secrets[1].path"},
		{"path with ..", second("- file: b\n  path: secret/../sys/x\n"), "secrets[1].path"},
		{"path with .", second("- file: b\n  path: secret/./x\n"), "secrets[1].path"},
		{"path with ?", second("- file: b\n  path: \"secret/data/x?version=1\"\n"), "secrets[1].path"},
		{"path with #", second("- file: b\n  path: \"secret/data/x#y\"\n"), "secrets[1].path"},
		{"path with %", second("- file: b\n  path: \"secret/data/%2e%2e\"\n"), "secrets[1].path"},
		{"path with space", second("- file: b\n  path: \"secret/data/x y\"\n"), "secrets[1].path"},
		{"path trailing slash", second("- file: b\n  path: secret/data/\n"), "secrets[1].path"},
		{"path empty", second("- file: b\n  path: \"\"\n"), "secrets[1].path"},
		{"path missing", second("- file: b\n"), "secrets[1].path"},
		{"path sys/", second("- file: b\n  path: sys/mounts\n"), "secrets[1].path"},
		{"path auth/", second("- file: b\n  path: auth/token/create\n"), "secrets[1].path"},
		{"path identity/", second("- file: b\n  path: identity/oidc/token/x\n"), "secrets[1].path"},
		{"path bare sys", second("- file: b\n  path: sys\n"), "secrets[1].path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, secrets := baseContext(), map[string]string{}
			tt.mutate(ctx, secrets)
			v, err := Parse(ctx, secrets, audience)
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", v.Request.Secrets)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T %v is not a *FieldError", err, err)
			}
			if fe.Field != tt.field {
				t.Errorf("Field = %q, want %q (error: %v)", fe.Field, tt.field, err)
			}
			if fe.Msg == "" {
				t.Error("empty message")
			}
			if strings.Contains(err.Error(), testToken) {
				t.Errorf("error leaks the token: %v", err)
			}
			if strings.ContainsAny(err.Error(), "\n\x00") {
				t.Errorf("error is not one printable line: %q", err)
			}
		})
	}
}

func TestParseMaxFilesAccepted(t *testing.T) {
	// The limit is inclusive: exactly MaxFiles entries are fine.
	names := make([]string, MaxFiles)
	for i := range names {
		names[i] = fmt.Sprintf("f%d", i)
	}
	ctx := baseContext()
	ctx[AttrSecrets] = entries(names...)
	v, err := Parse(ctx, nil, audience)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(v.Request.Secrets) != MaxFiles {
		t.Errorf("got %d secrets, want %d", len(v.Request.Secrets), MaxFiles)
	}
}

// The rotation period's upper bound is inclusive.
func TestRotationPeriodAtBound(t *testing.T) {
	ctx := baseContext()
	ctx[AttrRotationPeriod] = "720h"
	v, err := Parse(ctx, nil, audience)
	if err != nil || v.RotationPeriod != MaxRotationPeriod {
		t.Fatalf("Parse(720h) = %v, %v", v, err)
	}
}

func TestCheckFileName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"password", true},
		{"db/password", true},
		{".hidden", true},
		{"a/..b", true}, // only the first component is reserved
		{"a/..data", true},
		{"a..b", true},
		{strings.Repeat("x", MaxComponentLen), true},
		{"", false},
		{".", false},
		{"..", false},
		{"../a", false},
		{"a/../b", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{"./a", false},
		{"a\x00", false},
		{"..data", false},
		{"..2026_01_01_00_00_00.123", false},
		{"...", false},
		{strings.Repeat("x", MaxComponentLen+1), false},
	}
	for _, tt := range tests {
		err := CheckFileName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("CheckFileName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// The parse-time check is only the shape <mount>/issue/<role>: a mount may
// have any name, and Vault decides whether the path really is a PKI issuing
// endpoint before any write (provider checkIssuing, tested on a real Vault).
func TestIsIssuingPath(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"pki/issue/web", true},
		{"pki_int/issue/web", true},
		{"team/pki/issue/web", true},
		{"certs/issue/web", true},              // a PKI mount with any name
		{"pki/issuer/default/issue/web", true}, // issuer-scoped issuing
		{"kv/issue/foo", true},                 // shape only: Vault refuses it later
		{"pki/issue", false},
		{"issue/web", false},
		{"pki/sign/web", false},
		{"pki/issue/web/extra", false},
		{"secret/data/db", false},
		{"database/creds/payments", false},
		{"pki/issue/", false},
	}
	for _, tt := range tests {
		if got := IsIssuingPath(tt.path); got != tt.want {
			t.Errorf("IsIssuingPath(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestFieldErrorMessage(t *testing.T) {
	err := error(&FieldError{Field: "secrets[3].file", Msg: "required"})
	if got, want := err.Error(), "secrets[3].file: required"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// FuzzParse feeds arbitrary secrets YAML, and arbitrary file names inside
// well-formed YAML, through Parse and checks the invariants the writer relies
// on.
func FuzzParse(f *testing.F) {
	f.Add(baseContext()[AttrSecrets], "password")
	f.Add("- file: a\n  path: secret/data/a\n- file: a/b\n  path: secret/data/b\n", "a/b")
	f.Add("- {file: db/password, path: secret/data/db, key: password, mode: 0400}\n", "db/password")
	f.Add("- file: c\n  path: pki/issue/web\n  args: {common_name: x}\n", "..data")
	f.Add("- file: \"a\\u0000\"\n  path: x/y\n", "a//b")
	f.Add("[]", "")
	f.Add("- file: x\n  path: sys/mounts\n", "/etc/passwd")
	f.Add("- file: x\n  path: s/x\n  mode: \"0440\"\n- file: y\n  path: s/y\n  mode: 0777\n", "../x")
	f.Add("- &a {file: x, path: s/x}\n- *a\n", ".")
	f.Add("- file: "+testToken+"\n  path: "+testToken+"\n", testToken)

	f.Fuzz(func(t *testing.T, secretsYAML, file string) {
		q, _ := json.Marshal(file)
		for _, raw := range []string{
			secretsYAML,
			"- file: " + string(q) + "\n  path: secret/data/x\n",
			"- file: keep\n  path: secret/data/x\n- file: " + string(q) + "\n  path: secret/data/y\n",
		} {
			ctx := baseContext()
			ctx[AttrSecrets] = raw
			v, err := Parse(ctx, nil, audience)
			if err != nil {
				var fe *FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("error %T is not a *FieldError: %v", err, err)
				}
				// The pod may name the token in its own YAML; only then
				// may it show up in the message.
				if strings.Contains(err.Error(), testToken) && !strings.Contains(raw, testToken) {
					t.Fatalf("error leaks the token: %v", err)
				}
				continue
			}
			checkAccepted(t, v)
		}
	})
}

// checkAccepted asserts what the atomic writer needs of an accepted volume.
func checkAccepted(t *testing.T, v *Volume) {
	t.Helper()
	specs := v.Request.Secrets
	if len(specs) == 0 || len(specs) > MaxFiles {
		t.Fatalf("accepted %d files", len(specs))
	}
	if v.Request.JWT != testToken {
		t.Fatalf("JWT = %q", v.Request.JWT)
	}
	files := make(map[string]bool, len(specs))
	for _, s := range specs {
		if err := CheckFileName(s.File); err != nil {
			t.Fatalf("accepted file %q fails CheckFileName: %v", s.File, err)
		}
		if s.File == "." {
			t.Fatalf("accepted the volume root as a file")
		}
		if s.Mode&^0o444 != 0 {
			t.Fatalf("accepted mode %#o", s.Mode)
		}
		if s.Args != nil && !IsIssuingPath(s.Path) {
			t.Fatalf("accepted args on %q", s.Path)
		}
		files[s.File] = true
	}
	// No file may equal another or be an ancestor directory of another.
	for _, s := range specs {
		n := 0
		for f := range files {
			if f == s.File {
				n++
			}
			if strings.HasPrefix(f, s.File+"/") {
				t.Fatalf("file %q is a directory of file %q", s.File, f)
			}
		}
		if n != 1 {
			t.Fatalf("file %q collides", s.File)
		}
	}
	if len(files) != len(specs) {
		t.Fatalf("%d specs but %d distinct files", len(specs), len(files))
	}
}

// Claimed reads the identity a volume context claims, unvalidated but
// bounded and on one line, for the audit line of a rejected request.
func TestClaimed(t *testing.T) {
	long := strings.Repeat("n", 300)
	tests := []struct {
		name     string
		vc       map[string]string
		wantPod  provider.Identity
		wantRole string
	}{
		{"kubelet's keys", baseContext(), provider.Identity{Namespace: "shop", PodName: "payment-1",
			PodUID: "0e8a1c3a-8d7e-4c61-9a51-1d3c4f6f2b10", ServiceAccount: "payment"}, "payments"},
		{"nothing", nil, provider.Identity{}, ""},
		{"too long and multi-line", map[string]string{KeyPodName: long, KeyPodNamespace: "a\nb\x00", AttrRole: "r\r"},
			provider.Identity{PodName: long[:maxClaimedLen] + "...", Namespace: "a?b?"}, "r?"},
	}
	for _, tt := range tests {
		pod, role := Claimed(tt.vc)
		if pod != tt.wantPod || role != tt.wantRole {
			t.Errorf("%s: Claimed = %+v %q, want %+v %q", tt.name, pod, role, tt.wantPod, tt.wantRole)
		}
	}
}
