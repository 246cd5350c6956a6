package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"sigs.k8s.io/yaml"

	"vaultcsi.dev/driver/driver/csitest"
	"vaultcsi.dev/driver/provider/vaulttest"
)

const (
	volumeName = "secrets"
	// rssMark is the volume count at which RSS is sampled on the way up
	// (the peer's figure: 116 MB at 601 volumes).
	rssMark = 601
)

type bench struct {
	cfg     *config
	root    string
	vault   *vaultSide
	drv     *driverProc
	cl      *csiClient
	proxy   *latencyProxy // nil without --vault-latency
	kube    *kubeSide     // --auth kubernetes
	floor   *floorClient
	rtt     time.Duration // the proxy's current round-trip delay
	pid     int
	started time.Time

	mountGroup  string // what is sent as volume_mount_group
	customAttrs map[string]map[string]string

	mu      sync.Mutex
	mounted map[string]*vol // target -> volume, for cleanup
	live    []*vol          // the volumes the throughput scenario keeps, in publish order
	seq     atomic.Int64

	res results
}

// vol is one pod's inline volume.
type vol struct {
	pod      vaulttest.Pod
	target   string
	volID    string
	nSecrets int
	attrs    map[string]string
	fetched  time.Time // start of the last publish known to have fetched (the earliest the driver's clock can start)
	touched  time.Time // start of the last successful publish (the latest it can start)
	repub    [2]string // pre-minted tokens for the two re-publish passes
}

