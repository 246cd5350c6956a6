package atomicwriter_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"vaultcsi.dev/driver/driver/atomicwriter"
)

// BenchmarkFirstWrite is the write of a first publish: 10 files into an
// empty volume directory (on /dev/shm, a tmpfs like the volume's), named
// as the driver names it: through its parent held open (/proc/self/fd).
func BenchmarkFirstWrite(b *testing.B) { benchFirstWrite(b, 10, -1) }

// BenchmarkFirstWrite3 is a 3-secret volume with the pod's fsGroup, as
// the performance bench publishes.
func BenchmarkFirstWrite3(b *testing.B) { benchFirstWrite(b, 3, 2000) }

func benchFirstWrite(b *testing.B, n, gid int) {
	root, err := os.MkdirTemp("/dev/shm", "aw-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(root) })
	parent, err := os.Open(root)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { parent.Close() })
	held := "/proc/self/fd/" + strconv.Itoa(int(parent.Fd()))
	files := make([]atomicwriter.File, n)
	for i := range files {
		files[i] = atomicwriter.File{Name: fmt.Sprintf("secret-%d", i), Data: []byte("value"), Mode: 0o440}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(held, fmt.Sprint(i))
		if err := os.Mkdir(dir, 0o750); err != nil {
			b.Fatal(err)
		}
		if _, err := atomicwriter.Write(dir, files, atomicwriter.Options{GID: gid}); err != nil {
			b.Fatal(err)
		}
	}
}
