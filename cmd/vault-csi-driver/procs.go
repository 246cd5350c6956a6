package main

import (
	"fmt"
	"os"
	"runtime"
)

// defaultMaxProcs runs the driver's Go code on one CPU at a time. Its work
// comes in short bursts between waits on Vault, kubelet and the kernel;
// with more Ps the runtime spun idle threads up and down around every
// hand-off (the profile's scheduler and futex time), and the driver spent
// a quarter more CPU per publish and half again per re-publish on 2 cores
// (README, Performance). One P still runs hundreds of publishes a second;
// blocking syscalls (mount, mkdir) hand the P to another thread as usual.
const defaultMaxProcs = 1

// setMaxProcs applies --max-procs and returns the Ps in effect: n > 0 caps
// them, 0 keeps Go's own choice (the node's CPUs, or the container's CPU
// limit). A GOMAXPROCS environment variable wins over the flag.
func setMaxProcs(n int) (int, error) {
	if n < 0 {
		return 0, fmt.Errorf("--max-procs %d: want 0 (Go's default) or more", n)
	}
	if n == 0 || os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0), nil
	}
	runtime.GOMAXPROCS(n)
	return n, nil
}
