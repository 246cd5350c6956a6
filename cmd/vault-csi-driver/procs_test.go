package main

import (
	"runtime"
	"testing"
)

func TestSetMaxProcs(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(orig) })
	for _, tc := range []struct {
		name    string
		env     string
		flag    int
		want    int // 0: Go's own choice, the value before the call
		wantErr bool
	}{
		{name: "the flag caps the Ps", flag: 1, want: 1},
		{name: "0 keeps Go's choice", flag: 0},
		{name: "GOMAXPROCS wins over the flag", env: "2", flag: 1},
		{name: "negative is refused", flag: -1, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GOMAXPROCS(orig)
			t.Setenv("GOMAXPROCS", tc.env)
			got, err := setMaxProcs(tc.flag)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			want := tc.want
			if want == 0 {
				want = orig
			}
			if got != want || runtime.GOMAXPROCS(0) != want {
				t.Fatalf("setMaxProcs(%d) = %d, GOMAXPROCS %d; want %d", tc.flag, got, runtime.GOMAXPROCS(0), want)
			}
		})
	}
}
