// Command vault-csi-driver is the CSI node plugin that mounts Vault secrets
// into pods as tmpfs volumes. This file is flags, wiring and signals only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"vaultcsi.dev/driver/driver"
	"vaultcsi.dev/driver/driver/audit"
	"vaultcsi.dev/driver/driver/kube"
	"vaultcsi.dev/driver/driver/metrics"
	"vaultcsi.dev/driver/driver/policy"
	"vaultcsi.dev/driver/driver/registration"
	"vaultcsi.dev/driver/driver/reload"
	"vaultcsi.dev/driver/driver/report"
	"vaultcsi.dev/driver/provider"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type options struct {
	endpoint, nodeID, driverName                  string
	vaultAddr, vaultCACert, vaultNamespace        string
	authMethod, authMount, audience               string
	kubeletDir, registrationEndpoint, healthAddr  string
	stateDir                                      string
	stateOnDisk                                   bool
	metricsAddr, policyFile, auditLog, kubeconfig string
	events, reloadSignals                         bool
	rotationPeriod, shutdownGrace                 time.Duration
	maxVolumeBytes, maxBytesInFlight              int64
	maxFetches, maxConns, maxProcs                int
	maxConnIdle                                   time.Duration
}

func main() {
	klog.InitFlags(nil)
	var o options
	flag.StringVar(&o.endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint (unix socket)")
	flag.StringVar(&o.nodeID, "node-id", "", "this node's name (required)")
	flag.StringVar(&o.driverName, "driver-name", driver.DefaultName, "CSI driver name")
	flag.StringVar(&o.vaultAddr, "vault-addr", os.Getenv("VAULT_ADDR"), "Vault address, e.g. https://vault.vault:8200")
	flag.StringVar(&o.vaultCACert, "vault-ca-cert", "", "PEM file with the CA that signed Vault's certificate")
	flag.StringVar(&o.vaultNamespace, "vault-namespace", "", "Vault Enterprise namespace (default: none)")
	flag.StringVar(&o.authMethod, "auth-method", provider.AuthKubernetes, "Vault auth method: kubernetes or jwt")
	flag.StringVar(&o.authMount, "auth-mount", "", "Vault auth mount path (default: the method's name)")
	flag.StringVar(&o.audience, "audience", driver.DefaultAudience, "service-account token audience (CSIDriver tokenRequests)")
	flag.StringVar(&o.kubeletDir, "kubelet-dir", "", "kubelet root dir; when set, serve plugin registration and pin target paths to its layout")
	flag.StringVar(&o.registrationEndpoint, "kubelet-registration-path", "", "CSI socket path as kubelet sees it (default: the endpoint's path)")
	flag.StringVar(&o.healthAddr, "health-addr", "", "address for /healthz (liveness) and /readyz (kubelet registered the plugin, Vault answered once), e.g. 127.0.0.1:9808 (empty: off)")
	flag.StringVar(&o.stateDir, "state-dir", driver.DefaultStateDir, "per-volume state (lease ids, Vault tokens); must be on tmpfs")
	flag.BoolVar(&o.stateOnDisk, "insecure-state-on-disk", false, "allow a state dir that is not tmpfs (Vault tokens would reach disk)")
	flag.DurationVar(&o.rotationPeriod, "rotation-period", driver.DefaultRotationPeriod, "how often a mounted volume is fetched again (floor 10s, ceiling 720h)")
	flag.DurationVar(&o.shutdownGrace, "shutdown-grace", 20*time.Second, "how long SIGTERM waits for in-flight calls")
	flag.Int64Var(&o.maxVolumeBytes, "max-volume-bytes", driver.DefaultMaxVolumeBytes, "largest total size of one volume's files")
	flag.Int64Var(&o.maxBytesInFlight, "max-bytes-in-flight", 0, "memory all publishes and refreshes together may hold for Vault responses and files not yet written; a publish that needs more waits its turn (0: 64 MiB; at least --max-volume-bytes + 46 MiB + 64 KiB per --max-concurrent-fetches)")
	flag.IntVar(&o.maxFetches, "max-concurrent-fetches", driver.DefaultMaxFetches, "publishes and refreshes talking to Vault at once (others wait; no-change re-publishes never do)")
	flag.IntVar(&o.maxConns, "max-connections", driver.DefaultMaxConnections, "connections held on the CSI socket; at the bound a new one replaces the longest-idle one (floor 4)")
	flag.DurationVar(&o.maxConnIdle, "max-connection-idle", driver.DefaultMaxConnectionIdle, "close a CSI connection with no call in flight for this long (floor 1s)")
	flag.StringVar(&o.metricsAddr, "metrics-addr", "", "address for Prometheus /metrics, e.g. :9809 (empty: off)")
	flag.StringVar(&o.policyFile, "policy-file", "", "access policy (YAML); reloaded on change; empty: Vault policy alone decides")
	flag.StringVar(&o.auditLog, "audit-log", "-", "where audit lines go: - for stdout, a file path, or empty for off")
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for Events and pod labels (default: in-cluster when running in a pod)")
	flag.BoolVar(&o.events, "events", true, "record Kubernetes Events on pods (needs API access)")
	flag.BoolVar(&o.reloadSignals, "reload-signals", false, "let pods ask for a signal to one of their containers after a refresh changed their files (volume attribute reload); needs the host's PID namespace (hostPID) and API access")
	flag.IntVar(&o.maxProcs, "max-procs", defaultMaxProcs, "CPUs that run the driver's Go code at once (GOMAXPROCS; 0: Go's default, the node's CPUs or the container's CPU limit; the GOMAXPROCS env var wins)")
	flag.Parse()

	if err := run(o); err != nil {
		klog.ErrorS(err, "vault-csi-driver failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(o options) error {
	if o.nodeID == "" {
		return errors.New("--node-id is required")
	}
	if err := checkStateDir(o.stateDir, o.stateOnDisk); err != nil {
		return err
	}
	procs, err := setMaxProcs(o.maxProcs)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	m := metrics.New()
	rep := &report.Reporter{Metrics: m}
	if o.auditLog != "" {
		w, closeAudit, err := openAudit(o.auditLog)
		if err != nil {
			return err
		}
		defer closeAudit()
		rep.Audit = audit.New(w, o.nodeID)
	}
	var kc *kube.Client
	if o.kubeconfig != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		var err error
		if kc, err = kube.NewClient(o.kubeconfig); err != nil {
			return err
		}
		if o.events {
			rec := kube.NewRecorder(kc, o.nodeID)
			defer rec.Stop()
			rep.Events = rec
		}
	}

	prov, err := provider.New(provider.Config{
		Addr: o.vaultAddr, CACertFile: o.vaultCACert, Namespace: o.vaultNamespace,
		AuthMethod: o.authMethod, AuthMount: o.authMount,
		OnRequest: func(op string, code int) { m.VaultRequest(op, metrics.StatusClass(code)) },
	})
	if err != nil {
		return fmt.Errorf("--vault-addr/--vault-ca-cert/--auth-method: %w", err)
	}
	d, err := driver.New(driver.Config{
		Name: o.driverName, Version: version, NodeID: o.nodeID, Audience: o.audience,
		KubeletDir: o.kubeletDir, StateDir: o.stateDir, RotationPeriod: o.rotationPeriod,
		MaxVolumeBytes: o.maxVolumeBytes, MaxConcurrentFetches: o.maxFetches, MaxBytesInFlight: o.maxBytesInFlight,
		MaxConnections: o.maxConns, MaxConnectionIdle: o.maxConnIdle,
	}, prov, rep)
	if err != nil {
		return err
	}
	// Gauges start from what a previous process left mounted.
	if vols, err := d.Store().List(); err == nil {
		leases, mounted := 0, 0
		for _, v := range vols {
			if v.Pending {
				continue // a publish a killed driver did not finish: not mounted for a pod
			}
			mounted++
			for _, s := range v.Secrets {
				if s.LeaseID != "" {
					leases++
				}
			}
		}
		m.SetMounted(mounted)
		m.AddLeases(leases)
	}
	if err := m.WatchVolumes(volumeHealth(d.Store())); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}

	errc := make(chan error, 5)
	if o.policyFile != "" {
		// The watcher logs each reload itself; here it is only counted.
		w, err := policy.NewWatcher(o.policyFile, policy.DefaultInterval, func(err error) {
			m.PolicyReload(err == nil)
		})
		if err != nil {
			return fmt.Errorf("--policy-file: %w", err)
		}
		go w.Run(ctx)
		var pods driver.PodLabeler
		if kc != nil {
			pods = kc
		}
		d.SetAccessPolicy(w.Current, pods)
	}

	if o.reloadSignals {
		if kc == nil {
			return errors.New("--reload-signals needs Kubernetes API access (in-cluster or --kubeconfig) to read containers' IDs")
		}
		d.SetReload(kc, reload.Host{})
	}

	go func() { errc <- d.Serve(ctx, o.endpoint, o.shutdownGrace) }()
	ready := &readiness{}
	go ready.watchVault(ctx, prov.Health)
	if o.kubeletDir != "" {
		ep := o.registrationEndpoint
		if ep == "" {
			ep = strings.TrimPrefix(o.endpoint, "unix://")
		}
		reg := &registration.Server{Name: o.driverName, Endpoint: ep}
		ready.registered = reg.Registered
		go func() {
			select {
			case <-d.Ready():
			case <-ctx.Done():
				errc <- nil
				return
			}
			errc <- reg.Serve(ctx, registration.SocketPath(o.kubeletDir, o.driverName))
		}()
	}
	if o.healthAddr != "" {
		go func() { errc <- serveHealth(ctx, o.healthAddr, o.endpoint, ready) }()
	}
	if o.metricsAddr != "" {
		go func() { errc <- metrics.Serve(ctx, o.metricsAddr, m, nil) }()
	}
	klog.InfoS("vault-csi-driver started", "version", version, "node", o.nodeID, "vault", o.vaultAddr,
		"authMethod", prov.Config().AuthMethod, "authMount", prov.Config().AuthMount,
		"policy", o.policyFile != "", "events", rep.Events != nil, "reloadSignals", o.reloadSignals, "maxProcs", procs)
	select {
	case err := <-errc:
		stop()
		return err
	case <-ctx.Done():
		// Serve drains in-flight calls before returning.
		return <-errc
	}
}

// openAudit opens the audit destination: stdout or an append-only file.
func openAudit(dest string) (io.Writer, func(), error) {
	if dest == "-" {
		return os.Stdout, func() {}, nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600) //nolint:gosec // the admin's --audit-log path
	if err != nil {
		return nil, nil, fmt.Errorf("--audit-log: %w", err)
	}
	return f, func() { _ = f.Close() }, nil
}

// checkStateDir refuses a state dir on disk: it holds Vault tokens.
func checkStateDir(dir string, allowDisk bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	const tmpfsMagic, ramfsMagic = 0x01021994, 0x858458f6
	if fs.Type != tmpfsMagic && fs.Type != ramfsMagic && !allowDisk {
		return fmt.Errorf("--state-dir %s is not on tmpfs; it holds Vault tokens, which must not reach disk (use a dir under /run, or --insecure-state-on-disk)", dir)
	}
	return nil
}
