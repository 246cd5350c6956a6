package tmpfs

import (
	"testing"
)

// BenchmarkIsMounted: the mount check a re-publish and an unpublish make,
// by the /proc/self/fd path and through the held parent.
func BenchmarkIsMounted(b *testing.B) {
	target := mountT(b, Options{SizeBytes: 1 << 20, Inodes: 100, GID: -1})
	tg, err := Resolve("", target)
	if err != nil {
		b.Fatal(err)
	}
	defer tg.Close()
	b.Run("path", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if ok, err := IsMounted(tg.Path()); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("target", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if ok, err := tg.IsMounted(); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
}
