package atomicwriter

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// noGID leaves ownership alone (tests that do not check groups).
var noGID = Options{GID: -1}

func mustWrite(t *testing.T, dir string, files []File, opts Options) bool {
	t.Helper()
	changed, err := Write(dir, files, opts)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	return changed
}

func payloadOf(t *testing.T, dir string) string {
	t.Helper()
	p, err := os.Readlink(filepath.Join(dir, dataDirName))
	if err != nil {
		t.Fatalf("readlink ..data: %v", err)
	}
	return p
}

// entries lists dir's top-level names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestFirstWriteLayout(t *testing.T) {
	need.Root(t, "chgrp to an arbitrary group")
	dir := t.TempDir()
	files := []File{
		{Name: "paypal-token", Data: []byte("tok"), Mode: 0o440},
		{Name: "db/password", Data: []byte("pw"), Mode: 0o400},
		{Name: "db/deep/creds.json", Data: []byte("{}"), Mode: 0o444},
	}
	if !mustWrite(t, dir, files, Options{GID: 1234}) {
		t.Fatal("first write reported no change")
	}
	payload := payloadOf(t, dir)
	if !strings.HasPrefix(payload, "..") || strings.Contains(payload, "/") {
		t.Fatalf("..data -> %q, want a ..<name> sibling", payload)
	}
	// Exactly: ..data, the payload and one link per top-level name.
	want := []string{dataDirName, payload, "db", "paypal-token"}
	sort.Strings(want)
	if got := entries(t, dir); !reflect.DeepEqual(got, want) {
		t.Errorf("entries = %v, want %v", got, want)
	}
	for name, target := range map[string]string{"db": "..data/db", "paypal-token": "..data/paypal-token"} {
		if got, err := os.Readlink(filepath.Join(dir, name)); err != nil || got != target {
			t.Errorf("link %s -> %q (%v), want %q", name, got, err, target)
		}
	}
	for _, f := range files {
		// Through the visible link, as a pod reads it.
		p := filepath.Join(dir, f.Name)
		data, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(data, f.Data) {
			t.Errorf("%s = %q, %v; want %q", f.Name, data, err, f.Data)
		}
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode() != f.Mode {
			t.Errorf("%s mode = %v, want %v", f.Name, info.Mode(), f.Mode)
		}
		if g := fileGID(info); g != 1234 {
			t.Errorf("%s gid = %d, want 1234", f.Name, g)
		}
	}
	// Directories the pod traverses need the group too.
	for _, d := range []string{payload, filepath.Join(payload, "db"), filepath.Join(payload, "db/deep")} {
		info, err := os.Lstat(filepath.Join(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		if !info.IsDir() || fileGID(info) != 1234 || info.Mode().Perm() != 0o755 {
			t.Errorf("%s: dir=%v gid=%d mode=%v, want dir 1234 0755", d, info.IsDir(), fileGID(info), info.Mode().Perm())
		}
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(byName(got), byName(files)) {
		t.Errorf("Read = %v, want %v", got, files)
	}
}

func byName(files []File) map[string]File {
	m := make(map[string]File, len(files))
	for _, f := range files {
		m[f.Name] = f
	}
	return m
}

func TestReadEmpty(t *testing.T) {
	files, err := Read(t.TempDir())
	if err != nil || files != nil {
		t.Errorf("Read of an empty dir = %v, %v; want nil, nil", files, err)
	}
}

func TestReadRejectsForeignDataLink(t *testing.T) {
	// A ..data pointing elsewhere is not ours; never follow it.
	for _, target := range []string{"/etc", "../x", "payload"} {
		dir := t.TempDir()
		if err := os.Symlink(target, filepath.Join(dir, dataDirName)); err != nil {
			t.Fatal(err)
		}
		if _, err := Read(dir); err == nil {
			t.Errorf("Read with ..data -> %q succeeded", target)
		}
		if _, err := Write(dir, []File{{Name: "a", Data: []byte("x"), Mode: 0o400}}, noGID); err == nil {
			t.Errorf("Write with ..data -> %q succeeded", target)
		}
	}
}

func TestWriteUnchanged(t *testing.T) {
	base := []File{
		{Name: "a", Data: []byte("1"), Mode: 0o440},
		{Name: "d/b", Data: []byte("2"), Mode: 0o400},
	}
	dir := t.TempDir()
	mustWrite(t, dir, base, noGID)
	payload := payloadOf(t, dir)
	before := entries(t, dir)
	ino := inode(t, filepath.Join(dir, payload, "d/b"))
	linkIno := inode(t, filepath.Join(dir, dataDirName))

	// Same files in another order: still the same payload.
	rev := []File{base[1], base[0]}
	if mustWrite(t, dir, rev, noGID) {
		t.Error("identical write reported a change")
	}
	if got := payloadOf(t, dir); got != payload {
		t.Errorf("payload %q replaced by %q", payload, got)
	}
	if got := entries(t, dir); !reflect.DeepEqual(got, before) {
		t.Errorf("entries %v became %v", before, got)
	}
	// Nothing was rewritten in place either.
	if inode(t, filepath.Join(dir, payload, "d/b")) != ino || inode(t, filepath.Join(dir, dataDirName)) != linkIno {
		t.Error("an unchanged write replaced files or the ..data link")
	}
}

func TestWriteDetectsChange(t *testing.T) {
	base := []File{
		{Name: "a", Data: []byte("1"), Mode: 0o440},
		{Name: "d/b", Data: []byte("2"), Mode: 0o400},
	}
	with := func(edit func([]File) []File) []File {
		return edit(append([]File(nil), base...))
	}
	tests := []struct {
		name  string
		files []File
		opts  Options
	}{
		{"content", with(func(f []File) []File { f[0].Data = []byte("9"); return f }), noGID},
		{"same size content", with(func(f []File) []File { f[1].Data = []byte("3"); return f }), noGID},
		{"mode", with(func(f []File) []File { f[0].Mode = 0o444; return f }), noGID},
		{"file added", with(func(f []File) []File { return append(f, File{Name: "c", Data: []byte{}, Mode: 0o400}) }), noGID},
		{"file removed", base[:1], noGID},
		{"file renamed", with(func(f []File) []File { f[0].Name = "z"; return f }), noGID},
		{"group", base, Options{GID: 4321}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.GID >= 0 {
				need.Root(t, "chgrp to an arbitrary group")
			}
			dir := t.TempDir()
			mustWrite(t, dir, base, noGID)
			if !mustWrite(t, dir, tt.files, tt.opts) {
				t.Fatal("change not detected")
			}
			got, err := Read(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(byName(got), byName(tt.files)) {
				t.Errorf("Read = %v, want %v", got, tt.files)
			}
		})
	}
}

// layout splits dir's entries into the current payload, other payload-like
// ".." entries (retired payloads and temporaries) and visible names.
func layout(t *testing.T, dir string) (current string, others, visible []string) {
	t.Helper()
	current = payloadOf(t, dir)
	for _, n := range entries(t, dir) {
		switch {
		case n == dataDirName || n == current:
		case strings.HasPrefix(n, ".."):
			others = append(others, n)
		default:
			visible = append(visible, n)
		}
	}
	return current, others, visible
}

func TestWriteSwap(t *testing.T) {
	dir := t.TempDir()
	v1 := []File{
		{Name: "keep", Data: []byte("k1"), Mode: 0o440},
		{Name: "gone", Data: []byte("g1"), Mode: 0o440},
		{Name: "db/password", Data: []byte("p1"), Mode: 0o440},
	}
	mustWrite(t, dir, v1, noGID)
	p1 := payloadOf(t, dir)

	v2 := []File{
		{Name: "keep", Data: []byte("k2"), Mode: 0o440},
		{Name: "new/x", Data: []byte("x2"), Mode: 0o440},
	}
	if !mustWrite(t, dir, v2, noGID) {
		t.Fatal("change not detected")
	}
	p2, others, visible := layout(t, dir)
	if p2 == p1 {
		t.Fatal("payload dir was reused")
	}
	// Names that disappeared lose their links, nested ones included.
	if want := []string{"keep", "new"}; !reflect.DeepEqual(visible, want) {
		t.Errorf("visible = %v, want %v", visible, want)
	}
	// At most the previous payload may linger (see
	// TestWritePreviousPayloadOutlivesSwap); nothing else.
	if len(others) > 1 || len(others) == 1 && others[0] != p1 {
		t.Errorf("leftovers %v after the swap", others)
	}
	for _, f := range v2 {
		if data, err := os.ReadFile(filepath.Join(dir, f.Name)); err != nil || !bytes.Equal(data, f.Data) {
			t.Errorf("%s = %q, %v; want %q", f.Name, data, err, f.Data)
		}
	}

	// Payloads never pile up: two changes on, the first payload is gone.
	mustWrite(t, dir, v1, noGID)
	if _, err := os.Lstat(filepath.Join(dir, p1)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("payload %s still there two versions later: %v", p1, err)
	}
	if _, others, _ := layout(t, dir); len(others) > 1 || len(others) == 1 && others[0] != p2 {
		t.Errorf("leftovers %v after the second swap", others)
	}
}

// TestWritePreviousPayloadOutlivesSwap: open("dir/s") resolves ..data to a
// payload and then looks s up inside it. A writer that deletes the old
// payload right after the swap can run between those two steps, and the
// reader gets ENOENT for a file both versions have (TestConcurrentReaders
// catches this now and then). This models the interleaving deterministically:
// resolve, write, look up.
func TestWritePreviousPayloadOutlivesSwap(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, dir, version(1), noGID)
	resolved := payloadOf(t, dir)
	mustWrite(t, dir, version(2), noGID)
	data, err := os.ReadFile(filepath.Join(dir, resolved, "s"))
	if err != nil {
		t.Fatalf("a reader that resolved ..data just before the swap fails: %v", err)
	}
	if k, whole := parseVersion("s", data); !whole || k != 1 {
		t.Errorf("old payload holds v%d (whole=%v), want v1", k, whole)
	}
}

func TestWriteLeavesForeignEntries(t *testing.T) {
	// unlinkStale removes only symlinks: a stray regular file or dir is not
	// the writer's to delete.
	dir := t.TempDir()
	mustWrite(t, dir, []File{{Name: "a", Data: []byte("1"), Mode: 0o400}}, noGID)
	if err := os.WriteFile(filepath.Join(dir, "stray"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, dir, []File{{Name: "b", Data: []byte("1"), Mode: 0o400}}, noGID)
	if _, err := os.Lstat(filepath.Join(dir, "stray")); err != nil {
		t.Errorf("stray file removed: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale link a kept: %v", err)
	}
}

func TestWriteRemovesCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, dir, []File{{Name: "a", Data: []byte("1"), Mode: 0o400}}, noGID)
	prev := payloadOf(t, dir)
	// What a writer killed at each step leaves: a filled payload dir that
	// never got swapped in, a ..data_tmp link, a visible-link temp.
	orphan := filepath.Join(dir, "..2020_01_01_00_00_00.123456")
	if err := os.MkdirAll(filepath.Join(orphan, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(orphan, "sub", "f"), []byte("old"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(orphan), filepath.Join(dir, newDataDirName)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/b", filepath.Join(dir, "..b.tmp")); err != nil {
		t.Fatal(err)
	}

	mustWrite(t, dir, []File{{Name: "b", Data: []byte("2"), Mode: 0o400}}, noGID)
	_, others, visible := layout(t, dir)
	// Only the payload that was current before this write may remain.
	if len(others) > 1 || len(others) == 1 && others[0] != prev {
		t.Errorf("crash leftovers kept: %v", others)
	}
	if want := []string{"b"}; !reflect.DeepEqual(visible, want) {
		t.Errorf("visible = %v, want %v", visible, want)
	}
}

func TestWriteRejects(t *testing.T) {
	ok := File{Name: "ok", Data: []byte("1"), Mode: 0o400}
	tests := []struct {
		name  string
		files []File
	}{
		{"empty name", []File{{Name: ""}}},
		{"absolute", []File{{Name: "/etc/passwd"}}},
		{"dotdot", []File{{Name: ".."}}},
		{"dotdot inside", []File{{Name: "a/../../b"}}},
		{"dotdot prefix", []File{{Name: "../b"}}},
		{"reserved ..data", []File{{Name: "..data"}}},
		{"reserved ..x/y", []File{{Name: "..x/y"}}},
		{"not clean //", []File{{Name: "a//b"}}},
		{"not clean ./", []File{{Name: "./a"}}},
		{"not clean trailing /", []File{{Name: "a/"}}},
		{"root", []File{{Name: "."}}},
		{"duplicate", []File{{Name: "a"}, {Name: "a"}}},
		{"file and dir", []File{{Name: "a"}, {Name: "a/b"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			mustWrite(t, dir, []File{ok}, noGID)
			payload := payloadOf(t, dir)
			before := entries(t, dir)
			files := append([]File{ok}, tt.files...)
			for i := range files {
				files[i].Mode = 0o400
			}
			if changed, err := Write(dir, files, noGID); err == nil || changed {
				t.Fatalf("Write = %v, %v; want an error", changed, err)
			}
			// On error the previous payload stays and nothing is left over.
			if got := payloadOf(t, dir); got != payload {
				t.Errorf("payload %s replaced by %s", payload, got)
			}
			if got := entries(t, dir); !reflect.DeepEqual(got, before) {
				t.Errorf("entries %v became %v", before, got)
			}
		})
	}
}

// Concurrent readers.
//
// Version k of the payload has every file hold content(k, name). "s" and
// "n/s" are in every version; "opt" comes and goes every 5 versions and
// "dir/x" (a nested file, so the visible link "dir" comes and goes too)
// every 7.

var allNames = []string{"s", "n/s", "opt", "dir/x"}

func has(k int, name string) bool {
	switch name {
	case "opt":
		return (k/5)%2 == 0
	case "dir/x":
		return (k/7)%2 == 1
	}
	return true
}

// content is several pages long so that a torn write would show.
func content(k int, name string) []byte {
	head := fmt.Sprintf("v%d %s\n", k, name)
	return []byte(head + strings.Repeat(fmt.Sprintf("%d", k%10), 3*4096) + "\nend v" + fmt.Sprint(k) + "\n")
}

func version(k int) []File {
	var files []File
	for _, n := range allNames {
		if has(k, n) {
			files = append(files, File{Name: n, Data: content(k, n), Mode: 0o444})
		}
	}
	return files
}

// parseVersion returns the version a file claims and whether its whole body
// is exactly that version's content.
func parseVersion(name string, data []byte) (int, bool) {
	var k int
	var n string
	if _, err := fmt.Sscanf(string(data), "v%d %s\n", &k, &n); err != nil {
		return -1, false
	}
	return k, n == name && bytes.Equal(data, content(k, name))
}

func TestConcurrentReaders(t *testing.T) {
	t.Run("tempdir", func(t *testing.T) { testConcurrentReaders(t, t.TempDir()) })
	t.Run("tmpfs", func(t *testing.T) { testConcurrentReaders(t, mountTmpfs(t)) })
}

func mountTmpfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("test", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "size=16m"); err != nil {
		if errors.Is(err, syscall.EPERM) {
			need.Missing(t, "mounting tmpfs needs root")
		}
		t.Fatalf("mount tmpfs: %v", err)
	}
	// Registered after TempDir's cleanup, so it runs first.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func testConcurrentReaders(t *testing.T, dir string) {
	const rotations = 300
	mustWrite(t, dir, version(0), noGID)

	// started is the newest version a Write has begun, done the newest one
	// it finished: anything a reader sees between loading done and loading
	// started afterwards is a version in [done, started].
	var started, done, passes atomic.Int64
	stop := make(chan struct{})
	var failures atomic.Int64
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	allHave := func(lo, hi int, name string) bool {
		for k := lo; k <= hi; k++ {
			if !has(k, name) {
				return false
			}
		}
		return true
	}

	var wg sync.WaitGroup
	// Reader 1, through the visible links as a pod opens them. Proves, per
	// file: never a torn or foreign body (each read is exactly one
	// version's content), never a version outside the window of the read,
	// and never ENOENT for a file that every version in that window has,
	// as long as the read overlapped at most one swap. (The payload a
	// reader resolved is kept until the next changing Write begins, so a
	// reader stalled across two whole writes can find it gone; the driver
	// writes at most once per re-publish, seconds apart.)
	// It cannot prove consistency across files: each open resolves ..data
	// anew, so two files of one pass may legitimately differ.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, name := range allNames {
				lo := int(done.Load())
				data, err := os.ReadFile(filepath.Join(dir, name))
				hi := int(started.Load())
				switch {
				case errors.Is(err, fs.ErrNotExist):
					if hi < lo+2 && allHave(lo, hi, name) {
						fail("visible %s: missing, yet every version in [%d, %d] has it", name, lo, hi)
					}
				case err != nil:
					fail("visible %s: %v", name, err)
				default:
					k, whole := parseVersion(name, data)
					if !whole {
						fail("visible %s: torn or foreign content (%d bytes, claims v%d)", name, len(data), k)
					} else if k < lo || k > hi || !has(k, name) {
						fail("visible %s: saw v%d outside [%d, %d]", name, k, lo, hi)
					}
				}
			}
			passes.Add(1)
			runtime.Gosched() // two CPUs are enough to interleave with the writer
		}
	}()

	// Reader 2 resolves ..data once per pass and reads every file inside
	// that payload. Proves the swap is atomic across files: one pass sees
	// exactly one version's set of files, all of the same version, never a
	// mix. A pass whose payload was retired (and so is being deleted) while
	// it read may lose files; it is discarded only if ..data has moved on.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			payload, err := os.Readlink(filepath.Join(dir, dataDirName))
			if err != nil {
				fail("readlink ..data: %v", err)
				continue
			}
			seen := map[string]int{}
			var missing []string
			for _, name := range allNames {
				data, err := os.ReadFile(filepath.Join(dir, payload, name))
				if errors.Is(err, fs.ErrNotExist) {
					missing = append(missing, name)
					continue
				}
				if err != nil {
					fail("payload %s/%s: %v", payload, name, err)
					continue
				}
				k, whole := parseVersion(name, data)
				if !whole {
					fail("payload %s/%s: torn or foreign content", payload, name)
				}
				seen[name] = k
			}
			pass := -1
			for name, k := range seen {
				if pass >= 0 && k != pass {
					fail("payload %s mixes versions: %v", payload, seen)
					break
				}
				pass = k
				if !has(k, name) {
					fail("payload %s has %s, which v%d lacks", payload, name, k)
				}
			}
			if len(missing) > 0 {
				now, _ := os.Readlink(filepath.Join(dir, dataDirName))
				if now == payload && pass < 0 {
					fail("payload %s, still current, has no files", payload)
				}
				if now == payload && pass >= 0 {
					for _, name := range missing {
						if has(pass, name) {
							fail("payload %s (v%d, still current) lacks %s", payload, pass, name)
						}
					}
				}
			}
			passes.Add(1)
			runtime.Gosched() // two CPUs are enough to interleave with the writer
		}
	}()

	for k := 1; k <= rotations; k++ {
		// Let the readers finish at least one pass per version, so every
		// swap happens while they are busy; no timing involved.
		for p := passes.Load(); passes.Load() < p+2 && failures.Load() == 0; {
			runtime.Gosched()
		}
		started.Store(int64(k))
		if _, err := Write(dir, version(k), noGID); err != nil {
			fail("Write v%d: %v", k, err)
			break
		}
		done.Store(int64(k))
	}
	close(stop)
	wg.Wait()
	t.Logf("%d rotations, %d reader passes", rotations, passes.Load())

	// The last version is what remains, and only it.
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(byName(got), byName(version(rotations))) {
		t.Errorf("final Read differs from v%d", rotations)
	}
	// The final version's links and at most one retired payload; no
	// temporaries.
	_, others, visible := layout(t, dir)
	if len(visible) != len(topLevel(version(rotations))) || len(others) > 1 {
		t.Errorf("entries = %v", entries(t, dir))
	}
}

