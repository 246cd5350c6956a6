// Package driver is the CSI side of vault-csi-driver: the gRPC Identity and
// Node services kubelet calls, volume-context parsing, the tmpfs mount, the
// atomic writer and the republish (rotation) decisions. It reaches Vault only
// through the Fetcher interface.
package driver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/driver/connlimit"
	"vaultcsi.dev/driver/driver/ops"
	"vaultcsi.dev/driver/driver/policy"
	"vaultcsi.dev/driver/driver/rawsock"
	"vaultcsi.dev/driver/driver/state"
	"vaultcsi.dev/driver/driver/unaryserver"
	"vaultcsi.dev/driver/provider"
)

// Fetcher is the driver's view of the provider.
type Fetcher interface {
	Fetch(ctx context.Context, req *provider.Request) (*provider.Result, error)
	Release(ctx context.Context, s *provider.Session) error
	// RenewLease and RenewToken return the Vault requests they made and
	// provider.ErrCapped when max TTL stops the renewal.
	RenewLease(ctx context.Context, s *provider.Session, leaseID string, increment time.Duration) (time.Duration, int, error)
	RenewToken(ctx context.Context, s *provider.Session) (*provider.Session, int, error)
}

// Observer hears about every volume operation (metrics, audit, events).
// All methods must be cheap and must not block.
type Observer interface {
	Observe(op Op)
}

// Op describes one finished volume operation. It carries no secret value.
type Op struct {
	Kind     ops.Kind
	Outcome  ops.Outcome
	Code     string // gRPC code name for failures
	Err      error
	Target   string
	Pod      provider.Identity
	Role     string
	Paths    []string
	Secrets  []provider.SecretInfo
	Latency  time.Duration
	Requests int          // Vault requests made
	LoggedIn bool         // a new Vault login (false: token reused)
	Changed  bool         // files were rewritten
	Rule     string       // the access-policy rule that decided ("" when none)
	Decision ops.Decision // the access policy's answer; "" when it was not asked
	Reason   string       // why a refresh ran (period, lease, token, ...)
	// MountedDelta and LeasesDelta move the mounted-volume and held-lease gauges.
	MountedDelta, LeasesDelta int
	// Container and Signal name a reload signal (Kind ops.Signal).
	Container string
	Signal    ops.ReloadSignal
}

// Config is the driver-wide configuration.
type Config struct {
	Name     string // CSI driver name, vault.csi.dev
	Version  string
	NodeID   string
	Audience string // the service-account token audience to use
	// KubeletDir, when set, pins target paths to kubelet's pod volume layout.
	KubeletDir string
	StateDir   string
	// RotationPeriod is the default and minimum refresh period.
	RotationPeriod time.Duration
	// MaxVolumeBytes bounds one volume's files; the tmpfs is twice as large
	// so the atomic writer can hold old and new payloads during a swap.
	MaxVolumeBytes int64
	// FileMode is the default mode of files.
	FileMode os.FileMode
	// MaxConcurrentFetches bounds publishes and refreshes talking to Vault
	// at once. Throughput is CPU-bound well below it on small nodes; the
	// bound keeps a burst of pods (or a mass rotation) from growing memory
	// and Vault load without limit. Skipped re-publishes never wait.
	MaxConcurrentFetches int
	// MaxConnections bounds the connections held on the CSI socket; at the
	// bound a new one replaces the longest-idle one (see connlimit).
	MaxConnections int
	// MaxConnectionIdle closes a connection with no call in flight for
	// this long (kubelet opens one per call and closes it).
	MaxConnectionIdle time.Duration
	// MaxBytesInFlight bounds the memory all fetches in flight hold at
	// once (Vault responses being decoded, files rendered but not yet
	// written); see provider.Budget. At least provider.MinBudget of
	// MaxVolumeBytes plus every fetch's up-front reservation, so a volume
	// at the limit can always be fetched; 0 picks DefaultMaxBytesInFlight
	// or that minimum, whichever is larger.
	MaxBytesInFlight int64
	// Clock drives the revocation retries (nil: the real clock).
	Clock clock.Clock
}

