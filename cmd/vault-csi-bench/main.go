// Command vault-csi-bench is a load generator that speaks CSI to a node
// plugin's unix socket the way kubelet does for an inline (ephemeral) volume:
// kubelet-shaped targets under <root>/pods/<uid>/volumes/kubernetes.io~csi/,
// pod info and a fresh service-account token on every NodePublishVolume, one
// gRPC connection per call, and kubelet's periodic re-publish.
//
// By default it starts a Vault dev server (provider/vaulttest) and the driver
// binary itself; --socket and --vault-addr point it at ones already running,
// and --attributes-file lets the same command drive another CSI driver.
//
// Vault requests are counted from Vault's own metrics
// (GET /v1/sys/metrics?format=prometheus: vault_core_handle_request_count +
// vault_core_handle_login_request_count, broken down by vault_route_*_count),
// diffed around each scenario.
//
//	go run ./cmd/vault-csi-bench --short            # the quick set, < 5 min on 2 cores
//	go run ./cmd/vault-csi-bench --volumes 10000    # everything, 10,000 volumes
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
	"vaultcsi.dev/driver/driver/rawsock"
)

type config struct {
	socket      string
	driverBin   string
	driverPID   int
	driverArgs  stringList
	driverLog   string
	vaultAddr   string
	vaultToken  string
	authMount   string
	role        string
	namespace   string
	sa          string
	audience    string
	scenarios   map[string]bool
	secrets     []int
	concurrency []int
	volumes     int
	iterations  int
	duration    time.Duration
	jsonOut     string
	short       bool
	attrsFile   string
	rotPeriod   time.Duration // driver --rotation-period; 0: auto
	rotWait     time.Duration // external driver: how long to wait before the rotation pass
	rotConc     int
	unpubConc   int
	connMode    string // kubelet | shared
	tokenIn     string // secrets | context
	repubToken  string // same | fresh
	fsGroup     string
	warmup      int
	timeout     time.Duration
	latencies   []time.Duration // --vault-latency: round trips the proxy adds; nil: no proxy
	auth        string          // authJWT | authKubernetes
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

var allScenarios = []string{"cold", "throughput", "republish", "rotation", "unpublish"}

func main() {
	os.Exit(realMain())
}

func realMain() int {
	if len(os.Args) == 3 && os.Args[1] == connFloorFlag {
		l, err := rawsock.Listen(os.Args[2])
		if err == nil {
			err = serveConnFloor(l)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "vault-csi-bench connection floor:", err)
			return 1
		}
		return 0
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "vault-csi-bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	b := &bench{cfg: cfg}
	err = b.runGuarded(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vault-csi-bench:", err)
		return 1
	}
	return 0
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("vault-csi-bench", flag.ContinueOnError)
	c := &config{}
	var scen, secrets, conc, lats string
	fs.StringVar(&c.socket, "socket", "", "CSI socket of a driver already running (default: start --driver-bin)")
	fs.StringVar(&c.driverBin, "driver-bin", "bin/vault-csi-driver", "driver binary the bench starts itself (with --auth-method of --auth, state dir under /dev/shm)")
	fs.IntVar(&c.driverPID, "driver-pid", 0, "pid of the driver behind --socket, for RSS and CPU")
	fs.Var(&c.driverArgs, "driver-arg", "extra flag for the driver the bench starts (repeatable)")
	fs.StringVar(&c.driverLog, "driver-log", "", "file for the started driver's output (default: in the temp root, removed at exit)")
	fs.StringVar(&c.vaultAddr, "vault-addr", "", "an existing Vault (default: start a dev server via provider/vaulttest)")
	fs.StringVar(&c.vaultToken, "vault-token", "", "token for --vault-addr able to configure auth, policies, KV and read sys/metrics")
	fs.StringVar(&c.authMount, "auth-mount", "", "jwt auth mount (default: vaulttest's \"jwt\"; \"vault-csi-bench\" on --vault-addr)")
	fs.StringVar(&c.role, "role", "bench", "Vault role (and policy) the bench pods log in as")
	fs.StringVar(&c.namespace, "namespace", "bench", "pods' namespace")
	fs.StringVar(&c.sa, "service-account", "bench", "pods' service account")
	fs.StringVar(&c.audience, "audience", "vault", "token audience (CSIDriver tokenRequests)")
	fs.StringVar(&scen, "scenarios", strings.Join(allScenarios, ","), "comma list of "+strings.Join(allScenarios, ","))
	fs.StringVar(&secrets, "secrets", "1,3,10,100", "secrets per volume for the cold scenario")
	fs.StringVar(&conc, "concurrency", "1,8,32,128", "concurrency levels for the throughput scenario")
	fs.IntVar(&c.volumes, "volumes", 1000, "volumes mounted by the throughput scenario and kept for the next ones (max 10000)")
	fs.IntVar(&c.iterations, "iterations", 200, "cold publish+unpublish iterations per secret count")
	fs.DurationVar(&c.duration, "duration", 3*time.Minute, "time limit of each scenario's measured loop")
	fs.StringVar(&c.jsonOut, "json", "bench-results.json", "JSON results file (empty: none)")
	fs.BoolVar(&c.short, "short", false, "the quick set: 100 iterations, 700 volumes, 60s limits (< 5 min on 2 cores)")
	fs.StringVar(&c.attrsFile, "attributes-file", "", "YAML/JSON volumeAttributes replacing role/secrets (another driver): a flat map, or a map from secret count (or \"default\") to a map")
	fs.DurationVar(&c.rotPeriod, "rotation-period", 0, "--rotation-period of the driver the bench starts (0: auto, max(10s, 4s + volumes x 10ms), so that the no-change re-publish runs before any volume falls due)")
	fs.DurationVar(&c.rotWait, "rotation-wait", 0, "with --socket: wait this long after the last publish before the rotation pass (0: 2m10s)")
	fs.IntVar(&c.rotConc, "rotation-concurrency", 8, "concurrency of the rotation re-publish pass")
	fs.IntVar(&c.unpubConc, "unpublish-concurrency", 8, "concurrency of the unpublish-all scenario")
	fs.StringVar(&c.connMode, "conn", "kubelet", "kubelet: a new gRPC connection per call, as kubelet does; shared: one connection")
	fs.StringVar(&c.tokenIn, "token-in", "secrets", "where the SA token travels: secrets (kubelet 1.35+, serviceAccountTokenInSecrets) or context")
	fs.StringVar(&c.repubToken, "republish-token", repubSame, "token of the no-change re-publish: same (the publish's, as kubelet's token manager sends until 80% of its TTL) or fresh (a new one per call: a renewal every time)")
	fs.StringVar(&c.fsGroup, "fsgroup", "2000", "pod fsGroup sent as volume_mount_group when the driver has VOLUME_MOUNT_GROUP (empty: none)")
	fs.IntVar(&c.warmup, "warmup", 5, "untimed publish+unpublish cycles before the cold scenario")
	fs.DurationVar(&c.timeout, "call-timeout", 2*time.Minute, "deadline of one CSI call (kubelet's csiTimeout is 2m)")
	fs.StringVar(&lats, "vault-latency", "", "comma list of round-trip delays (e.g. 0,5ms,20ms) a TCP proxy in the bench adds between the driver (and the floor client) and Vault, D/2 each way; the cold scenario runs at each (empty: no proxy)")
	fs.StringVar(&c.auth, "auth", authJWT, "jwt: tokens the bench signs, Vault checks the signature; kubernetes: a control plane of the bench's own (hack/cluster/up.sh --control-plane), pods as API objects, TokenRequest tokens bound to them, a TokenReview on every login")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.short {
		if !set["iterations"] {
			c.iterations = 100
		}
		if !set["volumes"] {
			c.volumes = 700
		}
		if !set["duration"] {
			c.duration = 60 * time.Second
		}
	}
	c.scenarios = map[string]bool{}
	for _, s := range splitList(scen) {
		ok := false
		for _, a := range allScenarios {
			ok = ok || a == s
		}
		if !ok {
			return nil, fmt.Errorf("--scenarios: unknown %q (want %s)", s, strings.Join(allScenarios, ","))
		}
		c.scenarios[s] = true
	}
	var err error
	if c.latencies, err = durationList(lats, time.Second); err != nil {
		return nil, fmt.Errorf("--vault-latency: %w", err)
	}
	if c.secrets, err = intList(secrets, 1, 256); err != nil {
		return nil, fmt.Errorf("--secrets: %w", err)
	}
	if c.concurrency, err = intList(conc, 1, 1024); err != nil {
		return nil, fmt.Errorf("--concurrency: %w", err)
	}
	switch {
	case c.volumes < 1 || c.volumes > 10000:
		return nil, errors.New("--volumes: 1..10000")
	case c.iterations < 1 || c.iterations > 100000:
		return nil, errors.New("--iterations: 1..100000")
	case c.duration <= 0 || c.duration > 2*time.Hour:
		return nil, errors.New("--duration: (0, 2h]")
	case c.rotConc < 1 || c.rotConc > 1024, c.unpubConc < 1 || c.unpubConc > 1024:
		return nil, errors.New("--rotation-concurrency, --unpublish-concurrency: 1..1024")
	case c.auth != authJWT && c.auth != authKubernetes:
		return nil, fmt.Errorf("--auth: %s or %s", authJWT, authKubernetes)
	case c.auth == authKubernetes && (c.vaultAddr != "" || c.attrsFile != ""):
		return nil, errors.New("--auth kubernetes: with the bench's own Vault and attributes only")
	case c.connMode != "kubelet" && c.connMode != "shared":
		return nil, errors.New("--conn: kubelet or shared")
	case c.repubToken != repubSame && c.repubToken != repubFresh:
		return nil, errors.New("--republish-token: same or fresh")
	case c.tokenIn != "secrets" && c.tokenIn != "context":
		return nil, errors.New("--token-in: secrets or context")
	case c.vaultAddr != "" && c.vaultToken == "":
		return nil, errors.New("--vault-addr needs --vault-token (to configure the role and read sys/metrics)")
	case c.rotPeriod != 0 && c.rotPeriod < 10*time.Second:
		return nil, errors.New("--rotation-period: the driver's floor is 10s")
	case c.warmup < 0 || c.warmup > 1000:
		return nil, errors.New("--warmup: 0..1000")
	}
	if c.fsGroup != "" {
		if _, err := strconv.Atoi(c.fsGroup); err != nil {
			return nil, errors.New("--fsgroup: a number")
		}
	}
	if c.rotPeriod == 0 {
		c.rotPeriod = 4*time.Second + time.Duration(c.volumes)*10*time.Millisecond
		if c.rotPeriod < 10*time.Second {
			c.rotPeriod = 10 * time.Second
		}
		c.rotPeriod = c.rotPeriod.Round(time.Second)
	}
	if c.rotWait == 0 {
		c.rotWait = 2*time.Minute + 10*time.Second
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// durationList parses a comma list of durations in [0, hi]; a bare 0 is
// allowed. Empty gives nil.
func durationList(s string, hi time.Duration) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range splitList(s) {
		if f == "0" {
			out = append(out, 0)
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil || d < 0 || d > hi {
			return nil, fmt.Errorf("%q: want durations in 0..%s", f, hi)
		}
		out = append(out, d)
	}
	return out, nil
}

func intList(s string, lo, hi int) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%q: want numbers in %d..%d", f, lo, hi)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// runGuarded runs the bench and always cleans up, even on a panic.
func (b *bench) runGuarded(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
		if cerr := b.cleanup(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	return b.run(ctx)
}