// A first write works relative to the volume dir opened once, as the
// driver names it (through its parent held open, a /proc/self/fd path):
// a lookup through that path per step cost twice the allocations
// (70 for 3 files with a group, 37 relative to the dir).
func TestFirstWriteRelativeToDir(t *testing.T) {
	root := t.TempDir()
	parent, err := os.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	held := fmt.Sprintf("/proc/self/fd/%d", parent.Fd())
	files := []File{{Name: "a", Data: []byte("1"), Mode: 0o440}, {Name: "b", Data: []byte("2"), Mode: 0o440}, {Name: "c", Data: []byte("3"), Mode: 0o440}}
	gid := os.Getgid()
	i := 0
	allocs := testing.AllocsPerRun(20, func() {
		i++
		dir := filepath.Join(held, fmt.Sprint(i))
		if err := os.Mkdir(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		if _, err := Write(dir, files, Options{GID: gid}); err != nil {
			t.Fatal(err)
		}
	})
	// The Mkdir above and the Join are 2 of them.
	if allocs > 45 {
		t.Errorf("a first write of 3 files allocates %.0f times, want <= 45", allocs)
	}
	got, err := Read(filepath.Join(root, fmt.Sprint(i)))
	if err != nil || !reflect.DeepEqual(got, files) {
		t.Errorf("Read = %v, %v; want %v", got, err, files)
	}
}
