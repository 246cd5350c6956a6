package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/klog/v2"
)

// shutdownTimeout bounds how long a scrape in flight may delay exit.
const shutdownTimeout = 5 * time.Second

// Serve serves m at /metrics, and extra handlers by path (e.g. /healthz),
// on addr until ctx is done. It returns nil after a clean shutdown and an
// error when addr cannot be bound or the server fails.
func Serve(ctx context.Context, addr string, m *Metrics, extra map[string]http.Handler) error {
	if m == nil {
		return errors.New("metrics: Serve needs metrics")
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return serve(ctx, ln, m, extra)
}

func serve(ctx context.Context, ln net.Listener, m *Metrics, extra map[string]http.Handler) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	for path, h := range extra {
		if path == "/metrics" {
			_ = ln.Close() // never served
			return errors.New("metrics: extra handler for /metrics would shadow the metrics")
		}
		mux.Handle(path, h)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	klog.InfoS("Serving metrics", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close() // the shutdown error is the one worth returning
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	}
	return nil
}
