package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

type results struct {
	Timestamp       string         `json:"timestamp"`
	Cores           int            `json:"cores"`
	CPUModel        string         `json:"cpu_model,omitempty"`
	Kernel          string         `json:"kernel,omitempty"`
	GoVersion       string         `json:"go_version"`
	LoadAvgStart    string         `json:"loadavg_start"`
	LoadAvgEnd      string         `json:"loadavg_end"`
	Vault           vaultInfo      `json:"vault"`
	Driver          driverInfo     `json:"driver"`
	Config          runConfig      `json:"config"`
	Cold            []coldResult   `json:"cold,omitempty"`
	Throughput      []tputResult   `json:"throughput,omitempty"`
	Republish       []repubResult  `json:"republish,omitempty"`
	Rotation        *rotResult     `json:"rotation,omitempty"`
	Unpublish       *unpubResult   `json:"unpublish,omitempty"`
	Memory          memResult      `json:"memory"`
	Targets         []targetResult `json:"targets"`
	DurationSeconds float64        `json:"duration_seconds"`
	Errors          []string       `json:"errors,omitempty"`
}

type vaultInfo struct {
	Addr      string `json:"addr"`
	Version   string `json:"version"`
	Started   bool   `json:"started_by_bench"`
	AuthMount string `json:"auth_mount"`
	Auth      string `json:"auth"`                         // jwt | kubernetes (a TokenReview per login)
	ProxyAddr string `json:"latency_proxy_addr,omitempty"` // what the driver and the floor client dial
	Counting  string `json:"request_counting"`
}

type driverInfo struct {
	Name           string `json:"name"`
	Version        string `json:"version"`
	Socket         string `json:"socket"`
	Bin            string `json:"bin,omitempty"`
	PID            int    `json:"pid"`
	Started        bool   `json:"started_by_bench"`
	RotationPeriod string `json:"rotation_period,omitempty"`
}

type runConfig struct {
	Scenarios      []string `json:"scenarios"`
	Secrets        []int    `json:"secrets"`
	Concurrency    []int    `json:"concurrency"`
	Volumes        int      `json:"volumes"`
	Iterations     int      `json:"iterations"`
	Duration       string   `json:"duration_limit"`
	Short          bool     `json:"short"`
	Conn           string   `json:"conn"`
	TokenIn        string   `json:"token_in"`
	RepublishToken string   `json:"republish_token"`
	FSGroup        string   `json:"fsgroup"`
	AttributesFile string   `json:"attributes_file,omitempty"`
	VaultRTTs      []string `json:"vault_rtts,omitempty"` // --vault-latency
}

