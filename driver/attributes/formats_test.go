package attributes

import (
	"errors"
	"strings"
	"testing"

	"vaultcsi.dev/driver/provider/render"
)

func parseYAML(t testing.TB, secretsYAML string) (*Volume, error) {
	t.Helper()
	ctx := baseContext()
	ctx[AttrSecrets] = secretsYAML
	return Parse(ctx, nil, audience)
}

const pkiEntry = "  path: pki/issue/web\n  args: {common_name: web.shop.svc.cluster.local, ttl: 24h}\n"

func TestParseRendered(t *testing.T) {
	v, err := parseYAML(t, `
- file: db.env
  template: |
    {{- with secret "database/creds/app" }}
    DATABASE_URL=postgres://{{ .username }}:{{ .password }}@db.shop:5432/app
    {{- end }}
    {{ (secret "secret/data/app").host }}
- file: db-user
  path: database/creds/app
  key: username
- file: blob.bin
  path: secret/data/blob
  key: payload
  encoding: base64
- file: tls/bundle.pem
`+pkiEntry+`  format: pem-bundle
- file: tls/keystore.p12
`+pkiEntry+`  format: pkcs12
  passwordFrom: {path: secret/data/web, key: keystorePassword}
  mode: "0400"
`)
	if err != nil {
		t.Fatal(err)
	}
	s := v.Request.Secrets
	var paths []string
	for _, r := range s[0].Reads() {
		paths = append(paths, r.Path)
	}
	if s[0].Tmpl == nil || s[0].Path != "" || strings.Join(paths, ",") != "database/creds/app,secret/data/app" {
		t.Fatalf("template entry: reads %v", paths)
	}
	if s[2].Encoding != render.EncodingBase64 || s[3].Format != render.FormatPEMBundle {
		t.Fatalf("encoding %q, format %q", s[2].Encoding, s[3].Format)
	}
	p12 := s[4]
	if p12.Format != render.FormatPKCS12 || p12.PasswordFrom == nil || p12.PasswordFrom.Path != "secret/data/web" || p12.Mode != 0o400 || len(p12.Reads()) != 2 {
		t.Fatalf("pkcs12 entry: %+v", p12)
	}
	if !p12.Composite() || s[3].Composite() || !s[0].Composite() {
		t.Fatal("composite: wrong")
	}
}

