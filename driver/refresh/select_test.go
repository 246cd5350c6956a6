package refresh

import (
	"slices"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider"
	"vaultcsi.dev/driver/provider/render"
)

func TestSelectSpecs(t *testing.T) {
	tmpl, err := render.Parse("t", `{{ (secret "kv/app").x }}{{ (secret "db/creds/app").username }}`)
	if err != nil {
		t.Fatal(err)
	}
	kvOnly, _ := render.Parse("k", `{{ (secret "kv/app").x }}{{ (secret "kv/other").y }}`)
	specs := []provider.SecretSpec{
		{File: "mixed", Template: "t", Tmpl: tmpl},            // kv/app + db/creds/app
		{File: "user", Path: "db/creds/app", Key: "username"}, // shares the credential
		{File: "plain", Path: "kv/app", Key: "x"},
		{File: "kvt", Template: "k", Tmpl: kvOnly}, // kv/app + kv/other
		{File: "other", Path: "kv/other", Key: "y"},
		{File: "p12", Path: "pki/issue/web", Args: map[string]string{"common_name": "a"}, Format: render.FormatPKCS12,
			PasswordFrom: &provider.FieldRef{Path: "kv/pw", Key: "pw"}},
		{File: "pem", Path: "pki/issue/web", Args: map[string]string{"common_name": "a"}, Format: render.FormatPEMBundle},
	}
	leased := map[string]bool{"db/creds/app": true, "pki/issue/web": true}
	all := func(string) bool { return true }
	for _, tc := range []struct {
		name  string
		due   []string
		have  func(string) bool
		files []string
		reads []string
	}{
		// A KV change re-renders KV-only templates and re-reads their other
		// KV paths, never a leased path: that would mint a credential.
		{"kv due", []string{"kv/app"}, all, []string{"plain", "kvt", "other"}, []string{"kv/app", "kv/other"}},
		// A new database credential re-renders everything that shows it.
		{"lease due", []string{"db/creds/app"}, all, []string{"mixed", "user", "plain", "kvt", "other"}, []string{"db/creds/app", "kv/app", "kv/other"}},
		// A new password alone waits for the next certificate.
		{"password due", []string{"kv/pw"}, all, nil, []string{"kv/pw"}},
		{"cert due", []string{"pki/issue/web"}, all, []string{"p12", "pem"}, []string{"kv/pw", "pki/issue/web"}},
		{"missing file", nil, func(f string) bool { return f != "user" }, []string{"mixed", "user", "plain", "kvt", "other"}, []string{"db/creds/app", "kv/app", "kv/other"}},
		{"nothing due", nil, all, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fetch := map[string]bool{}
			for _, p := range tc.due {
				fetch[p] = true
			}
			var files []string
			for _, s := range selectSpecs(specs, fetch, tc.have, leased) {
				files = append(files, s.File)
			}
			var reads []string
			for p := range fetch {
				reads = append(reads, p)
			}
			slices.Sort(reads)
			if !slices.Equal(files, tc.files) || !slices.Equal(reads, tc.reads) {
				t.Fatalf("files %v reads %v, want %v %v", files, reads, tc.files, tc.reads)
			}
		})
	}
}

// A due password whose keystore waits for its certificate starts a new
// period rather than being due on every re-publish.
func TestDeferUnread(t *testing.T) {
	old := time.Unix(1000, 0)
	now := time.Unix(5000, 0)
	infos := []provider.SecretInfo{{Path: "kv/pw", FetchedAt: old}, {Path: "kv/app", FetchedAt: old}, {Path: "pki/issue/web", FetchedAt: old, LeaseDuration: time.Hour}}
	selected := []provider.SecretSpec{{File: "plain", Path: "kv/app", Key: "x"}}
	deferUnread(infos, selected, map[string]bool{"kv/pw": true, "kv/app": true}, now)
	if !infos[0].FetchedAt.Equal(now) || !infos[1].FetchedAt.Equal(old) || !infos[2].FetchedAt.Equal(old) {
		t.Fatalf("fetched at: %v %v %v", infos[0].FetchedAt, infos[1].FetchedAt, infos[2].FetchedAt)
	}
}
