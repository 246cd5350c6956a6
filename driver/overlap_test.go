package driver_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"vaultcsi.dev/driver/driver/tmpfs"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// mountWatchProxy forwards to Vault, holding each secret read until the
// target is a mount point (or a bound passes) and counting the reads that
// found it mounted.
type mountWatchProxy struct {
	target         string
	reads, mounted atomic.Int32
	rp             *httputil.ReverseProxy
}

// mountWaitBound bounds how long a read waits for the mount: far longer
// than a mount takes, so a read that gives up shows a mount that waited
// for the reads.
const mountWaitBound = 5 * time.Second

func (p *mountWatchProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/v1/auth/") {
		p.reads.Add(1)
		for deadline := time.Now().Add(mountWaitBound); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if ok, _ := tmpfs.IsMounted(p.target); ok {
				p.mounted.Add(1)
				break
			}
		}
	}
	p.rp.ServeHTTP(w, r)
}

// TestFirstPublishMountsDuringReads: a first publish mounts its tmpfs
// while its Vault reads are in flight (once the token is on record), not
// after them, so a remote Vault's round trip hides the mount.
func TestFirstPublishMountsDuringReads(t *testing.T) {
	need.Long(t, "runs the driver binary against a real Vault")
	u, err := url.Parse(vaultSrv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	target := newTarget(t)
	p := &mountWatchProxy{target: target, rp: httputil.NewSingleHostReverseProxy(u)}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	d := startDriver(t, "--vault-addr="+srv.URL)

	ctx := context.Background()
	req := requestFor(vaultSrv, volume{target: target, pod: shopPod, secrets: threeSecrets})
	if _, err := d.node.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Cleanup(func() { unpublish(t, d, target) })
	if r, m := p.reads.Load(), p.mounted.Load(); r == 0 || m != r {
		t.Errorf("%d of %d Vault reads saw the target mounted; want all: the mount waits for the reads", m, r)
	}
}