// Defaults for Config fields left zero.
const (
	DefaultName           = "vault.csi.dev"
	DefaultAudience       = "vault"
	DefaultRotationPeriod = 2 * time.Minute
	MinRotationPeriod     = 10 * time.Second
	MaxRotationPeriod     = attributes.MaxRotationPeriod
	DefaultMaxVolumeBytes = 8 << 20
	DefaultFileMode       = 0o440
	DefaultStateDir       = "/run/vault-csi-driver"
	DefaultMaxFetches     = 16
	// DefaultMaxBytesInFlight fits the chart's 256 MiB memory limit: the
	// Go heap may grow to about twice what is live before a collection,
	// so 64 MiB in flight plus the driver's own ~30 MiB stays near 190 MiB.
	DefaultMaxBytesInFlight = 64 << 20
	// fetchReserve is what each fetch reserves before it starts: enough
	// for a volume of small secrets, so most fetches never charge beyond it.
	fetchReserve = 64 << 10
	// DefaultMaxConnections is far above what kubelet holds at once (one
	// per call in flight) and keeps the worst case at about 800 goroutines.
	DefaultMaxConnections    = 256
	MinMaxConnections        = 4
	DefaultMaxConnectionIdle = time.Minute
	MinMaxConnectionIdle     = time.Second
)

// Per-connection bounds of the CSI socket that need no flag.
const (
	// handshakeTimeout closes a connection that does not complete the
	// HTTP/2 handshake (gRPC's default is 120s).
	handshakeTimeout = 10 * time.Second
	// maxStreamsPerConn bounds calls in flight on one connection; kubelet
	// makes one per connection, more wait on the client side.
	maxStreamsPerConn = 64
	// minPingInterval: a client pinging more often, or pinging with no call
	// in flight, is told to go away (gRPC keepalive enforcement).
	minPingInterval = 10 * time.Second
)

// Driver serves CSI Identity and Node.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer

	cfg      Config
	fetcher  Fetcher
	store    *state.Store
	observer Observer
	locks    keyedMutex
	ready    chan struct{}
	rand     func() float64
	policy   func() *policy.Policy
	pods     PodLabeler
	fetchSem chan struct{}
	budget   *provider.Budget
	revoker  *revoker
	parsed   parseCache // per target: re-publishes skip attributes.Parse
	// reloadPods and signaller are set when reload signals are on (SetReload).
	reloadPods PodReader
	signaller  Signaller
}

