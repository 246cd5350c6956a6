package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"k8s.io/klog/v2"
)

// pprofEnv names a loopback address for Go's profiling endpoints. It is for
// the bench (cmd/vault-csi-bench) and for a developer profiling the publish
// path, not a product setting: no flag, no Helm value.
const pprofEnv = "VCD_PPROF_ADDR"

const pprofHeaderTimeout = 5 * time.Second

func init() {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return
	}
	if err := servePprof(addr); err != nil {
		klog.ErrorS(err, "profiling endpoints not served", "env", pprofEnv)
	}
}

// servePprof serves /debug/pprof/ on addr, which must be a loopback
// address: profiles name code paths and sizes, and nobody off the node
// needs them.
func servePprof(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s=%q: %w", pprofEnv, addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s=%q: want a loopback IP address and port, e.g. 127.0.0.1:6060", pprofEnv, addr)
	}
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: %w", pprofEnv, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: pprofHeaderTimeout}
	go func() { _ = srv.Serve(l) }()
	return nil
}
