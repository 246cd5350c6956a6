package provider

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// RenewDue is when something issued at start for life is due for renewal:
// two thirds through its life. It is the one place for that rule (the
// refresh planner and Session.Usable use it). It never overflows: a
// certificate valid until 9999 has a life that saturates time.Duration,
// and doubling it wrapped to a negative due time; time.Time.Add saturates,
// so a huge life means "far future".
func RenewDue(start time.Time, life time.Duration) time.Time {
	return start.Add(life - life/3)
}

// ErrCapped means Vault renewed for less than asked: the lease or token is
// near its max TTL and must be replaced, not renewed again.
var ErrCapped = errors.New("renewal capped by max TTL")

// RenewLease extends a lease by its original TTL with the session's token
// (Vault's default policy allows sys/leases/renew). It returns the new TTL;
// a TTL shorter than asked is returned with ErrCapped so the caller can
// fetch a fresh credential before the old one dies.
func (p *Provider) RenewLease(ctx context.Context, s *Session, leaseID string, increment time.Duration) (time.Duration, int, error) {
	k, err := p.newCall(s.Namespace)
	if err != nil {
		return 0, 0, err
	}
	k.scrub = []string{s.Token}
	k.c.SetToken(s.Token)
	secret, err := k.c.Logical().WriteWithContext(ctx, "sys/leases/renew", map[string]any{
		"lease_id":  leaseID,
		"increment": int(increment.Seconds()),
	})
	k.observe("renew", err)
	if err != nil {
		return 0, 1, k.wrap(ctx, "vault renew lease", err)
	}
	if secret == nil {
		return 0, 1, fmt.Errorf("vault renew lease: %w: empty response", ErrUnavailable)
	}
	ttl := time.Duration(secret.LeaseDuration) * time.Second
	if ttl < increment {
		return ttl, 1, fmt.Errorf("vault renew lease: %w: got %s of %s", ErrCapped, ttl, increment)
	}
	return ttl, 1, nil
}

// RenewToken extends the session's token. The returned session is a copy
// with the new expiry; ErrCapped means the token is near its max TTL and
// the caller should log in again.
func (p *Provider) RenewToken(ctx context.Context, s *Session) (*Session, int, error) {
	k, err := p.newCall(s.Namespace)
	if err != nil {
		return nil, 0, err
	}
	k.scrub = []string{s.Token}
	k.c.SetToken(s.Token)
	start := time.Now()
	asked := s.ExpiresAt.Sub(s.IssuedAt)
	secret, err := k.c.Logical().WriteWithContext(ctx, "auth/token/renew-self", map[string]any{
		"increment": int(asked.Seconds()),
	})
	k.observe("renew", err)
	if err != nil {
		return nil, 1, k.wrap(ctx, "vault renew token", err)
	}
	if secret == nil || secret.Auth == nil {
		return nil, 1, fmt.Errorf("vault renew token: %w: empty response", ErrUnavailable)
	}
	ns := *s
	ttl := time.Duration(secret.Auth.LeaseDuration) * time.Second
	ns.IssuedAt, ns.ExpiresAt = start, start.Add(ttl)
	if ttl < asked {
		return &ns, 1, fmt.Errorf("vault renew token: %w: got %s of %s", ErrCapped, ttl, asked)
	}
	return &ns, 1, nil
}
