package policy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	policyA = "rules: [{name: rule-a, effect: allow, paths: ['**']}]"
	policyB = "rules: [{name: rule-b, effect: allow, paths: ['**']}]"
	policyC = "rules: [{name: rule-c, effect: allow, paths: ['**']}]"
	badDoc  = "rules: [{name: rule-x, effect: maybe}]"
)

// writeAtomic replaces path the way an editor or kubelet would, so that the
// watcher never reads half a file.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startWatcher runs a fast-polling watcher whose reports arrive on the
// returned channel; it is stopped when the test ends.
func startWatcher(t *testing.T, path string) (*Watcher, <-chan error) {
	t.Helper()
	reports := make(chan error, 16)
	w, err := NewWatcher(path, 5*time.Millisecond, func(err error) { reports <- err })
	if err != nil {
		t.Fatalf("NewWatcher: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not stop after cancel")
		}
	})
	return w, reports
}

func nextReport(t *testing.T, reports <-chan error) error {
	t.Helper()
	select {
	case err := <-reports:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no reload reported")
		return nil
	}
}

func ruleOf(w *Watcher) string { return w.Current().Decide(Subject{Paths: []string{"x"}}).Rule }

func TestWatcherReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomic(t, path, policyA)
	w, reports := startWatcher(t, path)
	if got := ruleOf(w); got != "rule-a" {
		t.Fatalf("initial rule %q", got)
	}

	steps := []struct {
		name    string
		change  func()
		wantErr string // "" means a successful reload
		rule    string // in force afterwards
	}{
		{"good reload", func() { writeAtomic(t, path, policyB) }, "", "rule-b"},
		{"bad reload keeps last good", func() { writeAtomic(t, path, badDoc) }, `effect: "maybe"`, "rule-b"},
		{"file removed keeps last good", func() { os.Remove(path) }, "no such file", "rule-b"},
		{"recovery", func() { writeAtomic(t, path, policyC) }, "", "rule-c"},
	}
	for _, st := range steps {
		st.change()
		err := nextReport(t, reports)
		switch {
		case st.wantErr == "" && err != nil:
			t.Fatalf("%s: reload error %v", st.name, err)
		case st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)):
			t.Fatalf("%s: reload error %v, want %q", st.name, err, st.wantErr)
		}
		if got := ruleOf(w); got != st.rule {
			t.Fatalf("%s: rule in force %q, want %q", st.name, got, st.rule)
		}
	}
	// Unchanged content is not reported again.
	select {
	case err := <-reports:
		t.Fatalf("unexpected report %v", err)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestWatcherConfigMapSwap updates the file the way kubelet updates a
// ConfigMap volume: policy.yaml -> ..data/policy.yaml, ..data -> ..<timestamp>,
// and an update renames a new ..data symlink over the old one.
func TestWatcherConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, content string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "policy.yaml"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	swap := func(name string) {
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_11_24_10_00_00.1", policyA)
	swap("..2026_11_24_10_00_00.1")
	if err := os.Symlink("..data/policy.yaml", filepath.Join(dir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}

	w, reports := startWatcher(t, filepath.Join(dir, "policy.yaml"))
	version("..2026_11_24_10_05_00.2", policyB)
	swap("..2026_11_24_10_05_00.2")
	os.RemoveAll(filepath.Join(dir, "..2026_11_24_10_00_00.1"))
	if err := nextReport(t, reports); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if got := ruleOf(w); got != "rule-b" {
		t.Fatalf("rule in force %q after the swap", got)
	}
}

func TestNewWatcherErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeAtomic(t, bad, badDoc)
	big := filepath.Join(dir, "big.yaml")
	writeAtomic(t, big, "# "+strings.Repeat("x", MaxFileSize))
	tests := []struct{ path, want string }{
		{filepath.Join(dir, "missing.yaml"), "no such file"},
		{bad, "effect"},
		{big, "larger than"},
	}
	for _, tt := range tests {
		_, err := NewWatcher(tt.path, time.Second, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewWatcher(%s) = %v, want %q", filepath.Base(tt.path), err, tt.want)
		}
	}
}

// A file that becomes readable again with the content already in force must
// be reported as a good reload: the last report said "failed", and a
// failure gauge fed by the reports would otherwise stay raised for good.
// The same content coming back after a bad parse stays a failure.
func TestWatcherRecoveryReported(t *testing.T) {
	tests := []struct {
		name    string
		before  string // content in force before the file disappears
		wantErr bool   // whether the recovery is reported as a failure
	}{
		{"good content back", policyA, false},
		{"bad content back", badDoc, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "policy.yaml")
			writeAtomic(t, path, policyA)
			_, reports := startWatcher(t, path)
			if tt.before != policyA {
				writeAtomic(t, path, tt.before)
				if err := nextReport(t, reports); err == nil {
					t.Fatal("bad content reported as good")
				}
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := nextReport(t, reports); err == nil || !strings.Contains(err.Error(), "no such file") {
				t.Fatalf("removal reported as %v", err)
			}
			writeAtomic(t, path, tt.before)
			err := nextReport(t, reports)
			if (err != nil) != tt.wantErr {
				t.Fatalf("recovery reported as %v, want error=%v", err, tt.wantErr)
			}
		})
	}
}
