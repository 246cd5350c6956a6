// Package state remembers, per mounted volume, what the driver needs after a
// restart: when it last fetched, which leases and KV versions it holds, and
// the Vault token to revoke on unpublish. It never holds a secret value.
//
// Records live as one JSON file per volume in a root-only directory that the
// driver keeps on tmpfs (--state-dir, /run/vault-csi-driver by default): they
// survive a driver restart but never reach disk, and vanish on a node reboot
// together with the volumes they describe. The Vault token in a record is a
// credential; only root on the node can read it, as it could read the
// volume itself.
package state

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"vaultcsi.dev/driver/provider"
)

// Volume is what the driver remembers about one mounted target. Its file
// form is record (record.go): convert there, never encode a Volume.
type Volume struct {
	Target   string
	VolumeID string
	Pod      provider.Identity
	Role     string
	// RequestHash identifies the pod's attributes (not its token): a change
	// means the volume must be fetched again.
	RequestHash string
	FetchedAt   time.Time
	Secrets     []provider.SecretInfo
	Session     *provider.Session
	// RotationPeriod is this volume's effective period.
	RotationPeriod time.Duration
	// Jitter shifts this volume's refreshes so that pods started together
	// do not refresh together.
	Jitter time.Duration
	// Failures counts consecutive failed refreshes; NextAttempt is when the
	// backoff allows the next one.
	Failures    int
	NextAttempt time.Time
	LastError   string
	// PrunePending is set when a swap left the previous payload behind for
	// readers still in it; the next re-publish removes it.
	PrunePending bool
	// Pending marks a first publish in progress: written right after login
	// and before anything is mounted, so that a driver killed at any point
	// of it leaves the new Vault token on record. It is cleared when the
	// files are in place; a retry finds it and redoes the publish.
	Pending bool
	// Incoming is a token a refresh logged in for, on record from the login
	// until the refresh adopts it (as Session) or lets it go: a driver
	// killed in between leaves it here, and the next start revokes it.
	Incoming *provider.Session
}

// Store keeps records in a directory, with a write-through cache in memory:
// kubelet's periodic re-publish reads a record far more often than it
// changes, and decoding the file was a top cost of a re-publish.
type Store struct {
	dir   string
	mu    sync.Mutex
	cache map[string]cached // by file name; values are never handed out
}

// cached is a decoded record and the file identity it was decoded from: a
// record changed behind the driver's back (by an operator or a test) is
// read again.
type cached struct {
	v     *Volume
	mtime time.Time
	size  int64
}

// Open creates the directory (0700) if needed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	return &Store{dir: dir, cache: make(map[string]cached)}, nil
}

// clone copies a record so callers can change theirs freely.
func clone(v *Volume) *Volume {
	c := *v
	c.Secrets = append([]provider.SecretInfo(nil), v.Secrets...)
	if v.Session != nil {
		s := *v.Session
		c.Session = &s
	}
	if v.Incoming != nil {
		s := *v.Incoming
		c.Incoming = &s
	}
	return &c
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Path is the file that holds a target's record (for tests and tools that
// place a record of an earlier format).
func (s *Store) Path(target string) string { return s.file(target) }

func (s *Store) file(target string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(target)))
	return filepath.Join(s.dir, hex.EncodeToString(sum[:16])+".json")
}

// Get returns the record of a target, or nil when there is none.
func (s *Store) Get(target string) (*Volume, error) {
	v, err := s.cachedRecord(s.file(target))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state of %s: %w", target, err)
	}
	if filepath.Clean(v.Target) != filepath.Clean(target) {
		return nil, fmt.Errorf("state of %s names another target", target)
	}
	return clone(v), nil
}

// Put writes a record atomically (temp file + rename).
func (s *Store) Put(v *Volume) error {
	b, err := encodeVolume(v)
	if err != nil {
		return fmt.Errorf("save state of %s: %w", v.Target, err)
	}
	name := s.file(v.Target)
	st, err := writeAtomic(name, b)
	if err != nil {
		s.mu.Lock()
		delete(s.cache, name) // the file is the truth; reread it next time
		s.mu.Unlock()
		return fmt.Errorf("save state of %s: %w", v.Target, err)
	}
	s.rememberAs(name, v, st)
	return nil
}

// writeAtomic replaces name with b: a temp file in the same directory,
// then rename(2), so a reader (or a driver restarted after a crash) sees
// the old record or the new one, never a torn one. It returns the file's
// identity for the cache, read from the open file. Plain system calls: an
// os.File (its poller registration, Rename's Lstat, a Stat by path) was a
// third of a record write, two of which sit on every first publish.
func writeAtomic(name string, b []byte) (stamp, error) {
	dir := filepath.Dir(name)
	var (
		tmp string
		fd  int
		err error
	)
	for i := 0; i < 100; i++ { // os.CreateTemp's names; a clash is a leftover of a crash
		tmp = filepath.Join(dir, ".tmp-"+strconv.FormatUint(uint64(rand.Uint32()), 10)) //nolint:gosec // a unique name, not a secret: O_EXCL fails on a clash
		fd, err = unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if !errors.Is(err, unix.EEXIST) {
			break
		}
	}
	if err != nil {
		return stamp{}, &os.PathError{Op: "open", Path: tmp, Err: err}
	}
	err = writeAll(fd, b)
	var st unix.Stat_t
	if err == nil {
		err = unix.Fstat(fd, &st) // rename(2) keeps mtime and size
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = cerr
	}
	if err == nil {
		if rerr := unix.Rename(tmp, name); rerr != nil {
			err = &os.LinkError{Op: "rename", Old: tmp, New: name, Err: rerr}
		}
	}
	if err != nil {
		_ = unix.Unlink(tmp)
		return stamp{}, err
	}
	return stamp{mtime: time.Unix(st.Mtim.Unix()), size: st.Size}, nil
}

// writeAll writes b to fd; bounded: each pass writes a byte or fails.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if n <= 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

// stamp is a record file's identity: a record changed behind the
// driver's back (by an operator or a test) is read again.
type stamp struct {
	mtime time.Time
	size  int64
}

func (s *Store) remember(name string, v *Volume) {
	info, err := os.Stat(name)
	if err != nil {
		s.mu.Lock()
		delete(s.cache, name)
		s.mu.Unlock()
		return
	}
	s.rememberAs(name, v, stamp{mtime: info.ModTime(), size: info.Size()})
}

func (s *Store) rememberAs(name string, v *Volume, st stamp) {
	c := clone(v)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cache[name] = cached{v: c, mtime: st.mtime, size: st.size}
}

// Delete removes a target's record; a missing one is fine.
func (s *Store) Delete(target string) error {
	name := s.file(target)
	s.mu.Lock()
	delete(s.cache, name)
	s.mu.Unlock()
	err := os.Remove(name)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete state of %s: %w", target, err)
	}
	return nil
}

// List returns every record (for metrics after a restart).
func (s *Store) List() ([]*Volume, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []*Volume
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			continue
		}
		if v, err := decodeVolume(b); err == nil {
			out = append(out, v)
		}
	}
	return out, nil
}
