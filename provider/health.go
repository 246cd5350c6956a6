package provider

import (
	"context"
	"errors"
	"fmt"
)

// opHealth names Vault health checks in OnRequest.
const opHealth = "health"

// ErrVaultUnusable is wrapped by Health when Vault answers but cannot serve
// reads (not initialized, or sealed).
var ErrVaultUnusable = errors.New("vault cannot serve")

// Health asks Vault's sys/health once, with the driver's own client (address,
// CA and namespace). It succeeds when Vault answers initialized and unsealed,
// active or standby; it sends no token.
func (p *Provider) Health(ctx context.Context) error {
	k, err := p.newCall("")
	if err != nil {
		return err
	}
	resp, err := k.c.Sys().HealthWithContext(ctx)
	k.observe(opHealth, err)
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
