package tmpfs

import (
	"testing"

	"golang.org/x/sys/unix"
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

// BenchmarkOwned: the ownership check of an unpublish on a node with 500
// volumes mounted, by the mount table and by statmount(2).
func BenchmarkOwned(b *testing.B) {
	var target string
	for i := 0; i < 500; i++ {
		target = mountT(b, Options{SizeBytes: 1 << 20, Inodes: 16, GID: -1})
	}
	fd, err := unix.Open(target, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	parent, err := unix.Openat(fd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(parent)
	b.Run("mountinfo", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if ok, err := ownedByMountinfo(fd, parent); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("statmount", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if owned, ok := ownedByStatmount(fd, parent); !ok || !owned {
				b.Fatal(owned, ok)
			}
		}
	})
}
