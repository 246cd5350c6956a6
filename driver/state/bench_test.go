package state

import (
	"os"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider"
)

// BenchmarkPut is one record write of a 3-secret volume, twice per first
// publish (pending, then done), on /dev/shm (a tmpfs like --state-dir's).
func BenchmarkPut(b *testing.B) {
	dir, err := os.MkdirTemp("/dev/shm", "state-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	s, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	v := &Volume{
		Target:   "/var/lib/kubelet/pods/7a1e1f0c-3c3e-4f4e-9a57-2b1b7a0e0001/volumes/kubernetes.io~csi/secrets/mount",
		VolumeID: "csi-7a1e1f0c", Role: "payments", RequestHash: "0123456789abcdef", FetchedAt: now,
		Pod: provider.Identity{Namespace: "shop", PodName: "payment-7d9f", PodUID: "7a1e1f0c-3c3e-4f4e-9a57-2b1b7a0e0001", ServiceAccount: "payment"},
		Secrets: []provider.SecretInfo{
			{Path: "secret/data/db", Version: 3, FetchedAt: now},
			{Path: "secret/data/api", Version: 1, FetchedAt: now},
			{Path: "database/creds/app", LeaseID: "database/creds/app/abcdefghijklmnopqrstuvwx", LeaseDuration: time.Hour, Renewable: true, FetchedAt: now},
		},
		Session:        &provider.Session{Token: "hvs.CAESIJ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH", Accessor: "abcdefghijklmnopqrstuvwx", Renewable: true, IssuedAt: now, ExpiresAt: now.Add(time.Hour)},
		RotationPeriod: 2 * time.Minute, Jitter: 7 * time.Second,
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Put(v); err != nil {
			b.Fatal(err)
		}
	}
}

// A record write is plain system calls on the temp file (no os.File, no
// Stat or Lstat by path): 22 allocations for this record, 28 before.
func TestPutAllocs(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v := &Volume{Target: "/t", Role: "r", Session: &provider.Session{Token: "t"},
		Secrets: []provider.SecretInfo{{Path: "secret/data/a"}, {Path: "secret/data/b"}, {Path: "secret/data/c"}}}
	if n := testing.AllocsPerRun(20, func() {
		if err := s.Put(v); err != nil {
			t.Fatal(err)
		}
	}); n > 26 {
		t.Errorf("Put allocates %.0f times, want <= 26", n)
	}
	entries, _ := os.ReadDir(s.Dir())
	if len(entries) != 1 {
		t.Errorf("%d files after 21 writes of one record, want 1 (no temp file left)", len(entries))
	}
}