func (b *bench) run(ctx context.Context) error {
	c := b.cfg
	b.started = time.Now()
	b.mounted = map[string]*vol{}
	b.res = newResults(c)
	if c.attrsFile != "" {
		m, err := loadAttributes(c.attrsFile)
		if err != nil {
			return err
		}
		b.customAttrs = m
	}
	var err error
	if b.root, err = os.MkdirTemp("", "vcsi-bench-"); err != nil {
		return err
	}
	logf("starting Vault...")
	if b.vault, err = startVault(c); err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	b.res.Vault = vaultInfo{Addr: b.vault.addr, Version: b.vault.version, Started: b.vault.srv != nil, AuthMount: b.vault.authMount}
	if c.auth == authKubernetes {
		logf("starting the control plane (hack/cluster/up.sh --control-plane)...")
		if b.kube, err = startKube(ctx); err != nil {
			return fmt.Errorf("control plane: %w", err)
		}
		if err := b.kube.configureVault(ctx, b.vault, c); err != nil {
			return err
		}
		b.res.Vault.AuthMount = b.vault.authMount
	}
	b.res.Vault.Auth = c.auth
	// The driver and the floor client reach Vault the same way: through
	// the latency proxy when there is one. Metrics scrapes go direct.
	clientAddr := b.vault.addr
	if c.latencies != nil {
		if b.proxy, err = startLatencyProxy(strings.TrimPrefix(strings.TrimPrefix(b.vault.addr, "http://"), "https://")); err != nil {
			return err
		}
		clientAddr = b.proxy.addr()
		b.res.Vault.ProxyAddr = clientAddr
	}
	if b.floor, err = newFloorClient(clientAddr, b.vault.authMount, c.role); err != nil {
		return err
	}
	socket := c.socket
	if socket == "" {
		logf("starting driver %s (--rotation-period=%s)...", c.driverBin, c.rotPeriod)
		var extra []string
		if b.kube != nil { // real Events on the real pods, as in a cluster
			extra = []string{"--kubeconfig=" + b.kube.kubeconfig}
		}
		b.drv, err = startDriver(ctx, c, clientAddr, b.vault.authMount, b.root, extra...)
		if err != nil {
			return fmt.Errorf("driver: %w", err)
		}
		socket, b.pid = b.drv.socket, b.drv.pid
	} else {
		socket = strings.TrimPrefix(socket, "unix://")
		b.pid = c.driverPID
	}
	if b.cl, err = newCSIClient(socket, c.connMode == "kubelet", c.timeout); err != nil {
		return err
	}
	info, err := b.cl.waitReady(ctx, 20*time.Second)
	if err != nil {
		return fmt.Errorf("%w: %s", err, b.drv.tail(20))
	}
	b.res.Driver = driverInfo{Name: info.GetName(), Version: info.GetVendorVersion(), Socket: socket, PID: b.pid,
		Started: b.drv != nil, Bin: c.driverBin}
	if b.drv != nil {
		b.res.Driver.RotationPeriod = c.rotPeriod.String()
	} else {
		b.res.Driver.Bin = ""
	}
	b.res.Memory.AtStart = readProc(b.pid)
	if c.fsGroup != "" {
		ok, err := b.cl.supportsMountGroup(ctx, false)
		if err != nil {
			return fmt.Errorf("NodeGetCapabilities: %w", err)
		}
		if ok {
			b.mountGroup = c.fsGroup
		}
	}
	if b.pid <= 0 {
		logf("no driver pid (--driver-pid): RSS and CPU are not measured")
	}
	if !b.vault.scrape().ok {
		logf("warning: Vault metrics (sys/metrics?format=prometheus) unreadable: Vault calls are not counted")
	}
	logf("driver %s %s, pid %d; Vault %s at %s; root %s", info.GetName(), info.GetVendorVersion(), b.pid, b.vault.version, b.vault.addr, b.root)

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"cold", b.cold}, {"throughput", b.throughput}, {"republish", b.republish},
		{"rotation", b.rotation}, {"unpublish", b.unpublishAll},
	}
	for _, s := range steps {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !c.scenarios[s.name] && (s.name != "throughput" || !b.needsVolumes()) {
			continue
		}
		if b.drv != nil && !b.drv.alive() {
			return fmt.Errorf("driver died: %s", b.drv.tail(30))
		}
		logf("scenario %s...", s.name)
		if err := s.fn(ctx); err != nil {
			b.res.Errors = append(b.res.Errors, s.name+": "+err.Error())
			if ctx.Err() != nil || errors.Is(err, errFatal) {
				return err
			}
			logf("scenario %s: %v", s.name, err)
		}
	}
	b.res.Memory.End = readProc(b.pid)
	b.res.DurationSeconds = time.Since(b.started).Seconds()
	b.res.LoadAvgEnd = loadAvg()
	b.evaluate()
	b.print(os.Stdout)
	if c.jsonOut != "" {
		if err := b.writeJSON(c.jsonOut); err != nil {
			return err
		}
		logf("results written to %s", c.jsonOut)
	}
	return nil
}

var errFatal = errors.New("fatal")

func (b *bench) needsVolumes() bool {
	c := b.cfg.scenarios
	return c["republish"] || c["rotation"] || c["unpublish"]
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// newVol makes a pod with a fresh UID and the parent of its target, as
// kubelet does before calling the driver.
func (b *bench) newVol(prefix string, nSecrets int) (*vol, error) {
	i := b.seq.Add(1)
	uid := newUID()
	p := vaulttest.Pod{Namespace: b.cfg.namespace, PodName: fmt.Sprintf("%s-%d", prefix, i), PodUID: uid, ServiceAccount: b.cfg.sa}
	if b.kube != nil { // a real pod, so its token can be bound to it
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var err error
		uid, err = b.kube.createPod(ctx, p.Namespace, p.PodName, p.ServiceAccount)
		cancel()
		if err != nil {
			return nil, err
		}
		p.PodUID = uid
	}
	target := filepath.Join(b.root, "pods", uid, "volumes", "kubernetes.io~csi", volumeName, "mount")
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(uid + volumeName))
	return &vol{pod: p, target: target, volID: "csi-" + hex.EncodeToString(sum[:]), nSecrets: nSecrets, attrs: b.attrsFor(nSecrets)}, nil
}

