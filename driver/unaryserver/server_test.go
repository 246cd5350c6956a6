package unaryserver_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"vaultcsi.dev/driver/driver/rawsock"
	"vaultcsi.dev/driver/driver/unaryserver"
)

// identity is a CSI Identity service whose methods the tests set.
type identity struct {
	csi.UnimplementedIdentityServer
	probe func(ctx context.Context, req *csi.ProbeRequest) (*csi.ProbeResponse, error)
	info  func(ctx context.Context, req *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error)
}

func (i *identity) Probe(ctx context.Context, req *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	if i.probe == nil {
		return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
	}
	return i.probe(ctx, req)
}

func (i *identity) GetPluginInfo(ctx context.Context, req *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	if i.info == nil {
		return &csi.GetPluginInfoResponse{Name: "test.csi.dev", VendorVersion: "1"}, nil
	}
	return i.info(ctx, req)
}

type testServer struct {
	srv    *unaryserver.Server
	socket string
	done   chan error
}

// serve runs a server with cfg and impl on a raw unix listener, as the
// driver does; it is stopped when the test ends.
func serve(t *testing.T, cfg unaryserver.Config, impl csi.IdentityServer) *testServer {
	t.Helper()
	ts := &testServer{srv: unaryserver.New(cfg), socket: filepath.Join(t.TempDir(), "csi.sock"), done: make(chan error, 1)}
	csi.RegisterIdentityServer(ts.srv, impl)
	l, err := rawsock.Listen(ts.socket)
	if err != nil {
		t.Fatal(err)
	}
	go func() { ts.done <- ts.srv.Serve(l) }()
	t.Cleanup(func() {
		ts.srv.Stop()
		if err := <-ts.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

func (ts *testServer) client(t *testing.T) csi.IdentityClient {
	t.Helper()
	return csi.NewIdentityClient(ts.conn(t))
}

func (ts *testServer) conn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+ts.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A grpc-go client (what kubelet and csi-sanity use) gets responses and
// errors exactly as a grpc-go server would send them: code, message
// (non-ASCII and '%' included), details.
func TestUnaryOutcomes(t *testing.T) {
	detail := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "volume_context", Description: "bad"}}}
	withDetail, err := status.New(codes.InvalidArgument, "with detail").WithDetails(detail)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("é", 5000)
	cases := []struct {
		name     string
		err      error
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "ok", wantCode: codes.OK},
		{name: "status", err: status.Error(codes.NotFound, `volume "v" not found`), wantCode: codes.NotFound, wantMsg: `volume "v" not found`},
		{name: "encoded message", err: status.Error(codes.FailedPrecondition, "100% sûr\n\tnext line"), wantCode: codes.FailedPrecondition, wantMsg: "100% sûr\n\tnext line"},
		{name: "plain error", err: errors.New("boom"), wantCode: codes.Unknown, wantMsg: "boom"},
		{name: "long message is cut", err: status.Error(codes.Internal, long), wantCode: codes.Internal, wantMsg: strings.Repeat("é", 2048) + "..."},
		{name: "details", err: withDetail.Err(), wantCode: codes.InvalidArgument, wantMsg: "with detail"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := serve(t, unaryserver.Config{}, &identity{info: func(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
				if tc.err != nil {
					return nil, tc.err
				}
				return &csi.GetPluginInfoResponse{Name: "test.csi.dev", VendorVersion: "1.2.3", Manifest: map[string]string{"k": "v"}}, nil
			}})
			resp, err := ts.client(t).GetPluginInfo(testCtx(t), &csi.GetPluginInfoRequest{})
			st := status.Convert(err)
			if st.Code() != tc.wantCode || st.Message() != tc.wantMsg {
				t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), tc.wantCode, tc.wantMsg)
			}
			if tc.wantCode == codes.OK && (resp.GetName() != "test.csi.dev" || resp.GetManifest()["k"] != "v") {
				t.Fatalf("response %v", resp)
			}
			if tc.name == "details" {
				if d := st.Details(); len(d) != 1 || d[0].(*errdetails.BadRequest).GetFieldViolations()[0].GetField() != "volume_context" {
					t.Fatalf("details %v", d)
				}
			}
		})
	}
}

// Interceptors run in order around the handler and see the method, the
// request and the peer (connlimit finds the connection by it).
func TestInterceptorsAndPeer(t *testing.T) {
	var order []string
	var mu sync.Mutex
	mark := func(name string) grpc.UnaryServerInterceptor {
		return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			mu.Lock()
			order = append(order, name+":"+info.FullMethod)
			mu.Unlock()
			if _, ok := peer.FromContext(ctx); !ok {
				return nil, status.Error(codes.Internal, "no peer")
			}
			return h(ctx, req)
		}
	}
	ts := serve(t, unaryserver.Config{Interceptors: []grpc.UnaryServerInterceptor{mark("a"), mark("b")}}, &identity{})
	if _, err := ts.client(t).Probe(testCtx(t), &csi.ProbeRequest{}); err != nil {
		t.Fatal(err)
	}
	want := "a:/csi.v1.Identity/Probe b:/csi.v1.Identity/Probe"
	mu.Lock()
	got := strings.Join(order, " ")
	mu.Unlock()
	if got != want {
		t.Fatalf("interceptors ran %q, want %q", got, want)
	}
}

