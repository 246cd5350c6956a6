package main

import (
	"context"
	"fmt"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"math"
	"sort"
	"sync"
	"time"
)

// cold: publish then unpublish a fresh pod's volume, N iterations per
// secret count; Vault is scraped around every call, so the per-publish
// request counts are exact.
func (b *bench) cold(ctx context.Context) error {
	c := b.cfg
	kubelet := c.connMode == "kubelet"
	// Warm-up: the first calls open the driver's Vault connections.
	if c.warmup > 0 {
		for i := 0; i < c.warmup && ctx.Err() == nil; i++ {
			v, err := b.newVol("warm", 1)
			if err != nil {
				return err
			}
			tok, err := b.tokensFor(v)
			if err != nil {
				return fmt.Errorf("%w: warm-up token: %w", errFatal, err)
			}
			if _, err := b.publish(ctx, kubelet, v, tok); err != nil {
				b.removePod(v)
				return fmt.Errorf("%w: warm-up publish: %w", errFatal, err)
			}
			if _, err := b.unpublish(ctx, kubelet, v); err != nil {
				return fmt.Errorf("%w: warm-up unpublish: %w", errFatal, err)
			}
		}
	}
	// The floor client's connections, warmed the same way.
	maxN := 0
	for _, n := range c.secrets {
		maxN = max(maxN, n)
	}
	for i := 0; i < 2; i++ {
		p, err := b.newVol("floorwarm", maxN)
		if err != nil {
			return err
		}
		b.removePod(p)
		jwt, err := b.jwt(p)
		if err != nil {
			return fmt.Errorf("%w: floor warm-up token: %w", errFatal, err)
		}
		if _, err := b.floor.run(ctx, jwt, maxN, floorParallel); err != nil {
			return fmt.Errorf("%w: floor warm-up: %w", errFatal, err)
		}
	}
	// The later scenarios measure the driver, not Vault's distance.
	defer func() {
		if b.proxy != nil {
			b.proxy.setRTT(0)
		}
		b.rtt = 0
	}()
	rtts := c.latencies
	if rtts == nil {
		rtts = []time.Duration{0} // no proxy
	}
	for _, rtt := range rtts {
		if b.proxy != nil {
			b.proxy.setRTT(rtt)
		}
		b.rtt = rtt
		// kubelet dials a new connection per call; the shared-connection
		// series shows the driver's own cost (at 0 ms only: the latency
		// rows are about Vault's distance).
		modes := []bool{kubelet}
		if kubelet && rtt == 0 {
			modes = append(modes, false)
		}
		for _, n := range c.secrets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fl, err := b.floorSeries(ctx, n)
			if err != nil {
				return err
			}
			logf("  floor %3d secrets, rtt %s: sequential p50 %.2fms, parallel p50 %.2fms p99 %.2fms", n, rtt,
				fl.Sequential.P50, fl.Parallel.P50, fl.Parallel.P99)
			for _, km := range modes {
				if err := b.coldSeries(ctx, n, km, fl); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func modeName(kubelet bool) string {
	if kubelet {
		return "kubelet"
	}
	return "shared"
}

func (b *bench) coldSeries(ctx context.Context, n int, kubelet bool, fl floorResult) error {
	c := b.cfg
	vols := make([]*vol, c.iterations)
	for i := range vols {
		v, err := b.newVol(fmt.Sprintf("cold%d", n), n)
		if err != nil {
			return err
		}
		vols[i] = v
	}
	tokens, err := b.mintAll(ctx, vols)
	if err != nil {
		return err
	}
	r := coldResult{Secrets: n, Mode: modeName(kubelet), RTTMs: ms(b.rtt), Floor: fl}
	var pubCPU float64 // the driver's CPU inside the publish calls only
	cpuOK := true
	var pubLat, unpubLat []time.Duration
	var pubVault, unpubVault []vaultDelta
	p0, v0 := readProc(b.pid), b.vault.scrape()
	deadline := time.Now().Add(c.duration)
	errs := 0
	i := 0
	for ; i < len(vols) && ctx.Err() == nil && time.Now().Before(deadline); i++ {
		v := vols[i]
		s0 := b.vault.scrape()
		c0, ok0 := cpuSeconds(b.pid)
		d, err := b.publish(ctx, kubelet, v, tokens[i])
		c1, ok1 := cpuSeconds(b.pid)
		s1 := b.vault.scrape()
		if err == nil {
			pubCPU += c1 - c0
			cpuOK = cpuOK && ok0 && ok1
		}
		if err != nil {
			b.removePod(v)
			errs++
			r.Errors = append(r.Errors, err.Error())
			if errs >= 5 && errs > i/10 {
				break
			}
			continue
		}
		if i == 0 {
			if err := b.verify(v); err != nil {
				r.Errors = append(r.Errors, "verify: "+err.Error())
			}
		}
		du, err := b.unpublish(ctx, kubelet, v)
		s2 := b.vault.scrape()
		if err != nil {
			errs++
			r.Errors = append(r.Errors, "unpublish: "+err.Error())
			continue
		}
		pubLat, unpubLat = append(pubLat, d), append(unpubLat, du)
		pubVault, unpubVault = append(pubVault, diff(s0, s1)), append(unpubVault, diff(s1, s2))
	}
	for _, v := range vols[i:] {
		b.removePod(v) // not run: the limit or an interrupt
	}
	p1, v1 := readProc(b.pid), b.vault.scrape()
	r.Iterations = len(pubLat)
	r.Publish, r.Unpublish = stats(pubLat), stats(unpubLat)
	r.VaultPerPublish, r.VaultPerUnpublish = perCall(pubVault), perCall(unpubVault)
	r.VaultTotal = diff(v0, v1)
	r.Proc = delta(p0, p1)
	if r.Iterations > 0 && cpuOK && r.Proc.OK {
		r.CPUPerPublishMs = round3(pubCPU * 1000 / float64(r.Iterations))
		r.CPUPerCycleMs = round3(r.Proc.CPUSeconds * 1000 / float64(r.Iterations))
	}
	r.VsSequential, r.VsParallel = compare(r.Publish, fl.Sequential), compare(r.Publish, fl.Parallel)
	r.Errors = capErrors(r.Errors)
	b.res.Cold = append(b.res.Cold, r)
	logf("  cold %3d secrets, %-7s, rtt %s: %d its, publish p50 %.2fms p99 %.2fms (floor par p50 %.2fms, x%.2f), CPU %.2f ms/publish, vault/publish %s",
		n, r.Mode, b.rtt, r.Iterations, r.Publish.P50, r.Publish.P99, fl.Parallel.P50, r.VsParallel.RatioP50, r.CPUPerPublishMs, r.VaultPerPublish.short())
	return nil
}

// throughput: publish --volumes volumes, split across the concurrency
// levels, and keep them mounted.
func (b *bench) throughput(ctx context.Context) error {
	c := b.cfg
	kubelet := c.connMode == "kubelet"
	levels := c.concurrency
	report := c.scenarios["throughput"]
	if !report {
		levels = []int{8} // setup for the later scenarios only
	}
	vols := make([]*vol, c.volumes)
	for i := range vols {
		v, err := b.newVol("tp", 3)
		if err != nil {
			return err
		}
		vols[i] = v
	}
	logf("  minting %d tokens...", len(vols))
	tokens, err := b.mintAll(ctx, vols)
	if err != nil {
		return err
	}
	// The re-publish scenario's tokens too: signing after the throughput
	// run would eat into the window before the volumes fall due.
	if c.scenarios["republish"] && c.repubToken == repubFresh {
		for pass := 0; pass < 2; pass++ {
			t, err := b.mintAll(ctx, vols)
			if err != nil {
				return err
			}
			for i, v := range vols {
				v.repub[pass] = t[i]
			}
		}
	}
	settle()
	b.res.Memory.ZeroVolumes = readProc(b.pid)
	var mounted atomicCounter
	deadline := time.Now().Add(c.duration)
	base := 0
	for li, conc := range levels {
		n := c.volumes / len(levels)
		if li == len(levels)-1 {
			n = c.volumes - base
		}
		part := vols[base : base+n]
		ptoks := tokens[base : base+n]
		base += n
		r := tputResult{Concurrency: conc, Requested: n}
		lat := make([]time.Duration, n)
		okv := make([]bool, n)
		p0, v0 := readProc(b.pid), b.vault.scrape()
		rs := b.vault.sampleRates(c.duration + time.Minute)
		start := time.Now()
		ran, errs := pool(ctx, n, conc, deadline, func(i int) error {
			d, err := b.publish(ctx, kubelet, part[i], ptoks[i])
			if c.repubToken == repubSame {
				part[i].repub = [2]string{ptoks[i], ptoks[i]}
			}
			if err != nil {
				b.removePod(part[i])
				return err
			}
			lat[i], okv[i] = d, true
			part[i].fetched = part[i].touched
			if mounted.inc() == rssMark {
				s := readProc(b.pid)
				b.res.Memory.AtMark = &s
			}
			return nil
		})
		wall := time.Since(start)
		peak, buckets := rs.finish()
		p1, v1 := readProc(b.pid), b.vault.scrape()
		var good []time.Duration
		for i := 0; i < n; i++ {
			if okv[i] {
				good = append(good, lat[i])
				b.live = append(b.live, part[i])
			} else if i >= ran {
				b.removePod(part[i])
			}
		}
		r.Published = len(good)
		r.runStats = newRunStats(good, errs, wall, v0, v1, p0, p1, peak, buckets)
		r.MountedAfter = len(b.live)
		if report {
			b.res.Throughput = append(b.res.Throughput, r)
		}
		logf("  concurrency %3d: %d/%d published in %.2fs = %.1f/s, p50 %.2fms p99 %.2fms, vault %s",
			conc, r.Published, n, r.WallSeconds, r.PerSecond, r.Latency.P50, r.Latency.P99, r.Vault.short())
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	for i := base; i < len(vols); i++ {
		b.removePod(vols[i])
	}
	b.res.Memory.Mounted = len(b.live)
	b.res.Memory.AtN = readProc(b.pid)
	if len(b.live) > 0 && len(b.live) < c.volumes {
		return fmt.Errorf("only %d of %d volumes mounted", len(b.live), c.volumes)
	}
	if len(b.live) > 0 {
		if err := b.verify(b.live[len(b.live)-1]); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
	}
	return nil
}

// settle gives the driver a moment after the cold scenario so the
// zero-volume RSS baseline is not taken mid-burst.
func settle() { time.Sleep(500 * time.Millisecond) }

type atomicCounter struct {
	mu sync.Mutex
	n  int
}

func (a *atomicCounter) inc() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	return a.n
}

const (
	repubSame  = "same"
	repubFresh = "fresh"
)

// republish: kubelet's periodic NodePublishVolume on every mounted volume,
// nothing due, with the token of the publish (kubelet's token manager
// sends the same one until 80% of its TTL) or, with --republish-token
// fresh, a new one per call (a renewal every time, the worst case). Two passes: kubelet's connection per
// call (and its NodeGetCapabilities), then one shared connection (the
// driver's own cost).
func (b *bench) republish(ctx context.Context) error {
	c := b.cfg
	if len(b.live) == 0 {
		return fmt.Errorf("no mounted volumes")
	}
	for pass, kubelet := range []bool{true, false} {
		mode := modeName(kubelet)
		r := repubResult{Mode: mode}
		var lat []time.Duration
		var errs []error
		var reqs []*csi.NodePublishVolumeRequest // replayed to the connection floor
		p0, v0 := readProc(b.pid), b.vault.scrape()
		deadline := time.Now().Add(c.duration)
		for _, v := range b.live {
			if ctx.Err() != nil || time.Now().After(deadline) {
				break
			}
			// Only volumes that are surely not due: this scenario measures
			// the no-op path.
			if b.drv != nil && time.Until(v.fetched.Add(c.rotPeriod)) < 2*time.Second {
				r.SkippedDue++
				continue
			}
			tok := v.repub[pass]
			if tok == "" {
				var err error
				if tok, err = b.tokensFor(v); err != nil { // not pre-minted: signed outside the timed call
					errs = append(errs, err)
					continue
				}
			}
			d, err := b.publish(ctx, kubelet, v, tok)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			lat = append(lat, d)
			reqs = append(reqs, b.request(v, tok))
		}
		p1, v1 := readProc(b.pid), b.vault.scrape()
		r.Latency, r.Vault, r.Proc = stats(lat), diff(v0, v1), delta(p0, p1)
		r.CPUPerOpMs = cpuPerOp(r.Proc, len(lat))
		r.Errors, r.ErrorSummary = len(errs), errSummary(errs)
		if r.Proc.OK {
			floor, err := b.connFloor(ctx, kubelet, reqs)
			if err != nil {
				return fmt.Errorf("connection floor: %w", err)
			}
			r.FloorCPUPerOpMs = floor
		}
		b.res.Republish = append(b.res.Republish, r)
		logf("  republish %s: %d, p50 %.3fms p99 %.3fms, vault %s, skipped(due) %d, CPU/op %.3fms (connection floor %.3fms)", mode, r.Latency.N,
			r.Latency.P50, r.Latency.P99, r.Vault.short(), r.SkippedDue, r.CPUPerOpMs, r.FloorCPUPerOpMs)
	}
	return nil
}

// connFloor replays the same calls (kubelet's NodeGetCapabilities, then
// NodePublishVolume) to the connection-floor server and returns its CPU
// per call pair: what the socket I/O alone costs a Go server here.
func (b *bench) connFloor(ctx context.Context, kubelet bool, reqs []*csi.NodePublishVolumeRequest) (float64, error) {
	if len(reqs) == 0 {
		return 0, nil
	}
	p, err := startConnFloor(ctx, b.root)
	if err != nil {
		return 0, err
	}
	defer p.stop()
	cl, err := newCSIClient(p.socket, kubelet, b.cfg.timeout)
	if err != nil {
		return 0, err
	}
	defer cl.close()
	call := func(req *csi.NodePublishVolumeRequest) error {
		if kubelet && b.cfg.fsGroup != "" {
			if _, err := cl.supportsMountGroup(ctx, true); err != nil {
				return err
			}
		}
		_, err := cl.publish(ctx, kubelet, req)
		return err
	}
	for _, req := range reqs[:min(len(reqs), 20)] { // warm: threads and stacks
		if err := call(req); err != nil {
			return 0, err
		}
	}
	p0 := readProc(p.pid())
	for _, req := range reqs {
		if err := call(req); err != nil {
			return 0, err
		}
	}
	return cpuPerOp(delta(p0, readProc(p.pid())), len(reqs)), nil
}

// rotation: change the secrets, wait until every volume is due, then
// re-publish all of them at --rotation-concurrency.
func (b *bench) rotation(ctx context.Context) error {
	c := b.cfg
	if len(b.live) == 0 {
		return fmt.Errorf("no mounted volumes")
	}
	kubelet := c.connMode == "kubelet"
	if b.customAttrs == nil {
		if err := b.vault.putSecrets(3, "v2"); err != nil {
			return err
		}
	}
	// Wait from the latest call that might have refreshed a volume.
	var due time.Time
	for _, v := range b.live {
		if v.touched.After(due) {
			due = v.touched
		}
	}
	if b.drv != nil {
		// The driver adds up to 10% jitter to the period.
		due = due.Add(c.rotPeriod + c.rotPeriod/10 + 500*time.Millisecond)
	} else {
		due = due.Add(c.rotWait)
	}
	toks, err := b.mintAll(ctx, b.live)
	if err != nil {
		return err
	}
	wait := time.Until(due)
	logf("  waiting %s until every volume is due...", wait.Round(100*time.Millisecond))
	if wait > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	r := rotResult{Volumes: len(b.live), Concurrency: c.rotConc, WaitedSeconds: math.Max(0, wait.Seconds())}
	lat := make([]time.Duration, len(b.live))
	okv := make([]bool, len(b.live))
	p0, v0 := readProc(b.pid), b.vault.scrape()
	rs := b.vault.sampleRates(c.duration + time.Minute)
	start := time.Now()
	_, errs := pool(ctx, len(b.live), c.rotConc, start.Add(c.duration), func(i int) error {
		d, err := b.publish(ctx, kubelet, b.live[i], toks[i])
		if err != nil {
			return err
		}
		lat[i], okv[i] = d, true
		b.live[i].fetched = b.live[i].touched
		return nil
	})
	wall := time.Since(start)
	peak, buckets := rs.finish()
	p1, v1 := readProc(b.pid), b.vault.scrape()
	var good []time.Duration
	for i := range lat {
		if okv[i] {
			good = append(good, lat[i])
		}
	}
	for _, v := range b.live {
		if err := b.verify(v); err == nil {
			r.Refreshed++
		}
	}
	if b.customAttrs != nil {
		r.Refreshed = -1
	}
	r.Republished = len(good)
	r.runStats = newRunStats(good, errs, wall, v0, v1, p0, p1, peak, buckets)
	b.res.Rotation = &r
	logf("  rotation: %d republished in %.2fs, %d refreshed, p50 %.2fms p99 %.2fms, vault %s, peak %.0f req/s",
		r.Republished, r.WallSeconds, r.Refreshed, r.Latency.P50, r.Latency.P99, r.Vault.short(), peak)
	return nil
}

// unpublishAll: kubelet's TearDown of every mounted volume.
func (b *bench) unpublishAll(ctx context.Context) error {
	c := b.cfg
	kubelet := c.connMode == "kubelet"
	vols := b.live
	if len(vols) == 0 {
		return fmt.Errorf("no mounted volumes")
	}
	r := unpubResult{Volumes: len(vols), Concurrency: c.unpubConc}
	lat := make([]time.Duration, len(vols))
	okv := make([]bool, len(vols))
	p0, v0 := readProc(b.pid), b.vault.scrape()
	rs := b.vault.sampleRates(c.duration + time.Minute)
	start := time.Now()
	_, errs := pool(ctx, len(vols), c.unpubConc, start.Add(c.duration), func(i int) error {
		d, err := b.unpublish(ctx, kubelet, vols[i])
		if err != nil {
			return err
		}
		lat[i], okv[i] = d, true
		return nil
	})
	wall := time.Since(start)
	peak, _ := rs.finish()
	p1, v1 := readProc(b.pid), b.vault.scrape()
	var good []time.Duration
	var rest []*vol
	for i := range lat {
		if okv[i] {
			good = append(good, lat[i])
		} else {
			rest = append(rest, vols[i])
		}
	}
	b.live = rest
	r.Unpublished = len(good)
	r.runStats = newRunStats(good, errs, wall, v0, v1, p0, p1, peak, nil)
	r.MountsLeft = len(mountsUnder(b.root + "/pods"))
	r.StateFilesLeft = b.drv.stateFiles()
	time.Sleep(500 * time.Millisecond)
	s := readProc(b.pid)
	b.res.Memory.AfterUnpublish = &s
	b.res.Unpublish = &r
	logf("  unpublish: %d in %.2fs = %.1f/s, p50 %.2fms p99 %.2fms, vault %s, mounts left %d, state files left %d",
		r.Unpublished, r.WallSeconds, r.PerSecond, r.Latency.P50, r.Latency.P99, r.Vault.short(), r.MountsLeft, r.StateFilesLeft)
	return nil
}

// stats summarises latencies in milliseconds (nearest-rank percentiles).
// newRunStats summarises a scenario's run: good latencies, errors, wall
// time, Vault counters and driver /proc readings before and after, and the
// peak Vault request rate (with its 1 s buckets, when kept).
func newRunStats(good []time.Duration, errs []error, wall time.Duration, v0, v1 counters, p0, p1 procStats, peak float64, buckets []float64) runStats {
	r := runStats{
		Errors: len(errs), ErrorSummary: errSummary(errs), WallSeconds: wall.Seconds(),
		Latency: stats(good), Vault: diff(v0, v1), PeakVaultPerSecond: peak, Proc: delta(p0, p1),
	}
	if buckets != nil {
		r.VaultBuckets = roundAll(buckets)
	}
	if wall > 0 {
		r.PerSecond = float64(len(good)) / wall.Seconds()
	}
	r.CPUPerOpMs = cpuPerOp(r.Proc, len(good))
	return r
}

// cpuPerOp is the driver's CPU over a phase divided by the operations in it.
func cpuPerOp(p procDelta, n int) float64 {
	if !p.OK || n == 0 {
		return 0
	}
	return round3(p.CPUSeconds * 1000 / float64(n))
}

func ms(d time.Duration) float64 { return round3(float64(d) / 1e6) }

// compare puts a driver figure beside its floor.
func compare(drv, floor latStats) floorRatio {
	if drv.N == 0 || floor.N == 0 || floor.P50 == 0 || floor.P99 == 0 {
		return floorRatio{}
	}
	return floorRatio{
		RatioP50: round3(drv.P50 / floor.P50), RatioP99: round3(drv.P99 / floor.P99),
		OverP50Ms: round3(drv.P50 - floor.P50), OverP99Ms: round3(drv.P99 - floor.P99),
	}
}

func stats(ds []time.Duration) latStats {
	s := latStats{N: len(ds)}
	if len(ds) == 0 {
		return s
	}
	v := make([]float64, len(ds))
	sum := 0.0
	for i, d := range ds {
		v[i] = float64(d) / 1e6
		sum += v[i]
	}
	sort.Float64s(v)
	pct := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		if i < 0 {
			i = 0
		}
		return round3(v[i])
	}
	s.Min, s.P50, s.P90, s.P99, s.Max, s.Mean = round3(v[0]), pct(0.50), pct(0.90), pct(0.99), round3(v[len(v)-1]), round3(sum/float64(len(v)))
	return s
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func roundAll(fs []float64) []float64 {
	out := make([]float64, len(fs))
	for i, f := range fs {
		out[i] = math.Round(f*10) / 10
	}
	return out
}

// perCall summarises per-call Vault deltas: min and max of each count.
func perCall(ds []vaultDelta) callCounts {
	c := callCounts{Calls: len(ds), Available: len(ds) > 0}
	for i, d := range ds {
		if !d.Available {
			c.Available = false
			return c
		}
		if i == 0 {
			c.TotalMin, c.TotalMax, c.LoginMin, c.LoginMax, c.ReadMin, c.ReadMax = d.Total, d.Total, d.Logins, d.Logins, d.Reads, d.Reads
			c.RevokeMin, c.RevokeMax = d.Revokes, d.Revokes
		}
		c.TotalMin, c.TotalMax = math.Min(c.TotalMin, d.Total), math.Max(c.TotalMax, d.Total)
		c.LoginMin, c.LoginMax = math.Min(c.LoginMin, d.Logins), math.Max(c.LoginMax, d.Logins)
		c.ReadMin, c.ReadMax = math.Min(c.ReadMin, d.Reads), math.Max(c.ReadMax, d.Reads)
		c.RevokeMin, c.RevokeMax = math.Min(c.RevokeMin, d.Revokes), math.Max(c.RevokeMax, d.Revokes)
	}
	return c
}

func delta(a, b procStats) procDelta {
	return procDelta{Before: a, After: b, CPUSeconds: round3(b.CPUSeconds - a.CPUSeconds),
		RSSDeltaBytes: b.RSSBytes - a.RSSBytes, OK: a.OK && b.OK}
}

func capErrors(es []string) []string {
	if len(es) > 5 {
		return append(es[:5], fmt.Sprintf("... and %d more", len(es)-5))
	}
	return es
}
