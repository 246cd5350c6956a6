package need

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMissingFailsWhenRequired runs a child test that hits Missing, with
// and without RequireEnv: skipped by hand, failed under make test.
func TestMissingFailsWhenRequired(t *testing.T) {
	if os.Getenv("NEED_CHILD") == "1" {
		Missing(t, "a part this test pretends is absent")
		return
	}
	for _, tt := range []struct {
		name, env, want string
		fails           bool
	}{
		{"by hand", "", "skipped: a part this test pretends is absent", false},
		{"make test", RequireEnv + "=1", "missing part: a part this test pretends is absent", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMissingFailsWhenRequired$", "-test.v")
			cmd.Env = append(os.Environ(), "NEED_CHILD=1", RequireEnv+"=")
			if tt.env != "" {
				cmd.Env = append(cmd.Env, tt.env)
			}
			out, err := cmd.CombinedOutput()
			if (err != nil) != tt.fails {
				t.Fatalf("child exit error = %v, want failure %v\n%s", err, tt.fails, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("child output lacks %q:\n%s", tt.want, out)
			}
		})
	}
}
