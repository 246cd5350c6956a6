// Package need gates tests on the real parts they run against (root for
// mounts, the Kubernetes binaries, ...). Run by hand, a test whose part is
// missing is skipped and says what it skipped; run by `make test` (and so
// CI), which sets RequireEnv, the same test fails: a green CI run means
// every test ran.
package need

import (
	"fmt"
	"os"
	"testing"
)

// RequireEnv, when non-empty, turns every missing part into a failure.
// `make test` sets it; `make unit-fast` (go test -short) does not.
const RequireEnv = "VCD_REQUIRE_PARTS"

// Required reports whether missing parts fail rather than skip.
func Required() bool { return os.Getenv(RequireEnv) != "" && !testing.Short() }

// Missing skips t, or fails it when parts are required, naming the part.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("missing part: %s (%s is set: make test runs every test)", msg, RequireEnv)
	}
	t.Skipf("skipped: %s", msg)
}

// Root skips or fails t unless it runs as root (tmpfs mounts, chgrp).
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root: %s", why)
	}
}

// Long skips t under -short (make unit-fast), the inner loop that runs
// only pure tests; it never skips otherwise.
func Long(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("skipped under -short: %s", why)
	}
}
