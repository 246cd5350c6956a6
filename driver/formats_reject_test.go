package driver_test

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// Every bad entry is refused with the right code and a message naming the
// field, before any Vault call (Vault's request counter does not move), and
// leaves nothing at the target; values that fail to render after the read
// fail the first publish the same way, naming the file, path and key.
func TestFormatsRejects(t *testing.T) {
	d := startObservedDriver(t, vaultSrv, "--policy-file="+writePolicyFile(t, accessPolicy))
	pki := "  path: pki/issue/web\n  args: {common_name: a.svc.cluster.local}\n"
	tmpl := func(src string) string { return "- file: f\n  template: '" + src + "'\n" }
	for _, tc := range []struct {
		name, secrets string
		code          codes.Code
		want          []string
		vault         bool // the failure comes after reading
	}{
		{"template with path", "- file: f\n  path: secret/data/db\n  template: '{{ secret \"secret/data/db\" }}'\n", codes.InvalidArgument, []string{"secrets[0].path", "template"}, false},
		{"template with key", "- file: f\n  key: password\n  template: '{{ secret \"secret/data/db\" }}'\n", codes.InvalidArgument, []string{"secrets[0].key"}, false},
		{"unknown format", "- file: f\n  format: jceks\n" + pki, codes.InvalidArgument, []string{"secrets[0].format", "unknown"}, false},
		{"unknown encoding", "- file: f\n  path: secret/data/db\n  key: password\n  encoding: base32\n", codes.InvalidArgument, []string{"secrets[0].encoding"}, false},
		{"format on a KV path", "- file: f\n  path: secret/data/db\n  format: pkcs12\n", codes.InvalidArgument, []string{"secrets[0].format", "PKI"}, false},
		{"jks without password", "- file: f\n  format: jks\n" + pki, codes.InvalidArgument, []string{"secrets[0].passwordFrom"}, false},
		{"non-literal path", tmpl(`{{ $p := "secret/data/db" }}{{ secret $p }}`), codes.InvalidArgument, []string{"secrets[0].template", "literal"}, false},
		{"range over an integer", tmpl(`{{ secret "secret/data/db" }}{{ range 100000000 }}{{ end }}`), codes.InvalidArgument, []string{"secrets[0].template", "integer"}, false},
		{"string repetition", tmpl(`{{ repeat 100000000 (secret "secret/data/db").password }}`), codes.InvalidArgument, []string{"secrets[0].template", "repeat"}, false},
		{"template reads sys/", tmpl(`{{ secret "sys/mounts" }}`), codes.InvalidArgument, []string{"secrets[0].template", "sys/"}, false},
		{"template path denied by policy", tmpl(`{{ (secret "secret/data/db").password }}{{ (secret "secret/data/other").x }}`), codes.PermissionDenied, []string{`rule "deny-other-team"`}, false},
		{"passwordFrom denied by policy", "- file: f\n  format: pkcs12\n  passwordFrom: {path: secret/data/other, key: x}\n" + pki, codes.PermissionDenied, []string{"deny-other-team"}, false},
		{"value is not hex", "- file: ok\n  path: secret/data/paypal\n  key: token\n- file: blob\n  path: secret/data/db\n  key: password\n  encoding: hex\n", codes.InvalidArgument, []string{"file blob", `key "password"`, "secret/data/db", "not hex"}, true},
		{"template missing key", tmpl(`{{ with secret "secret/data/db" }}{{ .nokey }}{{ end }}`), codes.NotFound, []string{"file f", `"nokey"`, "secret/data/db"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := newTarget(t)
			before := d.scrape(t).vaultRequests()
			_, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: shopPod, secrets: tc.secrets}.request())
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			msg := status.Convert(err).Message()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not name %q", msg, w)
				}
			}
			for _, secret := range []string{dbPassword, paypalToken, otherValue} {
				if strings.Contains(msg, secret) {
					t.Errorf("error holds a secret value: %s", msg)
				}
			}
			if n := d.scrape(t).vaultRequests() - before; !tc.vault && n != 0 {
				t.Errorf("%v Vault requests before the refusal", n)
			} else if tc.vault && n == 0 {
				t.Error("no Vault request: the render-time case proves nothing")
			}
			if _, _, ok := mountOptions(t, target); ok {
				t.Error("target left mounted after a failed publish")
			}
			if _, err := os.Stat(target); !os.IsNotExist(err) {
				t.Errorf("target left behind after a failed publish: %v", err)
			}
		})
	}
}

