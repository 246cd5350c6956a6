package tmpfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Owned reports whether target is the root of a tmpfs mount whose source
// is Source: a volume this driver mounted, and not, say, a pod's memory
// emptyDir (source "tmpfs") or the driver's own state dir. The mount is
// identified by its id, so any spelling of target works (including
// /proc/self/fd/N/name); a target that does not exist is not owned.
func Owned(target string) (bool, error) { return ownedAt(unix.AT_FDCWD, target) }

// Owned is Owned(t.Path()) opened relative to the held parent, without a
// lookup through /proc/self/fd.
func (t *Target) Owned() (bool, error) { return ownedAt(int(t.parent.Fd()), t.name) }

func ownedAt(dirfd int, target string) (bool, error) {
	fd, err := unix.Openat(dirfd, target, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("open %s: %w", target, err)
	}
	defer unix.Close(fd)
	parent, err := unix.Openat(fd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("open parent of %s: %w", target, err)
	}
	defer unix.Close(parent)
	if owned, ok := ownedByStatmount(fd, parent); ok {
		return owned, nil
	}
	return ownedByMountinfo(fd, parent)
}

// ownedByMountinfo is Owned on kernels without statmount(2) and the
// unique mount id (before 6.8) or sb_source (before 6.12): it reads the
// whole mount table, which grows with every volume on the node.
func ownedByMountinfo(fd, parent int) (bool, error) {
	id, err := mountID(fd)
	if err != nil {
		return false, err
	}
	pid, err := mountID(parent)
	if err != nil {
		return false, err
	}
	if id == pid {
		return false, nil // a directory inside some mount, not a mount's root
	}
	m, ok, err := findMount(id)
	if err != nil || !ok {
		return false, err
	}
	// root "/": the whole file system, not a bind mount of a directory in it.
	return m.fsType == "tmpfs" && m.source == Source && m.root == "/", nil
}

// mountID reads the id of the mount an fd is on from /proc/self/fdinfo
// (there since Linux 3.15, unlike statx's STATX_MNT_ID).
func mountID(fd int) (string, error) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return "", fmt.Errorf("read fdinfo: %w", err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("mnt_id:")); ok {
			return string(bytes.TrimSpace(v)), nil
		}
	}
	return "", errors.New("fdinfo has no mnt_id")
}

type mountEntryInfo struct {
	root, fsType, source string
}

// findMount looks up one mount by id in /proc/self/mountinfo:
// "id parent maj:min root mountpoint opts [optional...] - fstype source superopts".
func findMount(id string) (mountEntryInfo, bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mountEntryInfo{}, false, fmt.Errorf("read mountinfo: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	prefix := id + " "
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		fields := strings.Fields(line)
		for i := 6; i+2 < len(fields); i++ {
			if fields[i] == "-" {
				return mountEntryInfo{root: fields[3], fsType: fields[i+1], source: fields[i+2]}, true, nil
			}
		}
		return mountEntryInfo{}, false, fmt.Errorf("mountinfo line for mount %s is malformed", id)
	}
	if err := sc.Err(); err != nil {
		return mountEntryInfo{}, false, fmt.Errorf("read mountinfo: %w", err)
	}
	return mountEntryInfo{}, false, nil
}
