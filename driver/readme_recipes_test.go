package driver_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// recipeRE finds a README recipe: a marker comment and the YAML block after it.
var recipeRE = regexp.MustCompile("(?s)<!-- recipe: ([a-z0-9-]+) -->\n```yaml\n(.*?)```")

// readmeRecipes returns the volume attributes of each recipe in README.md.
func readmeRecipes(t *testing.T) map[string]map[string]string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, m := range recipeRE.FindAllStringSubmatch(string(b), -1) {
		var doc struct {
			Volumes []struct {
				Name string `json:"name"`
				CSI  struct {
					Driver           string            `json:"driver"`
					ReadOnly         bool              `json:"readOnly"`
					VolumeAttributes map[string]string `json:"volumeAttributes"`
				} `json:"csi"`
			} `json:"volumes"`
		}
		if err := yaml.UnmarshalStrict([]byte(m[2]), &doc); err != nil {
			t.Fatalf("recipe %s does not parse: %v", m[1], err)
		}
		if len(doc.Volumes) != 1 || doc.Volumes[0].CSI.Driver != "vault.csi.dev" {
			t.Fatalf("recipe %s: want one vault.csi.dev volume", m[1])
		}
		out[m[1]] = doc.Volumes[0].CSI.VolumeAttributes
	}
	return out
}

// The README's three recipes, as written there, through the driver against
// real Vault, PostgreSQL and PKI: the README cannot drift from what works.
func TestReadmeRecipes(t *testing.T) {
	recipes := readmeRecipes(t)
	for _, name := range []string{"postgres-url", "nginx-tls", "java-keystore"} {
		if recipes[name] == nil {
			t.Fatalf("README.md has no recipe %q", name)
		}
	}
	v, pg, roots := formatsVault(t)
	v.Role(t, "shop", shopPod.Namespace, shopPod.ServiceAccount, "fmt")
	d := startDriverFor(t, v)
	publish := func(name string) string {
		t.Helper()
		attrs := recipes[name]
		target := newTarget(t)
		req := requestFor(v, volume{target: target, pod: shopPod, role: attrs["role"], secrets: attrs["secrets"]})
		for k, val := range attrs {
			req.VolumeContext[k] = val
		}
		if _, err := d.node.NodePublishVolume(ctxT(t), req); err != nil {
			t.Fatalf("recipe %s: %v", name, err)
		}
		t.Cleanup(func() { unpublish(t, d, target) })
		return target
	}

	t.Run("postgres-url", func(t *testing.T) {
		dir := publish("postgres-url")
		env := read(t, filepath.Join(dir, "db.env"))
		m := dsnRE.FindStringSubmatch(env)
		if m == nil || !strings.Contains(m[1], "@db.shop.svc:5432/app?") {
			t.Fatalf("db.env is not the recipe's URL (%d bytes)", len(env))
		}
		url := strings.Replace(m[1], "@db.shop.svc:5432/app?", "@"+pg.Addr()+"/"+pg.Database+"?", 1)
		if err := pg.CanConnectURL(url); err != nil {
			t.Fatal(err)
		}
		if read(t, filepath.Join(dir, "db-user")) != m[2] {
			t.Fatal("db-user is not the URL's user")
		}
	})

	t.Run("nginx-tls", func(t *testing.T) {
		dir := publish("nginx-tls")
		bundle := filepath.Join(dir, "bundle.pem")
		leaf := checkBundle(t, []byte(read(t, bundle)), roots, "web.shop.svc.cluster.local")
		// nginx reads the file through OpenSSL's PEM reader: the certificate
		// skipping the key, the key skipping the certificates.
		cert, err := exec.Command("openssl", "x509", "-in", bundle, "-noout", "-serial").CombinedOutput()
		if err != nil || !strings.Contains(strings.ToUpper(string(cert)), strings.ToUpper(leaf.SerialNumber.Text(16))) {
			t.Fatalf("openssl x509 on the bundle: %v: %s", err, cert)
		}
		if out, err := exec.Command("openssl", "pkey", "-in", bundle, "-noout").CombinedOutput(); err != nil {
			t.Fatalf("openssl pkey on the bundle: %v: %s", err, out)
		}
	})

	t.Run("java-keystore", func(t *testing.T) {
		dir := publish("java-keystore")
		leaf := checkPKCS12(t, filepath.Join(dir, "keystore.p12"), keystorePassword)
		if leaf.Subject.CommonName != "web.shop.svc.cluster.local" || time.Until(leaf.NotAfter) <= 0 {
			t.Fatalf("keystore certificate: %s until %s", leaf.Subject.CommonName, leaf.NotAfter)
		}
		ts := readJKSTrust(t, filepath.Join(dir, "truststore.jks"), keystorePassword)
		if _, err := leaf.Verify(x509VerifyOpts(ts)); err != nil {
			t.Fatalf("keystore certificate does not verify against the truststore: %v", err)
		}
	})
}
