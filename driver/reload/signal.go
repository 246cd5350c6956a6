package reload

import (
	"golang.org/x/sys/unix"

	"vaultcsi.dev/driver/driver/ops"
)

// Number is the signal a reload signal's name stands for.
func Number(s ops.ReloadSignal) (unix.Signal, bool) {
	switch s {
	case ops.SIGHUP:
		return unix.SIGHUP, true
	case ops.SIGUSR1:
		return unix.SIGUSR1, true
	case ops.SIGUSR2:
		return unix.SIGUSR2, true
	case ops.SIGTERM:
		return unix.SIGTERM, true
	}
	return 0, false
}
