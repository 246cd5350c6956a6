package unaryserver

import (
	"strings"
	"testing"
	"time"
)

func TestParseTimeout(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1S", time.Second, true},
		{"250m", 250 * time.Millisecond, true},
		{"7u", 7 * time.Microsecond, true},
		{"12345678n", 12345678, true},
		{"2H", 2 * time.Hour, true},
		{"3M", 3 * time.Minute, true},
		{"99999999H", time.Duration(1<<63 - 1), true}, // overflows: no practical limit
		{"", 0, false},
		{"S", 0, false},
		{"1", 0, false},
		{"123456789S", 0, false}, // nine digits
		{"1X", 0, false},
		{"-1S", 0, false},
		{"1.5S", 0, false},
	} {
		got, ok := parseTimeout(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseTimeout(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestEncodeMessage(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain ascii", "plain ascii"},
		{"100%", "100%25"},
		{"é", "%C3%A9"},
		{"a\nb", "a%0Ab"},
		{strings.Repeat("a", maxStatusMessage+10), strings.Repeat("a", maxStatusMessage) + "..."},
		// Cut on a UTF-8 boundary: a 2-byte rune straddling the limit goes whole.
		{strings.Repeat("a", maxStatusMessage-1) + "é", strings.Repeat("a", maxStatusMessage-1) + "..."},
	} {
		if got := encodeMessage(tc.in); got != tc.want {
			t.Errorf("encodeMessage(%.20q...) = %.40q..., want %.40q...", tc.in, got, tc.want)
		}
	}
}

func TestIsGRPC(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/grpc": true, "application/grpc+proto": true, "application/grpc;charset=utf-8": true,
		"Application/GRPC": true, "application/grpcx": false, "application/json": false, "": false,
	} {
		if got := isGRPC(ct); got != want {
			t.Errorf("isGRPC(%q) = %v", ct, got)
		}
	}
}
