package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// floorClient is the floor a publish is compared with: a plain Go Vault
// client doing only the Vault work of a publish (login with the pod's
// token, then the same KV reads), through the same path as the driver
// (the latency proxy when there is one), with warm keep-alive connections.
type floorClient struct {
	cl    *vault.Client
	mount string
	role  string
}

func newFloorClient(addr, mount, role string) (*floorClient, error) {
	cfg := vault.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0
	// Enough idle connections that parallel reads never pay a new dial.
	cfg.HttpClient = &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		Proxy: nil, MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute,
	}}
	cl, err := vault.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("floor client: %w", err)
	}
	cl.ClearToken()
	return &floorClient{cl: cl, mount: mount, role: role}, nil
}

// floorMode is how the floor reads: one after another, or all at once.
type floorMode string

const (
	floorSequential floorMode = "sequential"
	floorParallel   floorMode = "parallel"
)

// run does login + n reads and returns the timed part; the token is then
// revoked, untimed, as the driver's unpublish does.
func (f *floorClient) run(ctx context.Context, jwt string, n int, mode floorMode) (time.Duration, error) {
	start := time.Now()
	sec, err := f.cl.Logical().WriteWithContext(ctx, "auth/"+f.mount+"/login", map[string]any{"role": f.role, "jwt": jwt})
	if err != nil {
		return 0, fmt.Errorf("floor login: %w", err)
	}
	if sec == nil || sec.Auth == nil {
		return 0, fmt.Errorf("floor login: no auth in the response")
	}
	c, err := f.cl.Clone()
	if err != nil {
		return 0, err
	}
	c.SetToken(sec.Auth.ClientToken)
	read := func(i int) error {
		s, err := c.Logical().ReadWithContext(ctx, "secret/data/"+benchKVPrefix+strconv.Itoa(i))
		if err != nil {
			return fmt.Errorf("floor read %d: %w", i, err)
		}
		if s == nil {
			return fmt.Errorf("floor read %d: not found", i)
		}
		return nil
	}
	var firstErr error
	if mode == floorSequential {
		for i := 0; i < n && firstErr == nil; i++ {
			firstErr = read(i)
		}
	} else {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if err := read(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
	}
	d := time.Since(start)
	_ = c.Auth().Token().RevokeSelfWithContext(ctx, "")
	return d, firstErr
}

// floorResult is the floor for one secret count at one latency.
type floorResult struct {
	Sequential latStats `json:"sequential"`
	Parallel   latStats `json:"parallel"`
	Errors     []string `json:"errors,omitempty"`
}

// floorSeries measures the floor for n secrets, iterations times each mode.
func (b *bench) floorSeries(ctx context.Context, n int) (floorResult, error) {
	var r floorResult
	iters := b.cfg.iterations
	for _, mode := range []floorMode{floorSequential, floorParallel} {
		vols := make([]*vol, iters)
		for i := range vols {
			p, err := b.newVol(fmt.Sprintf("floor%d", n), n)
			if err != nil {
				return r, err
			}
			b.removePod(p) // only its identity is used
			vols[i] = p
		}
		jwts := make([]string, iters)
		for i, v := range vols {
			t, err := b.jwt(v)
			if err != nil {
				return r, err
			}
			jwts[i] = t
		}
		var lat []time.Duration
		deadline := time.Now().Add(b.cfg.duration)
		for i := 0; i < iters && ctx.Err() == nil && time.Now().Before(deadline); i++ {
			d, err := b.floor.run(ctx, jwts[i], n, mode)
			if err != nil {
				r.Errors = append(r.Errors, err.Error())
				if len(r.Errors) >= 5 {
					break
				}
				continue
			}
			lat = append(lat, d)
		}
		if mode == floorSequential {
			r.Sequential = stats(lat)
		} else {
			r.Parallel = stats(lat)
		}
	}
	r.Errors = capErrors(r.Errors)
	return r, ctx.Err()
}
