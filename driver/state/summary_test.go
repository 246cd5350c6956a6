package state

import (
	"os"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider"
)

func TestSummarize(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		vols       []*Volume
		failing    int
		lease, tkn time.Time
	}{
		{name: "none"},
		{name: "healthy volumes count for nothing", vols: []*Volume{
			{Target: "/a", FetchedAt: t0, Secrets: []provider.SecretInfo{{Path: "db/creds/x", LeaseID: "l1", LeaseDuration: time.Minute}},
				Session: &provider.Session{ExpiresAt: t0.Add(time.Minute)}},
		}},
		{name: "failing KV volume: no expiry", vols: []*Volume{
			{Target: "/a", FetchedAt: t0, Failures: 3, Secrets: []provider.SecretInfo{{Path: "secret/data/x", Version: 2}},
				Session: &provider.Session{ExpiresAt: t0.Add(time.Hour)}},
		}, failing: 1},
		{name: "earliest lease and token among failing volumes", vols: []*Volume{
			{Target: "/a", FetchedAt: t0, Failures: 1,
				Secrets: []provider.SecretInfo{
					{Path: "db/creds/x", LeaseID: "l1", LeaseDuration: time.Hour, FetchedAt: t0.Add(time.Minute)},
					{Path: "pki/issue/x", LeaseDuration: 30 * time.Minute}, // a certificate: no lease id, measured from the volume's fetch
				},
				Session: &provider.Session{ExpiresAt: t0.Add(2 * time.Hour)}},
			{Target: "/b", FetchedAt: t0, Failures: 2,
				Secrets: []provider.SecretInfo{{Path: "db/creds/y", LeaseID: "l2", LeaseDuration: 45 * time.Minute}},
				Session: &provider.Session{ExpiresAt: t0.Add(90 * time.Minute)}},
			{Target: "/c", FetchedAt: t0, // healthy, sooner: ignored
				Secrets: []provider.SecretInfo{{Path: "db/creds/z", LeaseID: "l3", LeaseDuration: time.Minute}},
				Session: &provider.Session{ExpiresAt: t0.Add(time.Minute)}},
		}, failing: 2, lease: t0.Add(30 * time.Minute), tkn: t0.Add(90 * time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range tt.vols {
				if err := s.Put(v); err != nil {
					t.Fatal(err)
				}
			}
			// A second store on the same dir decodes the files (no cache).
			for _, st := range []*Store{s, mustOpen(t, s.Dir())} {
				got, err := st.Summarize()
				if err != nil {
					t.Fatal(err)
				}
				if got.Volumes != len(tt.vols) || got.RefreshFailing != tt.failing ||
					!got.LeaseExpiry.Equal(tt.lease) || !got.TokenExpiry.Equal(tt.tkn) {
					t.Errorf("Summarize = %+v, want %d volumes, %d failing, lease %v, token %v",
						got, len(tt.vols), tt.failing, tt.lease, tt.tkn)
				}
			}
		})
	}
}

// A record that cannot be read is an error, not a healthy volume.
func TestSummarizeUnreadable(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	if err := os.WriteFile(s.Dir()+"/0123.json", []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Summarize(); err == nil {
		t.Error("a corrupt record was summarized as healthy")
	}
}

func mustOpen(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