// New checks the configuration.
func New(cfg Config, f Fetcher, obs Observer) (*Driver, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.NodeID == "" {
		return nil, errors.New("node id is required")
	}
	if cfg.Audience == "" {
		cfg.Audience = DefaultAudience
	}
	if cfg.RotationPeriod == 0 {
		cfg.RotationPeriod = DefaultRotationPeriod
	}
	if cfg.RotationPeriod < MinRotationPeriod {
		return nil, fmt.Errorf("rotation period %s is below the floor of %s", cfg.RotationPeriod, MinRotationPeriod)
	}
	if cfg.RotationPeriod > MaxRotationPeriod {
		return nil, fmt.Errorf("rotation period %s is above the ceiling of %s", cfg.RotationPeriod, MaxRotationPeriod)
	}
	if cfg.MaxVolumeBytes == 0 {
		cfg.MaxVolumeBytes = DefaultMaxVolumeBytes
	}
	if cfg.FileMode == 0 {
		cfg.FileMode = DefaultFileMode
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.MaxConcurrentFetches <= 0 {
		cfg.MaxConcurrentFetches = DefaultMaxFetches
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.MaxConnections < MinMaxConnections {
		return nil, fmt.Errorf("max connections %d is below the floor of %d", cfg.MaxConnections, MinMaxConnections)
	}
	if cfg.MaxConnectionIdle == 0 {
		cfg.MaxConnectionIdle = DefaultMaxConnectionIdle
	}
	if cfg.MaxConnectionIdle < MinMaxConnectionIdle {
		return nil, fmt.Errorf("max connection idle %s is below the floor of %s", cfg.MaxConnectionIdle, MinMaxConnectionIdle)
	}
	// One volume's worst case, plus every fetch's up-front reservation: a
	// fetch that waits for a whole volume's room is then always served.
	least := provider.MinBudget(cfg.MaxVolumeBytes) + int64(cfg.MaxConcurrentFetches)*fetchReserve
	if cfg.MaxBytesInFlight == 0 {
		cfg.MaxBytesInFlight = max(DefaultMaxBytesInFlight, least)
	}
	if cfg.MaxBytesInFlight < least {
		return nil, fmt.Errorf("max bytes in flight %d is below %d, what one volume of %d bytes may need while it is fetched",
			cfg.MaxBytesInFlight, least, cfg.MaxVolumeBytes)
	}
	if cfg.KubeletDir != "" {
		cfg.KubeletDir = filepath.Clean(cfg.KubeletDir)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	store, err := state.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if obs == nil {
		obs = nopObserver{}
	}
	d := &Driver{
		cfg: cfg, fetcher: f, store: store, observer: obs,
		ready: make(chan struct{}), rand: rand.Float64,
		fetchSem: make(chan struct{}, cfg.MaxConcurrentFetches),
		budget:   provider.NewBudget(cfg.MaxBytesInFlight),
	}
	release := func(ctx context.Context, s *provider.Session) error { return d.fetcher.Release(ctx, s) }
	d.revoker = newRevoker(store, release, cfg.Clock, rand.Float64, obs.Observe)
	if o, ok := f.(orphanSink); ok {
		o.SetOrphanHandler(func(s *provider.Session, pod provider.Identity) {
			d.revoker.later(s, revokeLateLogin, who{pod: pod})
		})
	}
	return d, nil
}

// orphanSink is a Fetcher that hands over tokens Vault issued for a login
// whose caller had already given up (provider.Provider does).
type orphanSink interface {
	SetOrphanHandler(func(*provider.Session, provider.Identity))
}

type nopObserver struct{}

func (nopObserver) Observe(Op) {}

// Ready is closed once the CSI socket is listening. Plugin registration
// must wait for it: the socket file exists between bind(2) and listen(2),
// and a connection in that window is refused.
func (d *Driver) Ready() <-chan struct{} { return d.ready }

// Store exposes the state store (for metrics at start-up and tests).
func (d *Driver) Store() *state.Store { return d.store }

// Serve listens on a unix socket endpoint ("unix:///path" or a path) and
// serves until ctx ends; then it stops accepting, lets in-flight calls
// finish (up to grace) and returns. Mounts are left in place.
func (d *Driver) Serve(ctx context.Context, endpoint string, grace time.Duration) error {
	path := strings.TrimPrefix(endpoint, "unix://")
	if path == "" || strings.Contains(endpoint, "://") && !strings.HasPrefix(endpoint, "unix://") {
		return fmt.Errorf("endpoint %q: want unix:///path/to/csi.sock", endpoint)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	// Before the first call: publishes a killed driver left unfinished.
	d.recoverPending()
	rctx, stopRevoking := context.WithCancel(ctx)
	revoking := make(chan struct{})
	go func() { d.revoker.Run(rctx); close(revoking) }()
	defer func() { stopRevoking(); <-revoking }()
	// Accepts, reads and writes without the runtime's syscall gate (see
	// package rawsock for what that saves per connection).
	l, err := rawsock.Listen(path)
	if err != nil {
		return err
	}
	// One client holding connections open must not grow the driver without
	// bound (1,300 idle ones held 3,353 goroutines): cap them, close idle
	// and half-open ones, and bound calls and pings per connection.
	lim := connlimit.New(l, d.cfg.MaxConnections, connlimit.DefaultEvictAfter)
	// kubelet opens a new connection for every call (two per re-publish):
	// unaryserver serves one on a single goroutine (see its package
	// comment). Calls run on long-lived workers whose stacks have already
	// grown to what a publish needs (Vault client, JSON, net/http).
	srv := unaryserver.New(unaryserver.Config{
		MaxConcurrentStreams: maxStreamsPerConn, HandshakeTimeout: handshakeTimeout,
		MaxConnectionIdle: d.cfg.MaxConnectionIdle, MinPingInterval: minPingInterval,
		Interceptors: []grpc.UnaryServerInterceptor{lim.UnaryInterceptor, logInterceptor},
		Workers:      runtime.GOMAXPROCS(0),
	})
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lim) }()
	close(d.ready)
	klog.InfoS("serving CSI", "endpoint", path, "driver", d.cfg.Name, "node", d.cfg.NodeID)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	klog.InfoS("shutting down: draining in-flight calls", "grace", grace)
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		srv.Stop()
	}
	return nil
}

// keyedMutex serialises operations on one target path while letting
// different targets proceed in parallel.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*keyedEntry)
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// acquire waits for a Vault slot, then for the fetch's small memory
// reservation (holding nothing of the budget while it waits: see
// provider.Budget for why that cannot deadlock). It returns a release func
// for both, or the context's error when kubelet gives up first.
func (d *Driver) acquire(ctx context.Context) (func(), *provider.Reservation, error) {
	select {
	case d.fetchSem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	mem, err := d.budget.Reserve(ctx, fetchReserve)
	if err != nil {
		<-d.fetchSem
		return nil, nil, err
	}
	return func() { mem.Close(); <-d.fetchSem }, mem, nil
}