// A refresh whose new values cannot be rendered (a value that no longer
// decodes, a key a template needs removed) keeps the last good files and
// answers kubelet with success; a fixed value is rendered on the next try.
func TestFormatsKeepLastGood(t *testing.T) {
	v := vaulttest.Start(t)
	v.PutKV2(t, "enc", map[string]any{"blob": base64.StdEncoding.EncodeToString([]byte("good-bytes")), "name": "n1"})
	v.Policy(t, "enc", `path "secret/data/enc" { capabilities = ["read"] }`)
	v.Role(t, "enc", shopPod.Namespace, shopPod.ServiceAccount, "enc")
	d := startDriverFor(t, v)
	target := newTarget(t)
	vol := volume{target: target, pod: shopPod, role: "enc", secrets: `
- file: blob.bin
  path: secret/data/enc
  key: blob
  encoding: base64
- file: name.txt
  template: '{{ with secret "secret/data/enc" }}name={{ .name }}{{ end }}'
`}
	publish := func() {
		t.Helper()
		if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
			t.Fatalf("a re-publish must not fail (kubelet would drop the mount): %v", err)
		}
	}
	publish()
	link := dataLink(t, target)
	v.PutKV2(t, "enc", map[string]any{"blob": "%%not base64%%"}) // and no name
	age(t, d.stateDir, target, 15*time.Second)
	publish()
	if dataLink(t, target) != link || read(t, filepath.Join(target, "blob.bin")) != "good-bytes" || read(t, filepath.Join(target, "name.txt")) != "name=n1" {
		t.Fatal("a failed render replaced the last good files")
	}
	st, _ := state.Open(d.stateDir)
	if rec, _ := st.Get(target); rec == nil || rec.Failures == 0 || !strings.Contains(rec.LastError, "blob.bin") || strings.Contains(rec.LastError, "not base64%%") {
		t.Fatalf("the failure is not recorded, or not by its file: %+v", rec)
	}
	v.PutKV2(t, "enc", map[string]any{"blob": base64.StdEncoding.EncodeToString([]byte("new-bytes")), "name": "n2"})
	age(t, d.stateDir, target, 10*time.Minute) // past the backoff
	publish()
	if read(t, filepath.Join(target, "blob.bin")) != "new-bytes" || read(t, filepath.Join(target, "name.txt")) != "name=n2" {
		t.Fatal("fixed values not rendered on the next refresh")
	}
}

// A template's output counts against --max-volume-bytes while it is
// written: a template that writes past it is ResourceExhausted naming the
// file, and nothing is mounted.
func TestFormatsVolumeLimit(t *testing.T) {
	d := startDriver(t, "--max-volume-bytes=65536")
	var src strings.Builder
	src.WriteString("{{ with secret \"secret/data/db\" }}")
	for range 40 {
		src.WriteString("{{ printf \"%4000s\" .password }}\n")
	}
	src.WriteString("{{ end }}")
	target := newTarget(t)
	secrets := "- file: small\n  path: secret/data/db\n  key: password\n- file: big.conf\n  template: '" + src.String() + "'\n"
	_, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: shopPod, secrets: secrets}.request())
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "big.conf") {
		t.Fatalf("err %v, want ResourceExhausted naming big.conf", err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("target left behind: %v", err)
	}
}