// Every rejection of the new fields names the entry's field, before any
// Vault call (Parse is pure).
func TestParseRenderedRejects(t *testing.T) {
	tmpl := func(src string) string { return "- file: f\n  template: " + quote(src) + "\n" }
	for _, tc := range []struct{ name, yaml, field, want string }{
		{"template with path", "- file: f\n  path: secret/data/x\n  template: '{{ secret \"a/b\" }}'\n", "secrets[0].path", "not allowed with template"},
		{"template with key", "- file: f\n  key: k\n  template: '{{ secret \"a/b\" }}'\n", "secrets[0].key", "not allowed with template"},
		{"template with args", "- file: f\n  args: {a: b}\n  template: '{{ secret \"a/b\" }}'\n", "secrets[0].args", "not allowed"},
		{"template with encoding", "- file: f\n  encoding: hex\n  template: '{{ secret \"a/b\" }}'\n", "secrets[0].encoding", "not allowed"},
		{"template with format", "- file: f\n  format: pkcs12\n  template: '{{ secret \"a/b\" }}'\n", "secrets[0].format", "not allowed"},
		{"template bad mode", "- file: f\n  mode: \"0600\"\n  template: '{{ secret \"a/b\" }}'\n", "secrets[0].mode", "read bits"},
		{"template empty", tmpl(""), "secrets[0].template", "empty"},
		{"template too long", tmpl(`{{ secret "a/b" }}` + strings.Repeat("x", render.MaxTemplateBytes)), "secrets[0].template", "at most"},
		{"template syntax", tmpl(`{{ secret "a/b" `), "secrets[0].template", "unclosed"},
		{"template non-literal path", tmpl(`{{ secret .p }}`), "secrets[0].template", "literal"},
		{"template sys path", tmpl(`{{ secret "sys/mounts" }}`), "secrets[0].template", "sys/ paths"},
		{"template unclean path", tmpl(`{{ secret "a/../b" }}`), "secrets[0].template", "clean"},
		{"template args on a read", tmpl(`{{ secret "secret/data/x" "ttl=1h" }}`), "secrets[0].template", "args only"},
		{"template range int", tmpl(`{{ secret "a/b" }}{{ range 99999999 }}{{ end }}`), "secrets[0].template", "integer"},
		{"template sequence", tmpl(`{{ secret "a/b" }}{{ range seq 1 9 }}{{ end }}`), "secrets[0].template", "not defined"},
		{"template repeat", tmpl(`{{ repeat 99999999 (secret "a/b").x }}`), "secrets[0].template", "not defined"},
		{"template env", tmpl(`{{ env "VAULT_TOKEN" }}{{ secret "a/b" }}`), "secrets[0].template", "not defined"},
		{"template define", tmpl(`{{ define "x" }}{{ end }}{{ secret "a/b" }}`), "secrets[0].template", "define"},
		{"unknown encoding", "- file: f\n  path: secret/data/x\n  key: k\n  encoding: base32\n", "secrets[0].encoding", "unknown"},
		{"encoding without key", "- file: f\n  path: secret/data/x\n  encoding: hex\n", "secrets[0].encoding", "needs key"},
		{"encoding with format", "- file: f\n  key: k\n  encoding: hex\n  format: pem-bundle\n" + pkiEntry, "secrets[0].encoding", "not allowed with format"},
		{"unknown format", "- file: f\n  format: jceks\n" + pkiEntry, "secrets[0].format", "unknown"},
		{"format on a KV read", "- file: f\n  path: secret/data/x\n  format: pkcs12\n", "secrets[0].format", "PKI issuing endpoint"},
		{"format on a database read", "- file: f\n  path: database/creds/app\n  format: pem-bundle\n", "secrets[0].format", "PKI issuing endpoint"},
		{"format with key", "- file: f\n  key: certificate\n  format: pkcs12\n" + pkiEntry, "secrets[0].key", "not allowed with format"},
		{"passwordFrom without format", "- file: f\n  path: secret/data/x\n  key: k\n  passwordFrom: {path: secret/data/p, key: k}\n", "secrets[0].passwordFrom", "keystore format"},
		{"passwordFrom on pem-bundle", "- file: f\n  format: pem-bundle\n  passwordFrom: {path: secret/data/p, key: k}\n" + pkiEntry, "secrets[0].passwordFrom", "keystore format"},
		{"passwordFrom bad path", "- file: f\n  format: pkcs12\n  passwordFrom: {path: /abs, key: k}\n" + pkiEntry, "secrets[0].passwordFrom.path", "start or end"},
		{"passwordFrom sys path", "- file: f\n  format: pkcs12\n  passwordFrom: {path: sys/x, key: k}\n" + pkiEntry, "secrets[0].passwordFrom.path", "sys/"},
		{"passwordFrom issuing path", "- file: f\n  format: pkcs12\n  passwordFrom: {path: pki/issue/web, key: k}\n" + pkiEntry, "secrets[0].passwordFrom.path", "issuing endpoint"},
		{"passwordFrom no key", "- file: f\n  format: pkcs12\n  passwordFrom: {path: secret/data/p}\n" + pkiEntry, "secrets[0].passwordFrom.key", "required"},
		{"passwordFrom unknown field", "- file: f\n  format: pkcs12\n  passwordFrom: {path: secret/data/p, key: k, file: x}\n" + pkiEntry, "secrets", "unknown field"},
		{"jks without password", "- file: f\n  format: jks\n" + pkiEntry, "secrets[0].passwordFrom", "required for jks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseYAML(t, tc.yaml)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(fe.Msg, tc.want) {
				t.Fatalf("err %v, want field %s and %q", err, tc.field, tc.want)
			}
		})
	}
}

func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// The new fields fuzzed: every rejection is a FieldError, and whatever is
// accepted reads only checked paths (the policy sees each one), sends args
// only to issuing endpoints and takes a format only from one.
func FuzzParseRendered(f *testing.F) {
	f.Add(`{{ with secret "database/creds/app" }}{{ .username }}{{ end }}`, "pkcs12", "base64", "secret/data/web")
	f.Add(`{{ secret "pki/issue/web" "common_name=x" }}`, "jks", "hex", "sys/x")
	f.Add(`{{ range 5 }}{{ end }}`, "pem-bundle", "b64", "")
	f.Add(`{{ secret "../x" }}`, "jks-truststore", "", "a/../b")
	f.Fuzz(func(t *testing.T, src, format, encoding, pwPath string) {
		for _, raw := range []string{
			"- file: t\n  template: " + quote(src) + "\n",
			"- file: k\n  format: " + quote(format) + "\n  passwordFrom: {path: " + quote(pwPath) + ", key: pw}\n" + pkiEntry,
			"- file: e\n  path: secret/data/x\n  key: k\n  encoding: " + quote(encoding) + "\n",
		} {
			v, err := parseYAML(t, raw)
			if err != nil {
				var fe *FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("error %T: %v", err, err)
				}
				continue
			}
			checkAccepted(t, v)
			for _, s := range v.Request.Secrets {
				for _, r := range s.Reads() {
					if checkVaultPath(r.Path) != nil || checkReadablePath(r.Path) != nil {
						t.Fatalf("accepted read of %q", r.Path)
					}
					if r.Args != nil && !IsIssuingPath(r.Path) {
						t.Fatalf("accepted args on %q", r.Path)
					}
				}
				if s.Format != "" && s.Args == nil {
					t.Fatalf("accepted format %q on a read", s.Format)
				}
			}
		}
	})
}
