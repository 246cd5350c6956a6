package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// vaultSide is the Vault the bench runs against: how to reach it, how to
// mint service-account tokens it trusts, and its metrics.
type vaultSide struct {
	addr      string
	token     string
	authMount string
	version   string
	root      *vault.Client
	srv       *vaulttest.Server // nil for --vault-addr
	key       *rsa.PrivateKey   // external Vault: the key the bench's jwt mount trusts
	created   []func()          // undo steps on an external Vault
	http      *http.Client
	values    map[int]string // secret index -> current value of secret/data/bench/s<i>
	mu        sync.Mutex
}

const benchKVPrefix = "bench/s" // secret/data/bench/s<i>

func startVault(c *config) (*vaultSide, error) {
	v := &vaultSide{http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}, values: map[int]string{}}
	if c.vaultAddr == "" {
		srv, err := vaulttest.Run()
		if err != nil {
			return nil, err
		}
		v.srv, v.addr, v.token, v.root = srv, srv.Addr, vaulttest.RootToken, srv.Root
		v.authMount = srv.JWTMount
		if c.authMount != "" && c.authMount != srv.JWTMount {
			srv.Stop()
			return nil, fmt.Errorf("--auth-mount %q: the dev server's jwt auth is at %q", c.authMount, srv.JWTMount)
		}
	} else {
		cfg := vault.DefaultConfig()
		cfg.Address = c.vaultAddr
		cfg.MaxRetries = 0
		cl, err := vault.NewClient(cfg)
		if err != nil {
			return nil, err
		}
		cl.SetToken(c.vaultToken)
		v.addr, v.token, v.root = c.vaultAddr, c.vaultToken, cl
		v.authMount = c.authMount
		if v.authMount == "" {
			v.authMount = "vault-csi-bench"
		}
		if err := v.configureJWT(); err != nil {
			v.undo()
			return nil, err
		}
	}
	if err := v.configure(c); err != nil {
		v.stop()
		return nil, err
	}
	if st, err := v.root.Sys().SealStatus(); err == nil {
		v.version = st.Version
	}
	return v, nil
}

// configureJWT enables jwt auth on an external Vault trusting a key the
// bench generates, so it can mint tokens the way vaulttest does.
func (v *vaultSide) configureJWT() error {
	auths, err := v.root.Sys().ListAuth()
	if err != nil {
		return fmt.Errorf("list auth mounts: %w", err)
	}
	if _, ok := auths[v.authMount+"/"]; ok {
		return fmt.Errorf("auth mount %q already exists on %s: pick another --auth-mount", v.authMount, v.addr)
	}
	mount := v.authMount
	v.created = append(v.created, func() { _ = v.root.Sys().DisableAuth(mount) })
	v.key, err = vaulttest.EnableJWTAuth(v.root, mount)
	return err
}

// configure writes the role, its policy and the KV secrets the volumes read.
func (v *vaultSide) configure(c *config) error {
	mounts, err := v.root.Sys().ListMounts()
	if err != nil {
		return fmt.Errorf("list mounts: %w", err)
	}
	if m, ok := mounts["secret/"]; !ok {
		if err := v.root.Sys().Mount("secret", &vault.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
			return fmt.Errorf("mount kv v2 at secret/: %w", err)
		}
		v.created = append(v.created, func() { _ = v.root.Sys().Unmount("secret") })
	} else if m.Type != "kv" || m.Options["version"] != "2" {
		return fmt.Errorf("secret/ on %s is not KV v2", v.addr)
	}
	policy := vaulttest.ReadPolicy("secret/data/bench/*")
	if err := v.root.Sys().PutPolicy(c.role, policy); err != nil {
		return fmt.Errorf("put policy: %w", err)
	}
	role := c.role
	if v.srv == nil {
		v.created = append(v.created, func() { _ = v.root.Sys().DeletePolicy(role) })
	}
	body := vaulttest.RoleBody(c.audience, c.namespace, c.sa, c.role)
	if _, err := v.root.Logical().Write("auth/"+v.authMount+"/role/"+c.role, body); err != nil {
		return fmt.Errorf("create role: %w", err)
	}
	max := 0
	for _, n := range c.secrets {
		if n > max {
			max = n
		}
	}
	if max < 3 {
		max = 3
	}
	if err := v.putSecrets(max, "v1"); err != nil {
		return err
	}
	if v.srv == nil {
		v.created = append(v.created, func() {
			for i := 0; i < max; i++ {
				_ = v.root.KVv2("secret").DeleteMetadata(context.Background(), benchKVPrefix+strconv.Itoa(i))
			}
		})
	}
	return nil
}

// putSecrets writes secret/data/bench/s0..s<n-1> with fresh values.
func (v *vaultSide) putSecrets(n int, gen string) error {
	for i := 0; i < n; i++ {
		val := fmt.Sprintf("%s-s%d-%s", gen, i, randHex(6))
		if _, err := v.root.KVv2("secret").Put(context.Background(), benchKVPrefix+strconv.Itoa(i), map[string]any{"value": val}); err != nil {
			return fmt.Errorf("write secret %s%d: %w", benchKVPrefix, i, err)
		}
		v.mu.Lock()
		v.values[i] = val
		v.mu.Unlock()
	}
	return nil
}

func (v *vaultSide) value(i int) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.values[i]
}

// mint returns a fresh projected service-account token for the pod, valid
// for an hour.
func (v *vaultSide) mint(p vaulttest.Pod, audience string) string {
	if v.srv != nil {
		return v.srv.TokenFor(p, audience, time.Hour)
	}
	return vaulttest.MintToken(v.key, p, audience, time.Hour)
}