// The client's deadline reaches the handler; the client's cancel stops it.
func TestDeadlineAndCancel(t *testing.T) {
	seen := make(chan error, 1)
	var deadline atomic.Int64
	ts := serve(t, unaryserver.Config{}, &identity{probe: func(ctx context.Context, _ *csi.ProbeRequest) (*csi.ProbeResponse, error) {
		if d, ok := ctx.Deadline(); ok {
			deadline.Store(time.Until(d).Milliseconds())
		} else {
			deadline.Store(-1)
		}
		select {
		case <-ctx.Done():
			seen <- ctx.Err()
		case <-time.After(20 * time.Second):
			seen <- errors.New("handler never cancelled")
		}
		return nil, ctx.Err()
	}})
	cl := ts.client(t)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := cl.Probe(ctx, &csi.ProbeRequest{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("client got %v, want DeadlineExceeded", err)
	}
	// Whichever fires first: the server's own deadline, or the client's
	// (which resets the stream).
	if err := <-seen; !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		t.Fatalf("handler context ended with %v", err)
	}
	if ms := deadline.Load(); ms <= 0 || ms > 300 {
		t.Fatalf("handler saw a deadline %d ms away, want (0, 300]", ms)
	}

	ctx, cancel = context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	if _, err := cl.Probe(ctx, &csi.ProbeRequest{}); status.Code(err) != codes.Canceled {
		t.Fatalf("client got %v, want Canceled", err)
	}
	if err := <-seen; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler context ended with %v, want Canceled (RST_STREAM)", err)
	}
}

// Calls on one connection run at once, up to MaxConcurrentStreams; the
// client queues the rest and every call completes.
func TestConcurrentCallsBounded(t *testing.T) {
	const limit, calls = 4, 12
	var running, peak atomic.Int32
	release := make(chan struct{})
	ts := serve(t, unaryserver.Config{MaxConcurrentStreams: limit}, &identity{probe: func(ctx context.Context, _ *csi.ProbeRequest) (*csi.ProbeResponse, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &csi.ProbeResponse{}, nil
	}})
	cl := ts.client(t)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := cl.Probe(ctx, &csi.ProbeRequest{})
			errs <- err
		}()
	}
	for i := 0; running.Load() < limit && i < 1000; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	if got := running.Load(); got != limit {
		t.Fatalf("%d calls running on one connection, want %d", got, limit)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p := peak.Load(); p != limit {
		t.Fatalf("peak %d calls at once, want %d", p, limit)
	}
}

// A request up to MaxRecvMsgSize goes through (it needs WINDOW_UPDATEs: the
// windows are 64 KiB); a larger one fails with RESOURCE_EXHAUSTED before it
// is buffered, and the connection goes on serving.
func TestMessageSize(t *testing.T) {
	const limit = 1 << 20
	ts := serve(t, unaryserver.Config{MaxRecvMsgSize: limit}, &identity{})
	cc := ts.conn(t)
	ctx := testCtx(t)
	call := func(size int) error {
		req := &csi.NodePublishVolumeRequest{VolumeId: "v", VolumeContext: map[string]string{"big": strings.Repeat("x", size)}}
		return cc.Invoke(ctx, "/csi.v1.Identity/Probe", req, &csi.ProbeResponse{})
	}
	if err := call(limit - 64); err != nil {
		t.Fatalf("a request just under the limit: %v", err)
	}
	if err := call(2 * limit); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a request over the limit: %v, want ResourceExhausted", err)
	}
	if err := call(10); err != nil {
		t.Fatalf("the connection after a refused request: %v", err)
	}
}

// Methods and services not registered answer UNIMPLEMENTED.
func TestUnknownMethod(t *testing.T) {
	ts := serve(t, unaryserver.Config{}, &identity{})
	cc := ts.conn(t)
	for _, path := range []string{"/csi.v1.Identity/Nope", "/csi.v1.Node/NodePublishVolume"} {
		err := cc.Invoke(testCtx(t), path, &csi.ProbeRequest{}, &csi.ProbeResponse{})
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("%s: %v, want Unimplemented", path, err)
		}
	}
}

// GracefulStop lets a call in flight finish, refuses new connections, and
// returns once the call is done; Stop cancels calls at once.
func TestStop(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	ts := serve(t, unaryserver.Config{}, &identity{probe: func(ctx context.Context, _ *csi.ProbeRequest) (*csi.ProbeResponse, error) {
		started <- struct{}{}
		select {
		case <-release:
			return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}})
	cl := ts.client(t)
	ctx := testCtx(t)
	res := make(chan error, 1)
	go func() { _, err := cl.Probe(ctx, &csi.ProbeRequest{}); res <- err }()
	<-started
	stopped := make(chan struct{})
	go func() { ts.srv.GracefulStop(); close(stopped) }()
	for i := 0; i < 1000; i++ { // the listener closes
		if _, err := net.Dial("unix", ts.socket); err != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := net.Dial("unix", ts.socket); err == nil {
		t.Fatal("a new connection was accepted while draining")
	}
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned with a call in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-res; err != nil {
		t.Fatalf("the call in flight: %v", err)
	}
	<-stopped

	// Stop: the handler's context is cancelled, the client sees the
	// connection go.
	ts2 := serve(t, unaryserver.Config{}, &identity{probe: func(ctx context.Context, _ *csi.ProbeRequest) (*csi.ProbeResponse, error) {
		started <- struct{}{}
		<-ctx.Done()
		res <- ctx.Err()
		return nil, ctx.Err()
	}})
	cl2 := ts2.client(t)
	clientErr := make(chan error, 1)
	go func() { _, err := cl2.Probe(ctx, &csi.ProbeRequest{}); clientErr <- err }()
	<-started
	ts2.srv.Stop()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler context after Stop: %v", err)
	}
	if err := <-clientErr; status.Code(err) != codes.Unavailable {
		t.Fatalf("client after Stop: %v, want Unavailable", err)
	}
}
