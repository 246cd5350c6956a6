package provider

import "time"

// Internals the external tests (package provider_test) need: they import
// vaulttest, which imports this package, so they cannot be internal tests.
const (
	OpLookup      = opLookup
	MountCacheTTL = mountCacheTTL
)

// SetMountsClock replaces the mount-type cache's clock.
func SetMountsClock(p *Provider, now func() time.Time) { p.mounts.now = now }