func newUID() string {
	h := randHex(16)
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

// removePod removes what kubelet removes after a teardown: the pod's dir.
func (b *bench) removePod(v *vol) {
	_ = os.RemoveAll(filepath.Join(b.root, "pods", v.pod.PodUID))
}

// attrsFor returns the pod's volumeAttributes for a volume of n secrets.
func (b *bench) attrsFor(n int) map[string]string {
	if b.customAttrs != nil {
		if m, ok := b.customAttrs[strconv.Itoa(n)]; ok {
			return m
		}
		return b.customAttrs["default"]
	}
	var s strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&s, "- file: s%d\n  path: secret/data/%s%d\n  key: value\n", i, benchKVPrefix, i)
	}
	return map[string]string{"role": b.cfg.role, "secrets": s.String()}
}

// loadAttributes reads --attributes-file: a flat map of attributes, or a
// map from secret count (or "default") to one.
func loadAttributes(path string) (map[string]map[string]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var top map[string]any
	if err := yaml.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("--attributes-file: %w", err)
	}
	flat := map[string]string{}
	nested := map[string]map[string]string{}
	for k, v := range top {
		switch x := v.(type) {
		case string:
			flat[k] = x
		case map[string]any:
			m := map[string]string{}
			for k2, v2 := range x {
				s, ok := v2.(string)
				if !ok {
					return nil, fmt.Errorf("--attributes-file: %s.%s: values must be strings", k, k2)
				}
				m[k2] = s
			}
			nested[k] = m
		default:
			return nil, fmt.Errorf("--attributes-file: %s: values must be strings or maps of strings", k)
		}
	}
	if len(flat) > 0 && len(nested) > 0 {
		return nil, errors.New("--attributes-file: either a flat map or a map of maps, not both")
	}
	if len(flat) > 0 {
		return map[string]map[string]string{"default": flat}, nil
	}
	if _, ok := nested["default"]; !ok {
		return nil, errors.New(`--attributes-file: a map of maps needs a "default" entry`)
	}
	return nested, nil
}

// jwt is the pod's service-account token for the audience: signed by the
// bench (jwt auth), or kubelet's TokenRequest bound to the pod (kubernetes).
func (b *bench) jwt(v *vol) (string, error) {
	if b.kube != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return b.kube.token(ctx, v.pod, b.cfg.audience)
	}
	return b.vault.mint(v.pod, b.cfg.audience), nil
}

// tokensFor mints the serviceAccount.tokens value kubelet would send.
func (b *bench) tokensFor(v *vol) (string, error) {
	t, err := b.jwt(v)
	if err != nil {
		return "", err
	}
	return vaulttest.TokensJSON(b.cfg.audience, t, time.Now().Add(time.Hour)), nil
}

// mintAll pre-mints one token per volume, in parallel, so RSA signing is
// never inside a measurement.
func (b *bench) mintAll(ctx context.Context, vols []*vol) ([]string, error) {
	out := make([]string, len(vols))
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < 2*runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(vols) {
					return
				}
				t, err := b.tokensFor(vols[i])
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
				out[i] = t
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return out, ctx.Err()
}

// request is the NodePublishVolumeRequest kubelet builds for an inline
// volume with podInfoOnMount and tokenRequests.
func (b *bench) request(v *vol, tokens string) *csi.NodePublishVolumeRequest {
	return csitest.Publish{
		VolumeID: v.volID, Target: v.target, Pod: v.pod, Attributes: v.attrs,
		Tokens: tokens, TokenInSecrets: b.cfg.tokenIn == "secrets", MountGroup: b.mountGroup,
	}.Request()
}

