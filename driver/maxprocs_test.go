package driver_test

import (
	"runtime"
	"testing"
)

// The driver runs its Go code on one CPU unless told otherwise
// (--max-procs, whose 0 is Go's own choice; GOMAXPROCS wins over both):
// on 2 cores that cut its CPU per publish by about a quarter.
func TestMaxProcs(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want float64
	}{
		{"default", nil, 1},
		{"--max-procs=0 is Go's default", []string{"--max-procs=0"}, float64(runtime.NumCPU())},
		{"--max-procs=2", []string{"--max-procs=2"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startObservedDriver(t, vaultSrv, tc.args...)
			if got := d.scrape(t).value("go_sched_gomaxprocs_threads", nil); got != tc.want {
				t.Fatalf("go_sched_gomaxprocs_threads = %v, want %v", got, tc.want)
			}
		})
	}
}
