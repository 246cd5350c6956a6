package provider_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"vaultcsi.dev/driver/provider"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// Health is what readiness waits for: an answering, unsealed Vault. It is
// kept out of the request counts, which are per CSI operation.
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
	}{
		{name: "answering", addr: v.Addr, ok: true},
		{name: "nothing listening", addr: "http://" + down},
		{name: "sealed", addr: v.Addr, seal: true, unusable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.seal {
				if err := v.Root.Sys().Seal(); err != nil {
					t.Fatal(err)
				}
			}
			var ops []string
			p, err := provider.New(provider.Config{Addr: tt.addr, OnRequest: func(op string, _ int) { ops = append(ops, op) }})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = p.Health(ctx)
			if (err == nil) != tt.ok || errors.Is(err, provider.ErrVaultUnusable) != tt.unusable {
				t.Fatalf("Health = %v, want ok=%v unusable=%v", err, tt.ok, tt.unusable)
			}
			if len(ops) != 0 {
				t.Errorf("OnRequest saw %v; health checks are not counted", ops)
			}
		})
	}
}
