package provider_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// Health is what readiness waits for: an answering, unsealed Vault. Each
// check is one request, counted like every other.
func TestHealth(t *testing.T) {
	v := vaulttest.Start(t)
	down, err := vaulttest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		addr     string
		seal     bool
		ok       bool
		unusable bool // answered, but cannot serve
		code     int  // status passed to OnRequest
	}{
		{name: "answering", addr: v.Addr, ok: true, code: 200},
		{name: "nothing listening", addr: "http://" + down, code: 0},
		{name: "sealed", addr: v.Addr, seal: true, unusable: true, code: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.seal {
				if err := v.Root.Sys().Seal(); err != nil {
					t.Fatal(err)
				}
			}
			var ops []string
			var codes []int
			p, err := provider.New(provider.Config{Addr: tt.addr, OnRequest: func(op string, code int) {
				ops, codes = append(ops, op), append(codes, code)
			}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = p.Health(ctx)
			if (err == nil) != tt.ok || errors.Is(err, provider.ErrVaultUnusable) != tt.unusable {
				t.Fatalf("Health = %v, want ok=%v unusable=%v", err, tt.ok, tt.unusable)
			}
			if len(ops) != 1 || ops[0] != "health" || codes[0] != tt.code {
				t.Errorf("OnRequest saw %v %v, want one health request with %d", ops, codes, tt.code)
			}
		})
	}
}
