package vaulttest

import (
	"os/exec"
	"runtime"
	"syscall"
)

// StartTied starts cmd so that the kernel kills it (SIGKILL) if the test
// process dies first, and returns a channel closed when it exits. Pdeathsig
// follows the thread that started the child, so that goroutine stays locked
// to its thread until the child exits. cmd.SysProcAttr, if set, is kept.
func StartTied(cmd *exec.Cmd) (<-chan struct{}, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the child
		if err := cmd.Start(); err != nil {
			started <- err
			close(done)
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(done)
	}()
	return done, <-started
}
