package provider

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// A pod's args turn a read into a write, so a write may only go where Vault
// itself says a credential is issued: a path the pki engine answers as
// issue/<role> or issuer/<ref>/issue/<role>. The path's spelling decides
// nothing (a KV mount named pki_kv, or kv/team/pki/issue/app, would be
// overwritten with the args otherwise).
const (
	// mountTypePKI is the type Vault reports for a PKI secrets engine.
	mountTypePKI = "pki"
	// mountLookupPath is Vault's endpoint that names the mount holding a
	// path. It needs no policy of its own: Vault answers it for a token with
	// any capability under the mount, and 403 otherwise (also for a path in
	// no mount, so it cannot be used to list mounts).
	mountLookupPath = "sys/internal/ui/mounts/"
	// mountCacheTTL bounds how long a mount's type is trusted without asking
	// Vault again: a mount that is disabled and replaced by another engine is
	// seen within this time.
	mountCacheTTL = 30 * time.Second
	// mountCacheMax bounds the cache; it holds one entry per mount (not per
	// path) and namespace, so a cluster rarely comes near it.
	mountCacheMax = 1024
)

// vaultMount is what Vault says about the mount holding a path.
type vaultMount struct {
	path    string // with the trailing slash, relative to the namespace: "pki/"
	typ     string // engine type: "pki", "kv", ...
	fetched time.Time
}

type mountKey struct{ namespace, path string }

// mountCache remembers mount types per (Vault namespace, mount path). Vault
// refuses to mount a path below or above an existing mount, so at most one
// cached mount is a prefix of a given path.
type mountCache struct {
	mu  sync.Mutex
	now func() time.Time
	m   map[mountKey]vaultMount
}

func newMountCache(now func() time.Time) *mountCache {
	return &mountCache{now: now, m: make(map[mountKey]vaultMount)}
}

// get returns the fresh cached mount that holds path, if any.
func (c *mountCache) get(namespace, path string) (vaultMount, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	// One map lookup per "/" in the path: bounded by the path's length.
	for i := 0; i < len(path); i++ {
		if path[i] != '/' {
			continue
		}
		k := mountKey{namespace, path[:i+1]}
		m, ok := c.m[k]
		if !ok {
			continue
		}
		if now.Sub(m.fetched) >= mountCacheTTL || now.Before(m.fetched) {
			delete(c.m, k)
			return vaultMount{}, false
		}
		return m, true
	}
	return vaultMount{}, false
}

func (c *mountCache) put(namespace string, m vaultMount) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	m.fetched = now
	if len(c.m) >= mountCacheMax {
		for k, e := range c.m {
			if now.Sub(e.fetched) >= mountCacheTTL {
				delete(c.m, k)
			}
		}
		if len(c.m) >= mountCacheMax {
			clear(c.m)
		}
	}
	c.m[mountKey{namespace, m.path}] = m
}

// issuingSuffix reports whether rest, a path below a PKI mount, is one of
// the engine's issuing endpoints: issue/<role> or issuer/<ref>/issue/<role>.
func issuingSuffix(rest string) bool {
	parts := strings.Split(rest, "/")
	for _, p := range parts {
		if p == "" {
			return false
		}
	}
	switch len(parts) {
	case 2:
		return parts[0] == "issue"
	case 4:
		return parts[0] == "issuer" && parts[2] == "issue"
	}
	return false
}

// checkIssuing asks Vault (or the cache) which mount holds path and
// returns an ErrNotIssuing error unless path is an issuing endpoint of a
// PKI mount. spec names the entry in the error.
func (k *call) checkIssuing(ctx context.Context, spec SecretSpec) error {
	path := spec.Path
	field := fmt.Sprintf("secrets[%d].args", spec.Index)
	if spec.Template != "" { // the args are a template's: secret "<path>" "k=v"
		field = fmt.Sprintf("secrets[%d].template", spec.Index)
	}
	ns := k.c.Namespace()
	m, ok := k.p.mounts.get(ns, path)
	if !ok {
		secret, err := k.c.Logical().ReadWithContext(ctx, mountLookupPath+path)
		k.observe(opLookup, err)
		if err != nil {
			return k.wrap(ctx, fmt.Sprintf("%s: vault lookup of the mount holding %s", field, path), err)
		}
		if secret == nil || secret.Data == nil {
			return fmt.Errorf("%s: vault lookup of the mount holding %s: %w: empty answer", field, path, ErrUnavailable)
		}
		m.typ, _ = secret.Data["type"].(string)
		m.path, _ = secret.Data["path"].(string)
		if m.typ == "" || m.path == "" || !strings.HasSuffix(m.path, "/") {
			return fmt.Errorf("%s: vault lookup of the mount holding %s: %w: answer has no mount type or path", field, path, ErrUnavailable)
		}
		if strings.HasPrefix(path, m.path) {
			// Only a mount that holds the path is worth remembering.
			k.p.mounts.put(ns, m)
		}
	}
	rest, under := strings.CutPrefix(path, m.path)
	switch {
	case !under:
		// A mount in another Vault namespace than the request's: only the
		// request's own namespace is trusted to place the write.
		return fmt.Errorf("%s: %w: Vault places %s in mount %s of another namespace; set vaultNamespace to the PKI mount's namespace",
			field, ErrNotIssuing, path, m.path)
	case m.typ != mountTypePKI:
		return fmt.Errorf("%s: %w: Vault says %s is in a %s mount (%s), not a pki mount; args are only sent to <pki mount>/issue/<role> (omit args to read the path)",
			field, ErrNotIssuing, path, m.typ, m.path)
	case !issuingSuffix(rest):
		return fmt.Errorf("%s: %w: %s is not issue/<role> or issuer/<ref>/issue/<role> of pki mount %s",
			field, ErrNotIssuing, path, m.path)
	}
	return nil
}
