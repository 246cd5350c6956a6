package driver

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"vaultcsi.dev/driver/provider"
)

// least is the smallest budget New accepts for a volume limit: one
// volume's worst case plus each of the 16 fetches' up-front reservation.
func least(volume int64) int64 {
	return provider.MinBudget(volume) + DefaultMaxFetches*fetchReserve
}

// --max-bytes-in-flight: 0 picks a budget that fits the volume limit; an
// explicit one below what one volume at the limit needs is refused at start.
func TestMaxBytesInFlight(t *testing.T) {
	cases := []struct {
		name      string
		volume    int64
		inFlight  int64
		want      int64  // the budget in effect
		errSubstr string // or the start-up error
	}{
		{"default", 0, 0, DefaultMaxBytesInFlight, ""},
		{"a large volume limit raises the default", 64 << 20, 0, least(64 << 20), ""},
		{"exactly the minimum", 0, least(DefaultMaxVolumeBytes), least(DefaultMaxVolumeBytes), ""},
		{"below the minimum", 0, least(DefaultMaxVolumeBytes) - 1, 0, "max bytes in flight"},
		{"negative", 0, -1, 0, "max bytes in flight"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("/dev/shm", "vcd-budget-")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			d, err := New(Config{NodeID: "n", StateDir: dir, MaxVolumeBytes: c.volume, MaxBytesInFlight: c.inFlight}, nil, nil)
			if c.errSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), c.errSubstr) {
					t.Fatalf("err = %v, want one with %q", err, c.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := d.budget.Size(); got != c.want {
				t.Errorf("budget %d, want %d", got, c.want)
			}
		})
	}
}

// Both ways a fetch runs out of room reach kubelet as ResourceExhausted.
func TestSizeErrorsAreResourceExhausted(t *testing.T) {
	for _, err := range []error{provider.ErrTooLarge, provider.ErrBusy} {
		wrapped := fmt.Errorf("file f from p: %w", err)
		if got := codeOf(wrapped); got != codes.ResourceExhausted {
			t.Errorf("%v: code %s, want ResourceExhausted", err, got)
		}
	}
}
