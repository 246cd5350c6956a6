package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"

	"vaultcsi.dev/driver/driver/metrics"
	"vaultcsi.dev/driver/driver/state"
)

// Readiness conditions, as /readyz names them when they are missing.
const (
	condRegistered = "kubelet registration has not succeeded"
	condVault      = "vault has not answered its health endpoint"
)

// Bounds of the Vault health polling until the first answer.
const (
	vaultCheckFirst   = time.Second
	vaultCheckMax     = 30 * time.Second
	vaultCheckTimeout = 5 * time.Second
)

// readiness is what the driver pod needs before it is Ready: kubelet
// registered the plugin, and Vault answered once. Both latch: a later Vault
// outage must not take the pod out of a rollout or restart it (refreshes
// keep the old files and retry on their own).
type readiness struct {
	registered func() bool // nil without kubelet registration (no --kubelet-dir)

	mu        sync.Mutex
	vaultOK   bool
	vaultLast string // why the last Vault check failed
}

// missing lists the unmet conditions, empty when ready.
func (r *readiness) missing() []string {
	var out []string
	if r.registered != nil && !r.registered() {
		out = append(out, condRegistered)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.vaultOK {
		c := condVault
		if r.vaultLast != "" {
			c += " (last: " + r.vaultLast + ")"
		}
		out = append(out, c)
	}
	return out
}

// watchVault checks Vault's health until it answers once, backing off from
// vaultCheckFirst to vaultCheckMax, or until ctx ends.
func (r *readiness) watchVault(ctx context.Context, check func(context.Context) error) {
	wait := vaultCheckFirst
	for {
		cctx, cancel := context.WithTimeout(ctx, vaultCheckTimeout)
		err := check(cctx)
		cancel()
		r.mu.Lock()
		if err == nil {
			r.vaultOK, r.vaultLast = true, ""
		} else {
			r.vaultLast = err.Error()
		}
		r.mu.Unlock()
		if err == nil {
			klog.InfoS("vault answered its health endpoint")
			return
		}
		klog.V(2).InfoS("vault health check failed; not ready yet", "err", err, "retryIn", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, vaultCheckMax)
	}
}

// serveHealth answers /healthz (liveness: a real CSI Probe over the driver's
// own socket, so a wedged gRPC server fails it; Vault plays no part) and
// /readyz (the readiness conditions, naming the missing ones).
func serveHealth(ctx context.Context, addr, endpoint string, ready *readiness) error {
	path := strings.TrimPrefix(endpoint, "unix://")
	conn, err := grpc.NewClient("unix://"+filepath.Clean(path), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("health client: %w", err)
	}
	defer func() { _ = conn.Close() }()
	ident := csi.NewIdentityClient(conn)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		pctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		resp, err := ident.Probe(pctx, &csi.ProbeRequest{})
		if err != nil || !resp.GetReady().GetValue() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if m := ready.missing(); len(m) > 0 {
			http.Error(w, "not ready: "+strings.Join(m, "; "), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("health server on %s: %w", addr, err)
	}
	return nil
}

// volumeHealth feeds the refresh-health gauges from the volume records.
func volumeHealth(store *state.Store) func() (metrics.VolumeHealth, error) {
	return func() (metrics.VolumeHealth, error) {
		s, err := store.Summarize()
		return metrics.VolumeHealth{RefreshFailing: s.RefreshFailing, LeaseExpiry: s.LeaseExpiry, TokenExpiry: s.TokenExpiry}, err
	}
}