type latStats struct {
	N    int     `json:"n"`
	Min  float64 `json:"min_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

// callCounts is the range of Vault requests one call caused.
type callCounts struct {
	Available bool    `json:"available"`
	Calls     int     `json:"calls"`
	TotalMin  float64 `json:"total_min"`
	TotalMax  float64 `json:"total_max"`
	LoginMin  float64 `json:"login_min"`
	LoginMax  float64 `json:"login_max"`
	ReadMin   float64 `json:"read_min"`
	ReadMax   float64 `json:"read_max"`
	RevokeMin float64 `json:"revoke_min"`
	RevokeMax float64 `json:"revoke_max"`
}

func rng(a, b float64) string {
	if a == b {
		return fmt.Sprintf("%.0f", a)
	}
	return fmt.Sprintf("%.0f-%.0f", a, b)
}

func (c callCounts) short() string {
	if !c.Available {
		return "n/a"
	}
	s := fmt.Sprintf("%s (login %s, read %s", rng(c.TotalMin, c.TotalMax), rng(c.LoginMin, c.LoginMax), rng(c.ReadMin, c.ReadMax))
	if c.RevokeMax > 0 {
		s += ", revoke " + rng(c.RevokeMin, c.RevokeMax)
	}
	return s + ")"
}

func (d vaultDelta) short() string {
	if !d.Available {
		return "n/a"
	}
	return fmt.Sprintf("%.0f (L%.0f R%.0f X%.0f O%.0f)", d.Total, d.Logins, d.Reads, d.Revokes, d.Other)
}

type procDelta struct {
	OK            bool      `json:"ok"`
	Before        procStats `json:"before"`
	After         procStats `json:"after"`
	CPUSeconds    float64   `json:"cpu_seconds"`
	RSSDeltaBytes int64     `json:"rss_delta_bytes"`
}

type coldResult struct {
	Secrets           int        `json:"secrets"`
	Mode              string     `json:"conn"` // kubelet: a connection per call; shared: one connection
	Iterations        int        `json:"iterations"`
	Publish           latStats   `json:"publish"`
	Unpublish         latStats   `json:"unpublish"`
	VaultPerPublish   callCounts `json:"vault_per_publish"`
	VaultPerUnpublish callCounts `json:"vault_per_unpublish"`
	VaultTotal        vaultDelta `json:"vault_total"`
	Proc              procDelta  `json:"driver"`
	Errors            []string   `json:"errors,omitempty"`

	RTTMs float64 `json:"vault_rtt_ms"` // round trip the latency proxy added
	// The driver's CPU (its process CPU clock, = utime+stime in ns): summed
	// over the publish calls only, and over whole publish+unpublish cycles.
	CPUPerPublishMs float64 `json:"driver_cpu_ms_per_publish"`
	CPUPerCycleMs   float64 `json:"driver_cpu_ms_per_cycle"`
	// The floor: a plain Go client's login + the same reads through the
	// same path, and the driver's publish beside it.
	Floor        floorResult `json:"floor"`
	VsSequential floorRatio  `json:"vs_floor_sequential"`
	VsParallel   floorRatio  `json:"vs_floor_parallel"`
}

// floorRatio is a driver latency divided by (and minus) its floor's.
type floorRatio struct {
	RatioP50  float64 `json:"ratio_p50"`
	RatioP99  float64 `json:"ratio_p99"`
	OverP50Ms float64 `json:"over_p50_ms"`
	OverP99Ms float64 `json:"over_p99_ms"`
}

// runStats is what every load scenario reports about its run; embedded,
// so its fields sit at the top level of each scenario's JSON.
type runStats struct {
	Errors             int        `json:"errors"`
	ErrorSummary       string     `json:"error_summary,omitempty"`
	WallSeconds        float64    `json:"wall_seconds"`
	PerSecond          float64    `json:"per_second"`
	Latency            latStats   `json:"latency"`
	Vault              vaultDelta `json:"vault"`
	PeakVaultPerSecond float64    `json:"peak_vault_req_per_s"`
	VaultBuckets       []float64  `json:"vault_req_1s_buckets,omitempty"`
	Proc               procDelta  `json:"driver"`
	CPUPerOpMs         float64    `json:"driver_cpu_ms_per_op"` // the driver's utime+stime over the phase / operations
}

type tputResult struct {
	Concurrency int `json:"concurrency"`
	Requested   int `json:"requested"`
	Published   int `json:"published"`
	runStats
	MountedAfter int `json:"mounted_after"`
}

type repubResult struct {
	Mode       string     `json:"mode"`
	Latency    latStats   `json:"latency"`
	Vault      vaultDelta `json:"vault"`
	Proc       procDelta  `json:"driver"`
	CPUPerOpMs float64    `json:"driver_cpu_ms_per_op"`
	// FloorCPUPerOpMs: the same calls answered by a Go server that only
	// does their socket I/O (canned frames): the connection floor.
	FloorCPUPerOpMs float64 `json:"floor_cpu_ms_per_op"`
	SkippedDue      int     `json:"skipped_due"`
	Errors          int     `json:"errors"`
	ErrorSummary    string  `json:"error_summary,omitempty"`
}

type rotResult struct {
	Volumes       int     `json:"volumes"`
	Concurrency   int     `json:"concurrency"`
	WaitedSeconds float64 `json:"waited_seconds"`
	Republished   int     `json:"republished"`
	Refreshed     int     `json:"refreshed_verified"` // -1: not checked (custom attributes)
	runStats
}

type unpubResult struct {
	Volumes     int `json:"volumes"`
	Concurrency int `json:"concurrency"`
	Unpublished int `json:"unpublished"`
	runStats
	MountsLeft     int `json:"mounts_left"`
	StateFilesLeft int `json:"state_files_left"`
}

type memResult struct {
	AtStart        procStats  `json:"at_start"`
	ZeroVolumes    procStats  `json:"zero_volumes"` // after the cold scenario, before throughput
	AtMark         *procStats `json:"at_601,omitempty"`
	Mounted        int        `json:"mounted"`
	AtN            procStats  `json:"at_n"`
	PerVolumeBytes float64    `json:"per_volume_bytes"` // (RSS at N - RSS at zero volumes) / N
	AfterUnpublish *procStats `json:"after_unpublish,omitempty"`
	End            procStats  `json:"end"`
}

type targetResult struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Result   string `json:"result"` // PASS, MISS, n/a
}

func newResults(c *config) results {
	r := results{Timestamp: time.Now().UTC().Format(time.RFC3339), Cores: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvgStart: loadAvg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		r.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				r.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	var sc []string
	for _, s := range allScenarios {
		if c.scenarios[s] {
			sc = append(sc, s)
		}
	}
	r.Config = runConfig{Scenarios: sc, Secrets: c.secrets, Concurrency: c.concurrency, Volumes: c.volumes,
		Iterations: c.iterations, Duration: c.duration.String(), Short: c.short, Conn: c.connMode,
		TokenIn: c.tokenIn, RepublishToken: c.repubToken, FSGroup: c.fsGroup, AttributesFile: c.attrsFile}
	for _, d := range c.latencies {
		r.Config.VaultRTTs = append(r.Config.VaultRTTs, d.String())
	}
	r.Vault.Counting = "GET /v1/sys/metrics?format=prometheus: delta of vault_core_handle_request_count + vault_core_handle_login_request_count; " +
		"logins = vault_core_handle_login_request_count, reads = vault_route_read_*_count, revokes = vault_route_update_auth_token__count"
	return r
}

// loadAvg is /proc/loadavg's 1, 5 and 15 minute figures: other work on
// the machine skews every number here.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

const mb = 1e6

func (b *bench) evaluate() {
	r := &b.res
	if r.Memory.Mounted > 0 && r.Memory.AtN.OK && r.Memory.ZeroVolumes.OK {
		r.Memory.PerVolumeBytes = float64(r.Memory.AtN.RSSBytes-r.Memory.ZeroVolumes.RSSBytes) / float64(r.Memory.Mounted)
	}
	add := func(name, target, measured string, ok, avail bool) {
		res := "n/a"
		if avail {
			res = "MISS"
			if ok {
				res = "PASS"
			}
		}
		r.Targets = append(r.Targets, targetResult{Name: name, Target: target, Measured: measured, Result: res})
	}
	cold3 := 0
	for _, cr := range r.Cold {
		if cr.Publish.N == 0 || cr.Mode != "kubelet" {
			continue
		}
		// The targets against the floor, the driver's CPU included.
		fl := cr.Floor.Parallel
		if fl.N > 0 && (cr.RTTMs == 0 || cr.RTTMs == 20 && cr.Secrets == 10) {
			lim := 1.0
			if cr.RTTMs > 0 {
				lim = 2
			}
			add(fmt.Sprintf("cold publish p50 - floor par p50, %d secrets, rtt %g ms", cr.Secrets, cr.RTTMs), fmt.Sprintf("<= %.0f ms", lim),
				fmt.Sprintf("%.2f ms (%.2f vs %.2f)", cr.VsParallel.OverP50Ms, cr.Publish.P50, fl.P50), cr.VsParallel.OverP50Ms <= lim, true)
		}
		if cr.Secrets == 3 && cr.RTTMs == 0 {
			add("driver CPU per cold publish, 3 secrets", "<= 2 ms", fmt.Sprintf("%.2f ms (cycle %.2f ms)", cr.CPUPerPublishMs, cr.CPUPerCycleMs),
				cr.CPUPerPublishMs <= 2, cr.CPUPerPublishMs > 0)
		}
	}
	for _, cr := range r.Cold {
		if cr.Secrets != 3 || cr.Publish.N == 0 || cr.RTTMs != 0 {
			continue
		}
		cold3++
		add("cold publish, 3 secrets, p50, "+cr.Mode, "< 3 ms", fmt.Sprintf("%.2f ms", cr.Publish.P50), cr.Publish.P50 < 3, true)
		add("cold publish, 3 secrets, p99, "+cr.Mode, "< 15 ms", fmt.Sprintf("%.2f ms", cr.Publish.P99), cr.Publish.P99 < 15, true)
	}
	if cold3 == 0 {
		add("cold publish, 3 secrets, p50", "< 3 ms", "not run", false, false)
		add("cold publish, 3 secrets, p99", "< 15 ms", "not run", false, false)
	}
	for _, cr := range r.Cold {
		v := cr.VaultPerPublish
		name := fmt.Sprintf("Vault calls per cold publish, %d secrets, %s", cr.Secrets, cr.Mode)
		target := fmt.Sprintf("1 login + %d reads", cr.Secrets)
		if !v.Available || b.customAttrs != nil {
			add(name, target, "n/a", false, false)
			continue
		}
		ok := v.LoginMin == 1 && v.LoginMax == 1 && v.ReadMin == float64(cr.Secrets) && v.ReadMax == float64(cr.Secrets) &&
			v.TotalMax == float64(cr.Secrets+1)
		add(name, target, fmt.Sprintf("login %s + read %s, total %s (%d publishes)", rng(v.LoginMin, v.LoginMax),
			rng(v.ReadMin, v.ReadMax), rng(v.TotalMin, v.TotalMax), v.Calls), ok, true)
	}
	var t8 *tputResult
	for i := range r.Throughput {
		if r.Throughput[i].Concurrency == 8 {
			t8 = &r.Throughput[i]
		}
	}
	if t8 != nil && t8.Published > 0 {
		add("8 concurrent publishes", ">= 80/s", fmt.Sprintf("%.1f/s", t8.PerSecond), t8.PerSecond >= 80, true)
		add("8 concurrent publishes, p50", "< 30 ms", fmt.Sprintf("%.2f ms", t8.Latency.P50), t8.Latency.P50 < 30, true)
	} else {
		add("8 concurrent publishes", ">= 80/s", "not run", false, false)
		add("8 concurrent publishes, p50", "< 30 ms", "not run", false, false)
	}
	for _, rp := range r.Republish {
		if rp.Latency.N == 0 {
			continue
		}
		add("no-change re-publish p50, "+rp.Mode, "< 0.2 ms", fmt.Sprintf("%.3f ms (p99 %.3f)", rp.Latency.P50, rp.Latency.P99), rp.Latency.P50 < 0.2, true)
		if rp.Mode == "kubelet" {
			add("no-change re-publish driver CPU, kubelet", "< 0.2 ms", fmt.Sprintf("%.3f ms (connection floor %.3f)", rp.CPUPerOpMs, rp.FloorCPUPerOpMs), rp.CPUPerOpMs < 0.2, rp.Proc.OK)
		}
		add("no-change re-publish Vault calls, "+rp.Mode, "0", fmt.Sprintf("%.0f in %d", rp.Vault.Total, rp.Latency.N), rp.Vault.Total == 0, rp.Vault.Available)
	}
	m := r.Memory
	if m.AtMark != nil && m.AtMark.OK {
		add("RSS at 601 volumes", "< 40 MB", fmt.Sprintf("%.1f MB", float64(m.AtMark.RSSBytes)/mb), float64(m.AtMark.RSSBytes) < 40*mb, true)
	} else {
		add("RSS at 601 volumes", "< 40 MB", "not reached", false, false)
	}
	if m.Mounted >= 10000 && m.AtN.OK {
		add("RSS at 10,000 volumes", "< 150 MB", fmt.Sprintf("%.1f MB", float64(m.AtN.RSSBytes)/mb), float64(m.AtN.RSSBytes) < 150*mb, true)
	} else {
		add("RSS at 10,000 volumes", "< 150 MB", fmt.Sprintf("not run (%d volumes)", m.Mounted), false, false)
	}
}

func mbs(s procStats) string {
	if !s.OK {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MB", float64(s.RSSBytes)/mb)
}

// mbsSplit is RSS with its anonymous (heap) and file (binary) parts.
func mbsSplit(s procStats) string {
	if !s.OK {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MB (anon %.1f, file %.1f)", float64(s.RSSBytes)/mb, float64(s.AnonBytes)/mb, float64(s.FileBytes)/mb)
}

func cpu(p procDelta) string {
	if !p.OK {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", p.CPUSeconds)
}

func (b *bench) print(out io.Writer) {
	r := &b.res
	fmt.Fprintf(out, "\nvault-csi-bench  %s  cores=%d  %s  loadavg %s -> %s\n", r.Timestamp, r.Cores, r.CPUModel, r.LoadAvgStart, r.LoadAvgEnd)
	fmt.Fprintf(out, "auth %s (mount %s)%s\n", r.Vault.Auth, r.Vault.AuthMount,
		map[bool]string{true: "  Vault behind the latency proxy " + r.Vault.ProxyAddr + ", rtts " + strings.Join(r.Config.VaultRTTs, ","), false: ""}[r.Vault.ProxyAddr != ""])
	fmt.Fprintf(out, "vault %s (%s)  driver %s %s (pid %d%s)  conn=%s  token-in=%s  fsGroup=%q\n",
		r.Vault.Version, r.Vault.Addr, r.Driver.Name, r.Driver.Version, r.Driver.PID,
		map[bool]string{true: ", rotation-period " + r.Driver.RotationPeriod, false: ""}[r.Driver.RotationPeriod != ""],
		r.Config.Conn, r.Config.TokenIn, b.mountGroup)
	fmt.Fprintf(out, "Vault requests: Vault's own metrics, %s\n", "Δ(vault_core_handle_request_count + vault_core_handle_login_request_count); L=login R=read X=revoke O=other")
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	flush := func() { tw.Flush() }

	if len(r.Cold) > 0 {
		fmt.Fprintf(out, "\n1. COLD PUBLISH (fresh pod, publish then unpublish; ms; conn kubelet = new connection per call + NodeGetCapabilities, as kubelet)\n")
		fmt.Fprintf(out, "   floor = a plain Go client: login + the same reads, through the same path (seq: one by one; par: all at once); x = driver p50 / floor par p50\n")
		fmt.Fprintf(out, "   CPU = the driver process's CPU (utime+stime, ns clock) per publish (inside the calls) and per publish+unpublish cycle\n")
		fmt.Fprintln(tw, "rtt\tsecrets\tconn\tn\tp50\tp99\tfloor seq p50\tfloor par p50\tfloor par p99\tx p50\t+ms p50\tx p99\tunpub p50\tCPU/pub ms\tCPU/cycle ms\tvault/publish\t")
		for _, c := range r.Cold {
			fmt.Fprintf(tw, "%g\t%d\t%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t\n", c.RTTMs, c.Secrets, c.Mode, c.Iterations,
				c.Publish.P50, c.Publish.P99, c.Floor.Sequential.P50, c.Floor.Parallel.P50, c.Floor.Parallel.P99,
				c.VsParallel.RatioP50, c.VsParallel.OverP50Ms, c.VsParallel.RatioP99, c.Unpublish.P50, c.CPUPerPublishMs, c.CPUPerCycleMs, c.VaultPerPublish.short())
		}
		flush()
	}
	if len(r.Throughput) > 0 {
		fmt.Fprintf(out, "\n2. THROUGHPUT (3 secrets each, kept mounted)\n")
		fmt.Fprintln(tw, "conc\tok/req\terr\twall s\tpub/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\tvault req\tpeak req/s\tRSS after\tCPU s\tmounted\t")
		for _, t := range r.Throughput {
			fmt.Fprintf(tw, "%d\t%d/%d\t%d\t%.2f\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%.0f\t%s\t%s\t%d\t\n", t.Concurrency, t.Published, t.Requested, t.Errors,
				t.WallSeconds, t.PerSecond, t.Latency.P50, t.Latency.P90, t.Latency.P99, t.Latency.Max, t.Vault.short(), t.PeakVaultPerSecond,
				mbs(t.Proc.After), cpu(t.Proc), t.MountedAfter)
		}
		flush()
		for _, t := range r.Throughput {
			if t.ErrorSummary != "" {
				fmt.Fprintf(out, "   conc %d errors: %s\n", t.Concurrency, t.ErrorSummary)
			}
		}
	}
	if len(r.Republish) > 0 {
		fmt.Fprintf(out, "\n3. RE-PUBLISH, NOTHING DUE (every mounted volume, %s token, serial; kubelet = new connection per call)\n", repubTokenText(r.Config.RepublishToken))
		fmt.Fprintf(out, "   floor CPU/op = the same calls to a Go server that only does their socket I/O (canned frames, nothing parsed): the connection floor\n")
		fmt.Fprintln(tw, "mode\tn\tp50 ms\tp90 ms\tp99 ms\tmax ms\tvault req\tskipped(due)\terr\tCPU s\tCPU/op ms\tfloor CPU/op ms\t")
		for _, p := range r.Republish {
			fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%s\t%d\t%d\t%s\t%.3f\t%.3f\t\n", p.Mode, p.Latency.N, p.Latency.P50, p.Latency.P90, p.Latency.P99,
				p.Latency.Max, p.Vault.short(), p.SkippedDue, p.Errors, cpu(p.Proc), p.CPUPerOpMs, p.FloorCPUPerOpMs)
		}
		flush()
	}
	if t := r.Rotation; t != nil {
		fmt.Fprintf(out, "\n4. ROTATION (secrets changed, all volumes due, re-publish at concurrency %d)\n", t.Concurrency)
		fmt.Fprintln(tw, "volumes\twaited s\tok\trefreshed\terr\twall s\tper s\tp50 ms\tp99 ms\tmax ms\tvault req\tpeak req/s\tCPU s\tCPU/op ms\t")
		fmt.Fprintf(tw, "%d\t%.1f\t%d\t%d\t%d\t%.2f\t%.1f\t%.2f\t%.2f\t%.2f\t%s\t%.0f\t%s\t%.3f\t\n", t.Volumes, t.WaitedSeconds, t.Republished, t.Refreshed,
			t.Errors, t.WallSeconds, t.PerSecond, t.Latency.P50, t.Latency.P99, t.Latency.Max, t.Vault.short(), t.PeakVaultPerSecond, cpu(t.Proc), t.CPUPerOpMs)
		flush()
		if t.ErrorSummary != "" {
			fmt.Fprintf(out, "   errors: %s\n", t.ErrorSummary)
		}
	}
	if u := r.Unpublish; u != nil {
		fmt.Fprintf(out, "\n5. UNPUBLISH ALL (with token revocation, concurrency %d)\n", u.Concurrency)
		state := "n/a"
		if u.StateFilesLeft >= 0 {
			state = fmt.Sprint(u.StateFilesLeft)
		}
		fmt.Fprintln(tw, "volumes\tok\terr\twall s\tper s\tp50 ms\tp99 ms\tmax ms\tvault req\tpeak req/s\tmounts left\tstate left\tCPU s\t")
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.2f\t%.1f\t%.2f\t%.2f\t%.2f\t%s\t%.0f\t%d\t%s\t%s\t\n", u.Volumes, u.Unpublished, u.Errors, u.WallSeconds,
			u.PerSecond, u.Latency.P50, u.Latency.P99, u.Latency.Max, u.Vault.short(), u.PeakVaultPerSecond, u.MountsLeft, state, cpu(u.Proc))
		flush()
	}
	m := r.Memory
	fmt.Fprintf(out, "\nDRIVER MEMORY (VmRSS; 1 MB = 10^6 bytes)\n")
	fmt.Fprintf(out, "  at start            %s\n", mbsSplit(m.AtStart))
	if m.ZeroVolumes.OK {
		fmt.Fprintf(out, "  0 volumes (warm)    %s\n", mbsSplit(m.ZeroVolumes))
	}
	if m.AtMark != nil {
		fmt.Fprintf(out, "  601 volumes         %s\n", mbsSplit(*m.AtMark))
	}
	if m.Mounted > 0 {
		fmt.Fprintf(out, "  %-5d volumes       %s, %d fds, %d threads\n", m.Mounted, mbsSplit(m.AtN), m.AtN.FDs, m.AtN.Threads)
	}
	if m.PerVolumeBytes != 0 {
		fmt.Fprintf(out, "  per volume          %.1f KB ((RSS at %d - RSS at 0 volumes) / %d; includes what the peak concurrency left behind)\n", m.PerVolumeBytes/1e3, m.Mounted, m.Mounted)
	}
	if m.AfterUnpublish != nil {
		fmt.Fprintf(out, "  after unpublish-all %s, %d fds\n", mbsSplit(*m.AfterUnpublish), m.AfterUnpublish.FDs)
	}
	if m.End.OK {
		fmt.Fprintf(out, "  CPU total           %.2f s\n", m.End.CPUSeconds)
	}

	fmt.Fprintf(out, "\nTARGETS\n")
	tt := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tt, "target\twant\tmeasured\tresult")
	for _, t := range r.Targets {
		fmt.Fprintf(tt, "%s\t%s\t%s\t%s\n", t.Name, t.Target, t.Measured, t.Result)
	}
	tt.Flush()
	if len(r.Errors) > 0 {
		fmt.Fprintf(out, "\nERRORS\n")
		for _, e := range r.Errors {
			fmt.Fprintf(out, "  %s\n", e)
		}
	}
	fmt.Fprintf(out, "\ntotal %.1f s\n", r.DurationSeconds)
}

func (b *bench) writeJSON(path string) error {
	raw, err := json.MarshalIndent(&b.res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(raw, '\n'), 0o644)
}

// repubTokenText says which token the re-publish scenario sent.
func repubTokenText(t string) string {
	if t == repubFresh {
		return "a fresh"
	}
	return "the publish's" // kubelet's token manager: the same until 80% of its TTL
}
