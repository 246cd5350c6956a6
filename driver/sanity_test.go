package driver_test

import (
	"context"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// TestSanity runs csi-sanity (kubernetes-csi/csi-test) against the driver
// binary. Two stand-ins make its publish specs reach a real tmpfs publish
// against the real Vault:
//   - a fake controller whose CreateVolume returns the volume context kubelet
//     would send for an inline volume (pod keys, a fresh service-account
//     token, role and secrets): a node-only driver has no controller;
//   - a pass-through proxy that sets readonly, as a pod spec with
//     readOnly: true makes kubelet do (sanity always sends false), and that
//     advertises the fake controller.
//
// The [Controller Server] specs test the fake, so they are skipped.
func TestSanity(t *testing.T) {
	d := startDriver(t)
	dir := t.TempDir()
	proxySock := filepath.Join(dir, "proxy.sock")
	ctrlSock := filepath.Join(dir, "controller.sock")
	serve(t, proxySock, func(s *grpc.Server) {
		csi.RegisterIdentityServer(s, &identityProxy{c: d.ident})
		csi.RegisterNodeServer(s, &readOnlyProxy{c: d.node})
	})
	serve(t, ctrlSock, func(s *grpc.Server) {
		csi.RegisterIdentityServer(s, &fakeControllerIdentity{})
		csi.RegisterControllerServer(s, &fakeController{})
	})

	cfg := sanity.NewTestConfig()
	cfg.Address = proxySock
	cfg.ControllerAddress = ctrlSock
	cfg.TargetPath = filepath.Join(dir, "targets")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.IdempotentCount = 2
	if err := flag.Set("ginkgo.skip", `\[Controller Server\]`); err != nil {
		t.Fatalf("set ginkgo.skip: %v", err)
	}
	var specs int
	states := map[string]int{}
	var passedNames []string
	ginkgo.ReportAfterSuite("count", func(r ginkgo.Report) {
		specs = r.PreRunStats.TotalSpecs
		for _, s := range r.SpecReports {
			if s.LeafNodeType != types.NodeTypeIt {
				continue
			}
			states[s.State.String()]++
			if s.State == types.SpecStatePassed {
				passedNames = append(passedNames, s.FullText())
			}
		}
	})
	sanity.Test(t, cfg)
	fmt.Printf("csi-sanity: %d specs: %d passed, %d failed, %d skipped, %d pending (%d publishes reached the driver)\n",
		specs, states["passed"], states["failed"], states["skipped"], states["pending"], published.Load())
	for _, n := range passedNames {
		fmt.Println("  passed:", n)
	}
	if published.Load() == 0 {
		t.Error("no sanity spec published a volume: the publish specs did not run")
	}
}

var published atomic.Int32

func serve(t *testing.T, sock string, register func(*grpc.Server)) {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
}

type identityProxy struct {
	csi.UnimplementedIdentityServer
	c csi.IdentityClient
}

func (p *identityProxy) GetPluginInfo(ctx context.Context, r *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return p.c.GetPluginInfo(ctx, r)
}

// GetPluginCapabilities adds the fake controller to the driver's own
// (empty) list: sanity asks the node socket whether a controller exists
// before it runs its publish specs.
func (p *identityProxy) GetPluginCapabilities(ctx context.Context, r *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	resp, err := p.c.GetPluginCapabilities(ctx, r)
	if err != nil {
		return nil, err
	}
	if len(resp.Capabilities) != 0 {
		return nil, status.Errorf(codes.Internal, "driver now advertises %v: revisit this proxy", resp.Capabilities)
	}
	return fakeControllerIdentity{}.GetPluginCapabilities(ctx, r)
}

func (p *identityProxy) Probe(ctx context.Context, r *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return p.c.Probe(ctx, r)
}

type readOnlyProxy struct {
	csi.UnimplementedNodeServer
	c csi.NodeClient
}

func (p *readOnlyProxy) NodePublishVolume(ctx context.Context, r *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	r.Readonly = true
	resp, err := p.c.NodePublishVolume(ctx, r)
	if err == nil {
		published.Add(1)
	}
	return resp, err
}

func (p *readOnlyProxy) NodeUnpublishVolume(ctx context.Context, r *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	return p.c.NodeUnpublishVolume(ctx, r)
}

func (p *readOnlyProxy) NodeGetCapabilities(ctx context.Context, r *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return p.c.NodeGetCapabilities(ctx, r)
}

func (p *readOnlyProxy) NodeGetInfo(ctx context.Context, r *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return p.c.NodeGetInfo(ctx, r)
}

func (p *readOnlyProxy) NodeStageVolume(ctx context.Context, r *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	return p.c.NodeStageVolume(ctx, r)
}

func (p *readOnlyProxy) NodeUnstageVolume(ctx context.Context, r *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	return p.c.NodeUnstageVolume(ctx, r)
}

func (p *readOnlyProxy) NodeGetVolumeStats(ctx context.Context, r *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	return p.c.NodeGetVolumeStats(ctx, r)
}

func (p *readOnlyProxy) NodeExpandVolume(ctx context.Context, r *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	return p.c.NodeExpandVolume(ctx, r)
}

type fakeControllerIdentity struct {
	csi.UnimplementedIdentityServer
}

func (fakeControllerIdentity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: "vault.csi.dev", VendorVersion: "test"}, nil
}

func (fakeControllerIdentity) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{
		Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}},
	}}}, nil
}

func (fakeControllerIdentity) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

// fakeController hands out kubelet-shaped inline volume contexts.
type fakeController struct {
	csi.UnimplementedControllerServer
	n atomic.Int32
}

func (f *fakeController) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{
		Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}},
	}}}, nil
}

func (f *fakeController) CreateVolume(_ context.Context, r *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if r.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name required")
	}
	pod := shopPod
	pod.PodUID = vaulttest.PodUID(fmt.Sprintf("sanity-%d", f.n.Add(1)))
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId: "csi-" + pod.PodUID,
		VolumeContext: map[string]string{
			attributes.KeyPodName: pod.PodName, attributes.KeyPodNamespace: pod.Namespace,
			attributes.KeyPodUID: pod.PodUID, attributes.KeyServiceAccount: pod.ServiceAccount,
			attributes.KeyEphemeral: "true",
			attributes.KeyTokens:    vaulttest.TokensJSON("vault", vaultSrv.Token(pod, time.Hour), time.Now().Add(time.Hour)),
			"role":                  "payments",
			"secrets":               threeSecrets,
		},
	}}, nil
}

func (f *fakeController) DeleteVolume(context.Context, *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	return &csi.DeleteVolumeResponse{}, nil
}
