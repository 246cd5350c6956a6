package atomicwriter

import (
	"os"
	"syscall"
)

func fileGID(info os.FileInfo) int {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int(st.Gid)
	}
	return -1
}
