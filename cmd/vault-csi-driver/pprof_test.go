package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// The profiling endpoints serve on a loopback address only.
func TestServePprof(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "10.1.2.3:6060", "localhost:6060", "no-port"} {
		if err := servePprof(addr); err == nil || !strings.Contains(err.Error(), pprofEnv) {
			t.Errorf("servePprof(%q) = %v, want an error naming %s", addr, err, pprofEnv)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if err := servePprof(addr); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine") {
		t.Fatalf("GET /debug/pprof/: %d %.200s", resp.StatusCode, body)
	}
}
