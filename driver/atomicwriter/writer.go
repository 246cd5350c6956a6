// Package atomicwriter writes a set of files into a directory so that a
// reader sees either the whole old set or the whole new set, never a mix.
//
// The layout is kubelet's AtomicWriter's: files live in a timestamped payload
// directory "..<time>.<random>", the symlink "..data" points at the current
// payload, and each visible top-level name is a symlink into "..data". A swap
// is one rename(2) of a new "..data" over the old one.
package atomicwriter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	dataDirName    = "..data"
	newDataDirName = "..data_tmp"
)

// File is one file of a payload. Name is relative, clean and validated by
// the caller (attributes.CheckFileName).
type File struct {
	Name string
	Data []byte
	Mode os.FileMode
}

// Options set ownership of what is written.
type Options struct {
	// GID, when >= 0, is the group of payload files and directories.
	GID int
}

// Write makes dir hold exactly files. It reports whether anything changed:
// when the current payload already has the same names, bytes and modes,
// nothing is written. On error the previous payload stays in place.
//
// Every step works relative to dir, opened once: dir is often a
// /proc/self/fd path (the driver's symlink-free target), and a lookup
// through it per step was a third of a first write's CPU.
func Write(dir string, files []File, opts Options) (changed bool, err error) {
	files = sorted(files)
	if err := checkNames(files); err != nil {
		return false, err
	}
	d, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false, fmt.Errorf("open volume dir: %w", err)
	}
	defer func() { _ = d.Close() }() // read only: nothing to flush
	dfd := int(d.Fd())
	oldPayload, err := currentPayloadAt(dfd)
	if err != nil {
		return false, err
	}
	if oldPayload != "" && same(filepath.Join(dir, oldPayload), files, opts) {
		return false, nil
	}
	// One listing serves both clean-ups: the volume is written only under
	// the driver's per-target lock, so what is not listed now is ours.
	entries, err := d.ReadDir(-1)
	if err != nil {
		return false, fmt.Errorf("list volume dir: %w", err)
	}
	removeOrphansIn(dir, entries, oldPayload)

	payload, err := mkdirTempAt(dfd, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, fmt.Errorf("create payload dir: %w", err)
	}
	cleanup := func() { _ = os.RemoveAll(filepath.Join(dir, payload)) }
	if err := writePayload(dfd, payload, files, opts); err != nil {
		cleanup()
		return false, err
	}
	// Visible links first, then the swap: a new top-level name points into
	// ..data and resolves once ..data does.
	if err := linkVisible(dfd, files); err != nil {
		cleanup()
		return false, err
	}
	_ = unix.Unlinkat(dfd, newDataDirName, 0) // a leftover of a crash: only ever a symlink
	if err := unix.Symlinkat(payload, dfd, newDataDirName); err != nil {
		cleanup()
		return false, fmt.Errorf("create %s link: %w", newDataDirName, err)
	}
	if err := unix.Renameat(dfd, newDataDirName, dfd, dataDirName); err != nil {
		_ = unix.Unlinkat(dfd, newDataDirName, 0)
		cleanup()
		return false, fmt.Errorf("swap %s link: %w", dataDirName, err)
	}
	// After the swap, failures only leave garbage behind, never a mix.
	// The old payload stays until Prune (or the next changing Write): a
	// reader that resolved ..data just before the swap is still opening
	// files in it.
	if err := unlinkStale(dfd, entries, files); err != nil {
		return true, err
	}
	return true, nil
}

// mkdirTempAt creates a new directory prefix+<random> below dfd, as
// os.MkdirTemp does, and returns its name.
func mkdirTempAt(dfd int, prefix string) (string, error) {
	const tries = 10000 // os.MkdirTemp's bound
	for i := 0; i < tries; i++ {
		name := prefix + strconv.FormatUint(uint64(rand.Uint32()), 10) //nolint:gosec // a unique name, not a secret: mkdirat fails on a clash
		err := unix.Mkdirat(dfd, name, 0o700)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return "", err
		}
	}
	return "", fmt.Errorf("%d names taken", tries)
}

