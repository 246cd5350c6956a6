package tmpfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Errors of Resolve that describe the path (the caller maps them to codes).
var (
	// ErrSymlink: some component of the path is a symbolic link.
	ErrSymlink = errors.New("a component of the path is a symbolic link")
	// ErrOutside: the path is not below the root it must be resolved in.
	ErrOutside = errors.New("the path is not below the root")
	// ErrNotDir: some component above the last is not a directory.
	ErrNotDir = errors.New("a component of the path is not a directory")
)

// Target is a mount target whose parent directory was reached with no
// symbolic link in any component, and is held open. Every operation on the
// target goes through that open directory (Path, Mkdir, Mount, Remove), so
// a component swapped for a symlink after Resolve cannot redirect a mount
// or a write: the kernel resolves /proc/self/fd/N to the directory that
// was checked, whatever its path now leads to.
type Target struct {
	parent *os.File
	name   string
}

// resolveFlags: no symlink (magic links included) anywhere; with a root,
// nothing above it either.
const resolveFlags = unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// forceWalk makes Resolve use the per-component walk that serves kernels
// without openat2 (before 5.6); tests set it to cover that path.
var forceWalk = false

// Resolve opens the parent of target, an absolute clean path, refusing a
// symbolic link in any component and as the target itself. With a root,
// target must be below root and is resolved beneath it (root itself may
// be reached through links: it is the admin's configuration, not a pod's).
// Without a root it is resolved from /. A target that does not exist yet
// is fine; a parent that does not exist is an error wrapping
// os.ErrNotExist. The caller must Close the Target.
func Resolve(root, target string) (*Target, error) {
	if !filepath.IsAbs(target) || filepath.Clean(target) != target || target == "/" {
		return nil, fmt.Errorf("%q: must be absolute, clean and not /", target)
	}
	if root == "" {
		root = "/"
	}
	root = filepath.Clean(root)
	rel, err := filepath.Rel(root, target)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, ErrOutside
	}
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", root, err)
	}
	defer unix.Close(rootFD)

	dir, name := filepath.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	fd, err := openBeneath(rootFD, dir)
	if err != nil {
		return nil, pathErr(err, filepath.Join(root, dir))
	}
	var st unix.Stat_t
	switch err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
		unix.Close(fd)
		return nil, ErrSymlink
	case err != nil && !errors.Is(err, unix.ENOENT):
		unix.Close(fd)
		return nil, fmt.Errorf("stat %s: %w", target, err)
	}
	return &Target{parent: os.NewFile(uintptr(fd), filepath.Join(root, dir)), name: name}, nil
}

// openBeneath opens the directory rel ("" for the root itself) below
// rootFD with no symlink in any component.
func openBeneath(rootFD int, rel string) (int, error) {
	if rel == "" {
		return unix.Openat(rootFD, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	if !forceWalk {
		fd, err := unix.Openat2(rootFD, rel, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: resolveFlags | unix.RESOLVE_BENEATH,
		})
		if !errors.Is(err, unix.ENOSYS) {
			return fd, err
		}
	}
	// No openat2: one component at a time, none followed. rel is clean and
	// relative, so it has no "..": each step stays beneath the root.
	fd, err := unix.Dup(rootFD)
	if err != nil {
		return -1, err
	}
	for _, c := range strings.Split(rel, "/") {
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOTDIR) {
			// O_NOFOLLOW|O_PATH opens a link itself; O_DIRECTORY then fails.
			var st unix.Stat_t
			if unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = unix.ELOOP
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// pathErr turns openat2's errnos into Resolve's errors.
func pathErr(err error, dir string) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return ErrSymlink
	case errors.Is(err, unix.EXDEV):
		return ErrOutside
	case errors.Is(err, unix.ENOTDIR):
		return ErrNotDir
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%s: %w", dir, os.ErrNotExist)
	}
	return fmt.Errorf("open %s: %w", dir, err)
}

// Path names the target through the open parent: /proc/self/fd/N/<name>.
// Use it for every file operation while the Target is open.
func (t *Target) Path() string {
	return "/proc/self/fd/" + strconv.Itoa(int(t.parent.Fd())) + "/" + t.name
}

// Close releases the parent directory.
func (t *Target) Close() error {
	if t == nil {
		return nil
	}
	return t.parent.Close()
}

// Mkdir creates the target directory. It reports os.ErrExist (wrapped) if
// something is already there.
func (t *Target) Mkdir(perm os.FileMode) error {
	if err := unix.Mkdirat(int(t.parent.Fd()), t.name, uint32(perm.Perm())); err != nil {
		return &os.PathError{Op: "mkdir", Path: t.name, Err: err}
	}
	return nil
}

// Remove removes the target directory if it is empty.
func (t *Target) Remove() error {
	if err := unix.Unlinkat(int(t.parent.Fd()), t.name, unix.AT_REMOVEDIR); err != nil {
		return &os.PathError{Op: "remove", Path: t.name, Err: err}
	}
	return nil
}

// Mount mounts the tmpfs onto the target directory itself, opened without
// following a link: the mount lands on that directory even if its name
// is replaced meanwhile.
func (t *Target) Mount(o Options) error {
	fd, err := unix.Openat(int(t.parent.Fd()), t.name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("mount tmpfs at %s: %w", t.name, ErrNotDir)
		}
		return fmt.Errorf("open %s: %w", t.name, err)
	}
	defer unix.Close(fd)
	return Mount("/proc/self/fd/"+strconv.Itoa(fd), o)
}

// IsMounted is IsMounted(t.Path()) without a path lookup through /proc:
// a re-publish and an unpublish ask it on every call, and three lookups
// through /proc/self/fd cost about 20 µs where these fd calls cost a few.
// A symlink at the target is never a mount (O_NOFOLLOW opens the link).
func (t *Target) IsMounted() (bool, error) {
	fd, err := unix.Openat(int(t.parent.Fd()), t.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open %s: %w", t.name, err)
	}
	defer unix.Close(fd)
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return false, fmt.Errorf("statfs %s: %w", t.name, err)
	}
	if fs.Type != tmpfsMagic {
		return false, nil
	}
	var self, parent unix.Stat_t
	if err := unix.Fstat(fd, &self); err != nil {
		return false, fmt.Errorf("stat %s: %w", t.name, err)
	}
	if err := unix.Fstat(int(t.parent.Fd()), &parent); err != nil {
		return false, fmt.Errorf("stat parent of %s: %w", t.name, err)
	}
	// As in IsMounted: a tmpfs root has its own device, unlike its parent.
	return self.Mode&unix.S_IFMT != unix.S_IFLNK && self.Dev != parent.Dev, nil
}

// Unmount is Unmount(t.Path()) with the mount check through the held parent.
func (t *Target) Unmount() error {
	mounted, err := t.IsMounted()
	if err != nil || !mounted {
		return err
	}
	return unmount(t.Path())
}

// Readlink reads the link at rel inside the target, relative to the held
// parent.
func (t *Target) Readlink(rel string) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(int(t.parent.Fd()), t.name+"/"+rel, buf)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: t.name + "/" + rel, Err: err}
	}
	return string(buf[:n]), nil
}
