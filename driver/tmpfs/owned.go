package tmpfs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// mountInfo is the mount table of the driver's own mount namespace.
const mountInfo = "/proc/self/mountinfo"

// Owned reports whether target is the root of a tmpfs mount that the driver
// made: its mount source is Source. A memory emptyDir, the driver's state
// dir and any other tmpfs have another source and are not the driver's to
// touch. When several mounts are stacked on target, the topmost one (the
// last in the table) decides, since that is the one a path lookup reaches.
func Owned(target string) (bool, error) {
	target = filepath.Clean(target)
	// Two stat calls rule out the common cases before reading a table that
	// grows with the number of volumes on the node.
	if mounted, err := IsMounted(target); err != nil || !mounted {
		return false, err
	}
	f, err := os.Open(mountInfo)
	if err != nil {
		return false, fmt.Errorf("read mount table: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only: a close error loses nothing
	return ownedIn(f, target)
}

// ownedIn scans a mountinfo table (proc(5)) for the topmost mount at target.
func ownedIn(r io.Reader, target string) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	found, owned := false, false
	for sc.Scan() {
		// "36 35 98:0 / /mnt/x rw,nosuid shared:1 - tmpfs vault-csi rw,size=..."
		line := sc.Bytes()
		pre, post, ok := bytes.Cut(line, []byte(" - "))
		if !ok {
			continue
		}
		f := bytes.Fields(pre)
		if len(f) < 5 || unescape(string(f[4])) != target {
			continue
		}
		g := bytes.Fields(post)
		found = true
		// Only the root of the file system counts: a bind mount of a
		// directory inside one of our volumes is not a volume.
		owned = len(g) >= 2 && string(g[0]) == "tmpfs" && unescape(string(g[1])) == Source && string(f[3]) == "/"
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("read mount table: %w", err)
	}
	return found && owned, nil
}

// unescape undoes the octal escapes (\040 for a space, \011, \012, \134)
// that the kernel writes in mountinfo paths.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