// Prune removes payloads that ..data no longer points at. The driver calls
// it on kubelet's next re-publish, long after any reader of the previous
// payload has opened its files, so an old secret does not linger.
func Prune(dir string) error {
	current, err := currentPayload(dir)
	if err != nil {
		return err
	}
	removeOrphans(dir, current)
	return nil
}

// Read returns the files of the current payload (nil when there is none).
func Read(dir string) ([]File, error) {
	payload, err := currentPayload(dir)
	if err != nil || payload == "" {
		return nil, err
	}
	root := filepath.Join(dir, payload)
	var files []File
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		// The payload is on the driver's own tmpfs, which pods see read-only:
		// no one else can swap a component for a symlink during the walk.
		data, err := os.ReadFile(p) //nolint:gosec // see above
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files = append(files, File{Name: filepath.ToSlash(rel), Data: data, Mode: info.Mode().Perm()})
		return nil
	})
	return files, err
}

func sorted(files []File) []File {
	out := append([]File(nil), files...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func checkNames(files []File) error {
	for i, f := range files {
		if f.Name == "" || filepath.IsAbs(f.Name) || filepath.Clean(f.Name) != f.Name ||
			strings.HasPrefix(f.Name, "..") || strings.Contains("/"+f.Name+"/", "/../") {
			return fmt.Errorf("invalid file name %q", f.Name)
		}
		if i > 0 && files[i-1].Name == f.Name {
			return fmt.Errorf("duplicate file name %q", f.Name)
		}
	}
	return nil
}

// currentPayload returns the payload dir name "..data" points at, or "".
func currentPayload(dir string) (string, error) {
	target, err := os.Readlink(filepath.Join(dir, dataDirName))
	return checkPayloadLink(target, err)
}

// currentPayloadAt is currentPayload for the directory dfd.
func currentPayloadAt(dfd int) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Readlinkat(dfd, dataDirName, buf)
	if err == nil && n == len(buf) {
		err = unix.ENAMETOOLONG // not a payload name of ours
	}
	if err != nil {
		return checkPayloadLink("", err)
	}
	return checkPayloadLink(string(buf[:n]), nil)
}

func checkPayloadLink(target string, err error) (string, error) {
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s link: %w", dataDirName, err)
	}
	if filepath.Base(target) != target || !strings.HasPrefix(target, "..") {
		return "", fmt.Errorf("%s points outside the volume", dataDirName)
	}
	return target, nil
}

