package driver_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// threeKeys and threeTemplates read the same three paths (KV v2, KV v2,
// KV v1) for the same three fields, as plain keys and as templates.
const (
	threeKeys = `
- file: db/password
  path: secret/data/db
  key: password
- file: paypal-token
  path: secret/data/paypal
  key: token
- file: api-key
  path: kv/api
  key: key
`
	threeTemplates = `
- file: db/password
  template: '{{ (secret "secret/data/db").password }}'
- file: paypal-token
  template: '{{ with secret "secret/data/paypal" }}token={{ .token }}{{ end }}'
- file: api-key
  template: '{{ (secret "kv/api").key | upper }}'
`
)

// BenchmarkColdPublishFormats: a cold publish (login + 3 reads) of three
// plain keys against three templates over the same fields, through the
// driver binary's socket against the real Vault; p50-ms is the median.
func BenchmarkColdPublishFormats(b *testing.B) {
	for _, bc := range []struct{ name, secrets string }{{"3-plain-keys", threeKeys}, {"3-templates", threeTemplates}} {
		b.Run(bc.name, func(b *testing.B) {
			d := startDriver(b, "-v=0", "--audit-log=")
			root := b.TempDir()
			reqs := make([]*csi.NodePublishVolumeRequest, b.N)
			for i := range reqs {
				dir := filepath.Join(root, fmt.Sprint(i))
				if err := os.Mkdir(dir, 0o750); err != nil {
					b.Fatal(err)
				}
				reqs[i] = volume{target: filepath.Join(dir, "mount"), pod: shopPod, secrets: bc.secrets, inSecrets: true}.request()
			}
			ctx := ctxT(b)
			took := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if _, err := d.node.NodePublishVolume(ctx, reqs[i]); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
				b.StopTimer()
				if _, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: reqs[i].TargetPath}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
		})
	}
}

// BenchmarkRepublishTemplatesNothingDue is kubelet's re-publish of a
// mounted volume of templates and keystores before anything is due
// (TestRepublishTemplatesNoVault proves it sends nothing to Vault).
func BenchmarkRepublishTemplatesNothingDue(b *testing.B) { benchRepublishNothingDue(b, threeTemplates) }

// A re-publish of a volume of templates with nothing due sends nothing to
// Vault and swaps nothing; once the period passes with the same secrets,
// the re-read renders the same bytes and still swaps nothing.
func TestRepublishTemplatesNoVault(t *testing.T) {
	d := startObservedDriver(t, vaultSrv)
	target := newTarget(t)
	req := volume{target: target, pod: shopPod, secrets: threeTemplates}.request()
	if _, err := d.node.NodePublishVolume(ctxT(t), req); err != nil {
		t.Fatal(err)
	}
	defer unpublish(t, d.driverProc, target)
	if got := read(t, filepath.Join(target, "paypal-token")); got != "token="+paypalToken {
		t.Fatalf("paypal-token = %q", got)
	}
	link := dataLink(t, target)
	before := d.scrape(t).vaultRequests()
	for range 20 {
		if _, err := d.node.NodePublishVolume(ctxT(t), req); err != nil {
			t.Fatal(err)
		}
	}
	if n := d.scrape(t).vaultRequests() - before; n != 0 {
		t.Fatalf("20 re-publishes with nothing due sent %v Vault requests", n)
	}
	age(t, d.stateDir, target, 15*time.Second)
	if _, err := d.node.NodePublishVolume(ctxT(t), req); err != nil {
		t.Fatal(err)
	}
	if n := d.scrape(t).vaultRequests() - before; n == 0 {
		t.Fatal("a due re-publish read nothing: the counter proves nothing")
	}
	if dataLink(t, target) != link {
		t.Fatal("re-rendering unchanged secrets swapped ..data")
	}
}
