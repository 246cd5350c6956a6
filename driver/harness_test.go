package driver_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"vaultcsi.dev/driver/driver/csitest"
	"vaultcsi.dev/driver/provider/vaulttest"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// The shared fixtures of this package's integration tests: one real Vault
// and the driver binary built once.
var (
	vaultSrv  *vaulttest.Server
	driverBin string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		// make unit-fast: only the pure tests run; the ones that need the
		// driver binary or Vault skip in startDriverFor and vaultFor.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "vcd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	driverBin = filepath.Join(dir, "vault-csi-driver")
	build := exec.Command("go", "build", "-o", driverBin, "../cmd/vault-csi-driver")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build driver:", err)
		return 1
	}
	if vaultSrv, err = vaulttest.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "start vault:", err)
		return 1
	}
	defer vaultSrv.Stop()
	if err := configureVault(vaultSrv); err != nil {
		fmt.Fprintln(os.Stderr, "configure vault:", err)
		return 1
	}
	return m.Run()
}

// The secrets every test can read as shop/payment with role "payments".
const (
	dbPassword  = "pw-Zq8u1-s3cret"
	paypalToken = "paypal-7f0e2-token"
	kv1APIKey   = "kv1-apikey-91ab"
	otherValue  = "other-team-value-443"
)

var shopPod = vaulttest.Pod{Namespace: "shop", PodName: "payment-7d9f", PodUID: "7a1e1f0c-3c3e-4f4e-9a57-2b1b7a0e0001", ServiceAccount: "payment"}

func configureVault(v *vaulttest.Server) error {
	c := v.Root
	policy := vaulttest.ReadPolicy("secret/data/db", "secret/data/paypal", "kv/api", "secret/data/rotating", "secret/data/missing")
	if err := c.Sys().PutPolicy("payments", policy); err != nil {
		return err
	}
	if err := v.CreateRole("payments", "shop", "payment", 0, "payments"); err != nil {
		return err
	}
	for path, data := range map[string]map[string]any{
		"db":       {"password": dbPassword, "user": "payments"},
		"paypal":   {"token": paypalToken},
		"rotating": {"value": "v1"},
		"other":    {"x": otherValue},
	} {
		if _, err := c.KVv2("secret").Put(context.Background(), path, data); err != nil {
			return err
		}
	}
	if _, err := c.Logical().Write("kv/api", map[string]any{"key": kv1APIKey}); err != nil {
		return err
	}
	return nil
}

// driverProc is one running driver process and a CSI client to it.
type driverProc struct {
	cmd      *exec.Cmd
	args     []string // the last start's, for a restart
	socket   string
	stateDir string
	logs     *syncBuffer
	node     csi.NodeClient
	ident    csi.IdentityClient
	conn     *grpc.ClientConn
	done     chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDriver runs the driver binary against the shared Vault with jwt
// auth; extra flags override. The state dir is on /dev/shm (tmpfs).
func startDriver(t testing.TB, extra ...string) *driverProc {
	t.Helper()
	return startDriverFor(t, vaultSrv, extra...)
}

// startDriverFor runs the driver against a given Vault.
func startDriverFor(t testing.TB, v *vaulttest.Server, extra ...string) *driverProc {
	t.Helper()
	need.Long(t, "runs the driver binary against a real Vault")
	dir := t.TempDir()
	stateDir, err := os.MkdirTemp("/dev/shm", "vcd-state-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(stateDir) })
	d := &driverProc{socket: filepath.Join(dir, "csi.sock"), stateDir: stateDir, logs: &syncBuffer{}, done: make(chan struct{})}
	args := []string{
		"--endpoint=unix://" + d.socket, "--node-id=node-1",
		"--vault-addr=" + v.Addr, "--auth-method=jwt", "--auth-mount=" + v.JWTMount,
		"--state-dir=" + stateDir, "--rotation-period=10s", "-v=10",
	}
	d.start(t, append(args, extra...))
	return d
}

func (d *driverProc) start(t testing.TB, args []string) {
	t.Helper()
	_ = os.Remove(d.socket) // a killed driver leaves its socket behind
	d.args = args
	d.cmd = exec.Command(driverBin, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	d.done = make(chan struct{})
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(d.cmd, d.done)
	t.Cleanup(func() {
		select {
		case <-d.done:
			if t.Failed() || !d.cmd.ProcessState.Success() && d.cmd.ProcessState.ExitCode() != -1 {
				t.Logf("driver exited early (%v); its log:\n%s", d.cmd.ProcessState, tail(d.logs.String(), 4000))
			}
		default:
		}
		d.stop(syscall.SIGKILL)
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(d.socket); err == nil {
			break
		}
		select {
		case <-d.done:
			t.Fatalf("driver exited: %s", d.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("driver socket never appeared: %s", d.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	d.conn, d.node, d.ident = conn, csi.NewNodeClient(conn), csi.NewIdentityClient(conn)
	// The socket file can exist before the server answers: wait for a Probe.
	pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.ident.Probe(pctx, &csi.ProbeRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("driver does not answer Probe: %v\n%s", err, tail(d.logs.String(), 4000))
	}
}

func (d *driverProc) stop(sig syscall.Signal) {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// volume is a kubelet-shaped NodePublishVolume request.
type volume struct {
	target    string
	pod       vaulttest.Pod
	role      string
	secrets   string
	extra     map[string]string
	gid       string
	inSecrets bool // token in Secrets (Kubernetes 1.35+) rather than the volume context
}

func newTarget(t testing.TB) string {
	t.Helper()
	parent := t.TempDir()
	target := filepath.Join(parent, "mount")
	t.Cleanup(func() { _ = syscall.Unmount(target, syscall.MNT_DETACH) })
	return target
}

func (v volume) request() *csi.NodePublishVolumeRequest {
	return requestFor(vaultSrv, v)
}

// requestFor builds the request with a token minted by a given Vault's key.
func requestFor(srv *vaulttest.Server, v volume) *csi.NodePublishVolumeRequest {
	role := v.role
	if role == "" {
		role = "payments"
	}
	req := csitest.Publish{
		VolumeID: "csi-" + v.pod.PodUID, Target: v.target, Pod: v.pod,
		Attributes:     map[string]string{"role": role, "secrets": v.secrets},
		Tokens:         vaulttest.TokensJSON("vault", srv.Token(v.pod, time.Hour), time.Now().Add(time.Hour)),
		TokenInSecrets: v.inSecrets, MountGroup: v.gid,
	}.Request()
	for k, val := range v.extra {
		if val == "<delete>" {
			delete(req.VolumeContext, k)
		} else {
			req.VolumeContext[k] = val
		}
	}
	return req
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mountOptions returns the fstype and options of the mount at target.
func mountOptions(t testing.TB, target string) (fstype, opts string, ok bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != target {
			continue
		}
		for i := 6; i < len(f); i++ {
			if f[i] == "-" && i+3 < len(f) {
				return f[i+1], f[5] + "," + f[i+3], true
			}
		}
	}
	return "", "", false
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// dialRegistration waits for the driver's kubelet plugin-registration
// socket under kubelet (its --kubelet-dir) and connects to it as kubelet
// would; the connection is closed at cleanup.
func dialRegistration(t testing.TB, kubelet string) *grpc.ClientConn {
	t.Helper()
	sock := filepath.Join(kubelet, "plugins_registry", "vault.csi.dev-reg.sock")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("registration socket never appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
