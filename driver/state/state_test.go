package state

import (
	"os"
	"strings"
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

// Revocation records survive a reopen (a driver restart), are root-only,
// never name the token in a file name, and are not volumes.
func TestRevocations(t *testing.T) {
	dir := t.TempDir() + "/state"
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rs, err := s.Revocations(); len(rs) != 0 || err != nil {
		t.Fatalf("empty store: %v, %v", rs, err)
	}
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	for _, tok := range []string{"hvs.token-one", "hvs.token-two"} {
		r := NewRevocation(&provider.Session{Token: tok, Namespace: "ns1", ExpiresAt: exp}, "/t/"+tok,
			provider.Identity{Namespace: "shop", PodName: "p"})
		r.Reason, r.Added = "unpublish", time.Now()
		if err := s.PutRevocation(&r); err != nil {
			t.Fatal(err)
		}
		r.Attempts = 3 // rewriting replaces the record
		if err := s.PutRevocation(&r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutRevocation(&Revocation{}); err == nil {
		t.Error("a record without a token was saved")
	}
	if err := s.Put(&Volume{Target: "/t/vol"}); err != nil {
		t.Fatal(err)
	}
	again, _ := Open(dir)
	rs, err := again.Revocations()
	if err != nil || len(rs) != 2 {
		t.Fatalf("after reopen: %d records, %v", len(rs), err)
	}
	for _, r := range rs {
		if r.Attempts != 3 || r.Session().Namespace != "ns1" || !r.Session().ExpiresAt.Equal(exp) || r.Pod().PodName != "p" {
			t.Errorf("record = %+v", r)
		}
	}
	if vols, _ := again.List(); len(vols) != 1 {
		t.Errorf("List = %d volumes, want 1: revocation records are not volumes", len(vols))
	}
	sub := dir + "/" + revocationsDir
	if info, err := os.Stat(sub); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("revocations dir: %v %v, want 0700", info, err)
	}
	entries, _ := os.ReadDir(sub)
	for _, e := range entries {
		info, _ := e.Info()
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
		if strings.Contains(e.Name(), "token") {
			t.Errorf("file name %s shows the token", e.Name())
		}
	}
	// An unreadable record is reported and does not hide the others.
	if err := os.WriteFile(sub+"/garbage.json", []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if rs, err := again.Revocations(); len(rs) != 2 || err == nil {
		t.Errorf("with a bad record: %d records, err %v", len(rs), err)
	}
	for _, r := range rs {
		if err := again.DeleteRevocation(r.Key()); err != nil {
			t.Fatal(err)
		}
		if err := again.DeleteRevocation(r.Key()); err != nil {
			t.Errorf("second delete: %v", err)
		}
	}
	_ = os.Remove(sub + "/garbage.json")
	if rs, err := again.Revocations(); len(rs) != 0 || err != nil {
		t.Errorf("after delete: %d, %v", len(rs), err)
	}
}
