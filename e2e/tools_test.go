package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// repoRoot is the driver module's root (the e2e package sits one level down).
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := vaulttest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helmBin is $HELM_BIN, or the helm CLI built from hack/helm by
// hack/build-tool.sh (cached in .cache/tools: about a minute the first
// time, instant after).
func helmBin(t testing.TB) string {
	t.Helper()
	helmOnce.Do(func() {
		if p := os.Getenv("HELM_BIN"); p != "" {
			helmPath = p
			return
		}
		root := repoRoot(t)
		cmd := exec.Command("bash", filepath.Join(root, "hack/build-tool.sh"), "hack/helm", "helm", "helm.sh/helm/v3/cmd/helm")
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			helmErr = fmt.Errorf("build helm: %w: %s", err, stderr.String())
			return
		}
		helmPath = strings.TrimSpace(string(out))
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

// runHelm runs the helm CLI with args and returns its stdout.
func runHelm(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