func (v *vaultSide) undo() {
	for i := len(v.created) - 1; i >= 0; i-- {
		v.created[i]()
	}
	v.created = nil
}

func (v *vaultSide) stop() {
	if v == nil {
		return
	}
	v.undo()
	if v.srv != nil {
		v.srv.Stop()
		v.srv = nil
	}
}

// counters is one scrape of Vault's cumulative request counters.
type counters struct {
	at     time.Time
	total  float64            // handle_request + handle_login_request
	login  float64            // handle_login_request
	routes map[string]float64 // vault_route_<op>_<mount>_count
	ok     bool
}

// scrape reads Vault's Prometheus metrics. vault_core_handle_request_count
// and vault_core_handle_login_request_count are cumulative summaries (the
// dev server keeps Prometheus metrics for 24h); sys/metrics itself is not
// counted in them.
func (v *vaultSide) scrape() counters {
	c := counters{at: time.Now(), routes: map[string]float64{}}
	req, err := http.NewRequest(http.MethodGet, strings.TrimRight(v.addr, "/")+"/v1/sys/metrics?format=prometheus", nil)
	if err != nil {
		return c
	}
	req.Header.Set("X-Vault-Token", v.token)
	resp, err := v.http.Do(req)
	if err != nil {
		return c
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return c
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var handle, login float64
	seen := false
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "vault_core_handle_") && !strings.HasPrefix(line, "vault_route_") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || !strings.HasSuffix(name, "_count") {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch {
		case name == "vault_core_handle_request_count":
			handle, seen = f, true
		case name == "vault_core_handle_login_request_count":
			login = f
		case strings.HasPrefix(name, "vault_route_"):
			c.routes[strings.TrimSuffix(strings.TrimPrefix(name, "vault_route_"), "_count")] += f
		}
	}
	if sc.Err() != nil || !seen {
		return c
	}
	c.total, c.login, c.ok = handle+login, login, true
	return c
}

// vaultDelta is what Vault handled between two scrapes.
type vaultDelta struct {
	Available bool               `json:"available"`
	Total     float64            `json:"total"`
	Logins    float64            `json:"logins"`
	Reads     float64            `json:"reads"`   // vault_route_read_* (KV reads)
	Revokes   float64            `json:"revokes"` // vault_route_update_auth_token_ (revoke-self)
	Other     float64            `json:"other"`
	Routes    map[string]float64 `json:"routes,omitempty"`
}

func diff(a, b counters) vaultDelta {
	d := vaultDelta{Available: a.ok && b.ok}
	if !d.Available {
		return d
	}
	d.Total, d.Logins = b.total-a.total, b.login-a.login
	d.Routes = map[string]float64{}
	for k, bv := range b.routes {
		if x := bv - a.routes[k]; x != 0 {
			d.Routes[k] = x
			switch {
			case strings.HasPrefix(k, "read_"):
				d.Reads += x
			case k == "update_auth_token_":
				d.Revokes += x
			}
		}
	}
	d.Other = d.Total - d.Logins - d.Reads - d.Revokes
	if d.Other < 0 {
		d.Other = 0 // route counters may include logins; never negative
	}
	return d
}

func (d vaultDelta) String() string {
	if !d.Available {
		return "n/a"
	}
	return fmt.Sprintf("%.0f (login %.0f, read %.0f, revoke %.0f, other %.0f)", d.Total, d.Logins, d.Reads, d.Revokes, d.Other)
}

// rateSampler scrapes Vault every 200 ms while a scenario runs, for the
// peak request rate: the most requests handled in any 1 s window.
type rateSampler struct {
	v       *vaultSide
	stop    chan struct{}
	done    chan struct{}
	samples []counters
}

const sampleEvery = 200 * time.Millisecond

func (v *vaultSide) sampleRates(limit time.Duration) *rateSampler {
	s := &rateSampler{v: v, stop: make(chan struct{}), done: make(chan struct{})}
	first := v.scrape()
	s.samples = append(s.samples, first)
	go func() {
		defer close(s.done)
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		deadline := time.After(limit)
		for i := 0; i < 1000000; i++ {
			select {
			case <-s.stop:
				return
			case <-deadline:
				return
			case <-t.C:
			}
			if c := v.scrape(); c.ok {
				s.samples = append(s.samples, c)
			}
		}
	}()
	return s
}

// finish stops the sampler and returns the peak (requests in the busiest
// 1 s window; a scenario shorter than 1 s counts whole) and the requests
// in consecutive 1 s buckets from the start.
func (s *rateSampler) finish() (float64, []float64) {
	close(s.stop)
	<-s.done
	if last := s.v.scrape(); last.ok {
		s.samples = append(s.samples, last)
	}
	var ok []counters
	for _, c := range s.samples {
		if c.ok {
			ok = append(ok, c)
		}
	}
	if len(ok) < 2 {
		return 0, nil
	}
	peak := 0.0
	j := 0
	for i := range ok {
		if j < i {
			j = i
		}
		for j+1 < len(ok) && ok[j+1].at.Sub(ok[i].at) <= time.Second+sampleEvery/2 {
			j++
		}
		if n := ok[j].total - ok[i].total; n > peak {
			peak = n
		}
	}
	var buckets []float64
	t0 := ok[0].at
	prev := ok[0]
	for _, c := range ok[1:] {
		if c.at.Sub(t0) >= time.Second {
			buckets = append(buckets, c.total-prev.total)
			t0, prev = c.at, c
		}
	}
	if last := ok[len(ok)-1]; last.at != prev.at {
		buckets = append(buckets, last.total-prev.total)
	}
	return peak, buckets
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
