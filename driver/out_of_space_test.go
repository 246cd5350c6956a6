package driver_test

// Issue 9 item 12: a volume out of bytes or inodes is ResourceExhausted.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver/state"
)

// Item 12. A volume that runs out of room in its tmpfs (here inodes:
// deeply nested directories) is ResourceExhausted, as the README promises,
// not Internal: nothing stays mounted and no token stays alive. On a
// refresh the same failure keeps the old files.
func TestOutOfInodesIsResourceExhausted(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&b, "- file: d%03d/a/b/c/d/e/p\n  path: secret/data/db\n  key: password\n", i)
	}
	nested := b.String()
	d := startDriver(t)
	tokens := accessorCount(t, vaultSrv)

	vol := volume{target: newTarget(t), pod: shopPod, secrets: nested}
	_, err := d.node.NodePublishVolume(ctxT(t), vol.request())
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "inodes") {
		t.Fatalf("%v, want ResourceExhausted naming the inode limit", err)
	}
	assertNothingMounted(t, vol.target)
	waitAccessors(t, vaultSrv, tokens)

	// A mounted volume whose refresh needs more inodes than it has keeps
	// its files, answers success, and records why.
	small := volume{target: newTarget(t), pod: shopPod, secrets: "- file: p\n  path: secret/data/db\n  key: password\n"}
	if _, err := d.node.NodePublishVolume(ctxT(t), small.request()); err != nil {
		t.Fatal(err)
	}
	link := dataLink(t, small.target)
	grown := small
	grown.secrets = nested
	if _, err := d.node.NodePublishVolume(ctxT(t), grown.request()); err != nil {
		t.Fatalf("a failed refresh must answer success: %v", err)
	}
	if got := read(t, filepath.Join(small.target, "p")); got != dbPassword || dataLink(t, small.target) != link {
		t.Errorf("old files not kept: p=%q ..data %s -> %s", got, link, dataLink(t, small.target))
	}
	entries, err := os.ReadDir(small.target)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 { // p, ..data and the one payload dir
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("volume holds %v: a partial payload was left behind", names)
	}
	st, err := state.Open(d.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := st.Get(small.target)
	if err != nil || rec == nil || rec.Failures != 1 || !strings.Contains(rec.LastError, "ResourceExhausted") {
		t.Errorf("state after the failed refresh: %+v %v, want one ResourceExhausted failure", rec, err)
	}
	unpublish(t, d, small.target)
	waitAccessors(t, vaultSrv, tokens)
}