func same(payload string, files []File, opts Options) bool {
	var n int
	err := filepath.WalkDir(payload, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil || n != len(files) {
		return false
	}
	for _, f := range files {
		p := filepath.Join(payload, f.Name)
		info, err := os.Lstat(p)
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm() != f.Mode.Perm() || info.Size() != int64(len(f.Data)) {
			return false
		}
		if opts.GID >= 0 && fileGID(info) != opts.GID {
			return false
		}
		data, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(data, f.Data) {
			return false
		}
	}
	return true
}

// writePayload fills the new payload dir named payload below dfd.
func writePayload(dfd int, payload string, files []File, opts Options) error {
	if err := unix.Fchmodat(dfd, payload, 0o755, 0); err != nil {
		return fmt.Errorf("chmod payload dir: %w", err)
	}
	if opts.GID >= 0 {
		if err := unix.Fchownat(dfd, payload, -1, opts.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown payload dir: %w", err)
		}
	}
	// Files are created relative to the payload dir, held open.
	pfd, err := unix.Openat(dfd, payload, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open payload dir: %w", err)
	}
	defer func() { _ = unix.Close(pfd) }() // an O_PATH descriptor: nothing to flush
	for _, f := range files {
		if err := mkdirs(pfd, filepath.Dir(f.Name), opts); err != nil {
			return err
		}
		if err := writeFileAt(pfd, f, opts); err != nil {
			return fmt.Errorf("write %s: %w", f.Name, err)
		}
	}
	return nil
}

// writeFileAt creates one payload file below the payload dir pfd.
// O_EXCL|O_NOFOLLOW: the payload dir is new, so anything already there is
// an attack or a bug.
func writeFileAt(pfd int, f File, opts Options) (err error) {
	fd, err := unix.Openat(pfd, f.Name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	defer func() {
		if cerr := unix.Close(fd); err == nil && cerr != nil {
			err = fmt.Errorf("close: %w", cerr)
		}
	}()
	for data := f.Data; len(data) > 0; { // bounded: each pass writes at least a byte or fails
		n, err := unix.Write(fd, data)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return io.ErrShortWrite
		}
		data = data[n:]
	}
	if opts.GID >= 0 {
		if err := unix.Fchown(fd, -1, opts.GID); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := unix.Fchmod(fd, uint32(f.Mode.Perm())); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// mkdirs creates rel's directories below the payload dir pfd.
func mkdirs(pfd int, rel string, opts Options) error {
	if rel == "." {
		return nil
	}
	cur := ""
	for _, c := range strings.Split(rel, "/") {
		cur = path.Join(cur, c)
		err := unix.Mkdirat(pfd, cur, 0o755)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("create dir %s: %w", rel, err)
		}
		if opts.GID >= 0 {
			if err := unix.Fchownat(pfd, cur, -1, opts.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("chown dir %s: %w", rel, err)
			}
		}
	}
	return nil
}

func topLevel(files []File) map[string]bool {
	names := make(map[string]bool, len(files))
	for _, f := range files {
		first, _, _ := strings.Cut(f.Name, "/")
		names[first] = true
	}
	return names
}

// linkVisible makes each top-level name a link into ..data, below dfd.
func linkVisible(dfd int, files []File) error {
	for name := range topLevel(files) {
		want := dataDirName + "/" + name
		// A new name (every name of a first write) is one symlink(2); only
		// a name that exists is read and, if it differs, replaced.
		err := unix.Symlinkat(want, dfd, name)
		if err == nil {
			continue
		}
		if !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("link %s: %w", name, err)
		}
		buf := make([]byte, len(want)+1)
		if n, err := unix.Readlinkat(dfd, name, buf); err == nil && string(buf[:n]) == want {
			continue
		}
		// Replace whatever is there (only our own links can be) atomically.
		tmp := ".." + name + ".tmp"
		if len(tmp) > 255 {
			tmp = "..link.tmp"
		}
		_ = unix.Unlinkat(dfd, tmp, 0) // a leftover of a crash: only ever a symlink
		if err := unix.Symlinkat(want, dfd, tmp); err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
		if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
			_ = unix.Unlinkat(dfd, tmp, 0)
			return fmt.Errorf("link %s: %w", name, err)
		}
	}
	return nil
}

// unlinkStale removes visible links whose names the new payload lacks;
// entries is the volume dir's listing from before the write (what the
// write added is all in files).
func unlinkStale(dfd int, entries []os.DirEntry, files []File) error {
	keep := topLevel(files)
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "..") || keep[name] || e.Type()&os.ModeSymlink == 0 {
			continue
		}
		if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale link %s: %w", name, err)
		}
	}
	return nil
}

// removeOrphans deletes payload dirs and temporary links a crashed earlier
// write left behind; none of them is reachable through ..data.
func removeOrphans(dir, current string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	removeOrphansIn(dir, entries, current)
}

// removeOrphansIn is removeOrphans on a listing of dir.
func removeOrphansIn(dir string, entries []os.DirEntry, current string) {
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "..") || name == dataDirName || name == current {
			continue
		}
		_ = os.RemoveAll(filepath.Join(dir, name))
	}
}
