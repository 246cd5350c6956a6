// Package registration serves kubelet's plugin-registration API, the job
// node-driver-registrar usually does in a sidecar: kubelet watches
// <kubelet-dir>/plugins_registry/ for sockets, asks each for its info and
// then talks CSI to the endpoint it names.
package registration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Server answers kubelet's registration calls for one CSI driver.
type Server struct {
	registerapi.UnimplementedRegistrationServer
	Name     string // CSI driver name
	Endpoint string // CSI socket path as kubelet sees it
	// registered is set once kubelet reports success, for health checks.
	registered atomic.Bool
}

// GetInfo tells kubelet this is a CSI plugin and where its socket is.
func (s *Server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.Name,
		Endpoint:          s.Endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

// NotifyRegistrationStatus records kubelet's verdict.
func (s *Server) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	s.registered.Store(st.PluginRegistered)
	if st.PluginRegistered {
		klog.InfoS("registered with kubelet", "driver", s.Name)
	} else {
		klog.ErrorS(errors.New(st.Error), "kubelet refused the plugin registration", "driver", s.Name)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// Registered reports whether kubelet accepted the plugin.
func (s *Server) Registered() bool { return s.registered.Load() }

// SocketPath is where kubelet looks for this driver's registration socket.
func SocketPath(kubeletDir, name string) string {
	return filepath.Join(kubeletDir, "plugins_registry", name+"-reg.sock")
}

// Serve listens on the registration socket until ctx ends, then removes
// the socket so kubelet deregisters the plugin.
func (s *Server) Serve(ctx context.Context, socket string) error {
	if err := os.MkdirAll(filepath.Dir(socket), 0o750); err != nil {
		return fmt.Errorf("registration dir: %w", err)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale registration socket: %w", err)
	}
	l, err := (&net.ListenConfig{}).Listen(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socket, err)
	}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, s)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	klog.InfoS("serving kubelet plugin registration", "socket", socket, "endpoint", s.Endpoint)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		srv.Stop()
		_ = os.Remove(socket)
		return nil
	}
}