// publish is kubelet's SetUp: NodeGetCapabilities (VOLUME_MOUNT_GROUP),
// then NodePublishVolume, each on its own connection in kubelet mode. Only
// NodePublishVolume is timed.
func (b *bench) publish(ctx context.Context, kubelet bool, v *vol, tokens string) (time.Duration, error) {
	if kubelet && b.cfg.fsGroup != "" {
		if _, err := b.cl.supportsMountGroup(ctx, true); err != nil {
			return 0, fmt.Errorf("NodeGetCapabilities: %w", err)
		}
	}
	start := time.Now()
	d, err := b.cl.publish(ctx, kubelet, b.request(v, tokens))
	if err == nil {
		v.touched = start
		b.mu.Lock()
		b.mounted[v.target] = v
		b.mu.Unlock()
	}
	return d, err
}

// unpublish is kubelet's TearDown, then the removal of the pod's dirs.
func (b *bench) unpublish(ctx context.Context, kubelet bool, v *vol) (time.Duration, error) {
	d, err := b.cl.unpublish(ctx, kubelet, v.volID, v.target)
	if err == nil {
		b.mu.Lock()
		delete(b.mounted, v.target)
		b.mu.Unlock()
		b.removePod(v)
	}
	return d, err
}

// pool runs fn(i) for i in [0,n) on conc workers until done, the deadline
// or cancellation. It returns how many ran and the errors.
func pool(ctx context.Context, n, conc int, deadline time.Time, fn func(i int) error) (ran int, errs []error) {
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	var count atomic.Int64
	if conc > n {
		conc = n
	}
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("panic: %v", r))
					mu.Unlock()
				}
			}()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				count.Add(1)
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return int(count.Load()), errs
}

// verify checks that a volume's files hold the current values.
func (b *bench) verify(v *vol) error {
	if b.customAttrs != nil {
		return nil
	}
	for i := 0; i < v.nSecrets; i++ {
		got, err := os.ReadFile(filepath.Join(v.target, "s"+strconv.Itoa(i)))
		if err != nil {
			return err
		}
		if want := b.vault.value(i); string(got) != want {
			return fmt.Errorf("%s/s%d: stale or wrong content", v.target, i)
		}
	}
	return nil
}

func errSummary(errs []error) string {
	if len(errs) == 0 {
		return ""
	}
	counts := map[string]int{}
	for _, e := range errs {
		msg := e.Error()
		if len(msg) > 200 {
			msg = msg[:200]
		}
		counts[msg]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return counts[keys[i]] > counts[keys[j]] })
	if len(keys) > 3 {
		keys = keys[:3]
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%dx %s", counts[k], k)
	}
	return strings.Join(parts, "; ")
}

// cleanup unpublishes whatever is still mounted, stops the driver and
// Vault, detaches any mount left under the root and removes it.
func (b *bench) cleanup() error {
	var firstErr error
	b.mu.Lock()
	left := make([]*vol, 0, len(b.mounted))
	for _, v := range b.mounted {
		left = append(left, v)
	}
	b.mu.Unlock()
	if len(left) > 0 && b.cl != nil {
		logf("cleanup: unpublishing %d volumes...", len(left))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		_, errs := pool(ctx, len(left), 16, time.Now().Add(3*time.Minute), func(i int) error {
			_, err := b.unpublish(ctx, false, left[i])
			return err
		})
		cancel()
		if len(errs) > 0 {
			firstErr = fmt.Errorf("cleanup: %d unpublishes failed: %s", len(errs), errSummary(errs))
		}
	}
	b.cl.close()
	b.drv.stop()
	b.proxy.stop()
	b.vault.stop()
	b.kube.stop()
	if b.root != "" {
		mounts := mountsUnder(b.root)
		for _, m := range mounts {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && firstErr == nil {
				firstErr = fmt.Errorf("cleanup: unmount %s: %w", m, err)
			}
		}
		if len(mounts) > 0 {
			logf("cleanup: detached %d mounts the driver left under %s", len(mounts), b.root)
		}
		if len(mountsUnder(b.root)) == 0 {
			_ = os.RemoveAll(b.root)
		} else {
			logf("cleanup: mounts remain under %s; not removing it", b.root)
		}
	}
	return firstErr
}

// mountsUnder lists mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
