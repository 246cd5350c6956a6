package provider

import (
	"context"
	"errors"
	"fmt"
)

// ErrVaultUnusable is wrapped by Health when Vault answers but cannot serve
// reads (not initialized, or sealed).
var ErrVaultUnusable = errors.New("vault cannot serve")

// Health asks Vault's sys/health once, with the driver's own client (address,
// CA and namespace). It succeeds when Vault answers initialized and unsealed,
// active or standby; it sends no token. It is not reported to OnRequest:
// readiness is not work done for a volume, and the request counts (and the
// tests and bench built on them) stay exact per CSI operation.
func (p *Provider) Health(ctx context.Context) error {
	k, err := p.newCall("")
	if err != nil {
		return err
	}
	resp, err := k.c.Sys().HealthWithContext(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("vault health at %s: %w", p.cfg.Addr, err)
	case !resp.Initialized:
		return fmt.Errorf("vault health at %s: not initialized: %w", p.cfg.Addr, ErrVaultUnusable)
	case resp.Sealed:
		return fmt.Errorf("vault health at %s: sealed: %w", p.cfg.Addr, ErrVaultUnusable)
	}
	return nil
}
