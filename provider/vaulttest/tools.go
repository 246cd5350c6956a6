package vaulttest

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	toolsMu sync.Mutex
	tools   = map[string]string{}
)

// Tool returns the path of a test-only tool built from its wrapper module
// under hack/ by hack/build-tool.sh (cached in .cache/tools, keyed on the
// module's go.sum: minutes the first time on a machine, instant after).
func Tool(t testing.TB, module, name, pkg string) string {
	t.Helper()
	toolsMu.Lock()
	defer toolsMu.Unlock()
	if p, ok := tools[name]; ok {
		return p
	}
	p, err := buildTool(module, name, pkg)
	if err != nil {
		t.Fatal(err)
	}
	tools[name] = p
	return p
}

func buildTool(module, name, pkg string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("bash", filepath.Join(root, "hack/build-tool.sh"), module, name, pkg) //nolint:gosec // the repo's own build script
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build %s: %w: %s", name, err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}
