package state

import (
	"os"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider"
)

func TestStore(t *testing.T) {
	s, err := Open(t.TempDir() + "/state")
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(s.Dir()); info.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", info.Mode().Perm())
	}
	const target = "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/s/mount"
	if v, err := s.Get(target); v != nil || err != nil {
		t.Fatalf("Get of unknown target = %v, %v", v, err)
	}
	in := &Volume{Target: target, Role: "r", FetchedAt: time.Now().UTC().Truncate(time.Second),
		Secrets: []provider.SecretInfo{{Path: "secret/data/a", Version: 2}},
		Session: &provider.Session{Token: "t1"}}
	if err := s.Put(in); err != nil {
		t.Fatal(err)
	}
	// What Get returns is the caller's to change: the cache is not touched.
	got, _ := s.Get(target)
	got.Secrets[0].Version = 99
	got.Session.Token = "changed"
	again, _ := s.Get(target)
	if again.Secrets[0].Version != 2 || again.Session.Token != "t1" {
		t.Errorf("a caller's change leaked into the store: %+v %+v", again.Secrets[0], again.Session)
	}
	// A record rewritten behind the store's back (another process) is reread.
	other, _ := Open(s.Dir())
	mod, _ := other.Get(target)
	mod.Role = "rewritten-elsewhere-and-longer"
	if err := other.Put(mod); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Get(target); v.Role != mod.Role {
		t.Errorf("stale cached record: role %q, want %q", v.Role, mod.Role)
	}
	// Each record is root-only.
	entries, _ := os.ReadDir(s.Dir())
	for _, e := range entries {
		if info, _ := e.Info(); info.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
	}
	vols, err := s.List()
	if err != nil || len(vols) != 1 {
		t.Errorf("List = %d records, %v", len(vols), err)
	}
	if err := s.Delete(target); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Get(target); v != nil {
		t.Error("record still there after Delete")
	}
	if err := s.Delete(target); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}
