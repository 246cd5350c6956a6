package driver

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strings"
	"sync"
	"time"

	"vaultcsi.dev/driver/driver/attributes"
)

// parseCacheMax bounds the parse cache: one entry per published target, so
// a node past it (thousands of volumes) only parses more often.
const parseCacheMax = 4096

// parseCache remembers, per target, a digest of the last accepted request's
// volume context and secrets and what attributes.Parse made of them.
// kubelet re-sends the same maps on every re-publish until it renews the
// service-account token, and Parse (two JSON decodes of the token and the
// identity binding) was half of a not-due re-publish's own CPU. Parse is
// pure for a given audience, so equal inputs give the same result; the
// digest is SHA-256, so no crafted request can pass for another's.
// The zero value is ready to use.
type parseCache struct {
	mu sync.Mutex
	m  map[string]*parsed
}

type parsed struct {
	sum [sha256.Size]byte
	// vol is Parse's result; its JWT is left out when jwtAt locates it in
	// the request's tokens JSON (equal digests: the same JSON), so an entry
	// does not hold a second copy of the token (about 1 KB a volume).
	vol   attributes.Volume
	jwtAt [2]int
	// hash is requestHash of vol with gid and period (the period after the
	// driver's floor), reused while both are the same.
	gid    int
	period time.Duration
	hash   string
}

// parse is attributes.Parse, from the cache when target's last accepted
// request had the same volume context and secrets. The Volume is the
// caller's own copy (its Secrets and Reload are shared and read-only, as
// Parse's are).
func (c *parseCache) parse(target string, vc, secrets map[string]string, audience string) (*attributes.Volume, *parsed, error) {
	sum := parseDigest(vc, secrets, audience)
	c.mu.Lock()
	e := c.m[target]
	c.mu.Unlock()
	if e != nil && e.sum == sum {
		v := e.vol
		if e.jwtAt[1] > 0 {
			v.Request.JWT = tokensJSON(vc, secrets)[e.jwtAt[0]:e.jwtAt[1]]
		}
		return &v, e, nil
	}
	vol, err := attributes.Parse(vc, secrets, audience)
	if err != nil {
		return nil, nil, err
	}
	e = &parsed{sum: sum, vol: *vol, gid: -2}
	// A JWT is base64url and dots: it appears verbatim in the JSON unless
	// the JSON escaped a character of it, and then the entry keeps it.
	if i := strings.Index(tokensJSON(vc, secrets), vol.Request.JWT); i >= 0 && vol.Request.JWT != "" {
		e.jwtAt = [2]int{i, i + len(vol.Request.JWT)}
		e.vol.Request.JWT = ""
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]*parsed)
	}
	if _, ok := c.m[target]; !ok && len(c.m) >= parseCacheMax {
		for k := range c.m { // any one: map order is unspecified
			delete(c.m, k)
			break
		}
	}
	c.m[target] = e
	c.mu.Unlock()
	return vol, e, nil
}

// requestHash is requestHash(vol, gid), computed once per entry while the
// gid and period stay the same. e may be nil (no entry).
func (c *parseCache) requestHash(e *parsed, vol *attributes.Volume, gid int) string {
	if e == nil {
		return requestHash(vol, gid)
	}
	c.mu.Lock()
	h := e.hash
	ok := e.gid == gid && e.period == vol.RotationPeriod
	c.mu.Unlock()
	if ok {
		return h
	}
	h = requestHash(vol, gid)
	c.mu.Lock()
	e.gid, e.period, e.hash = gid, vol.RotationPeriod, h
	c.mu.Unlock()
	return h
}

// tokensJSON is kubelet's serviceAccount.tokens as Parse takes it: from
// the request's secrets first, then from the volume context.
func tokensJSON(vc, secrets map[string]string) string {
	if raw, ok := secrets[attributes.KeyTokens]; ok {
		return raw
	}
	return vc[attributes.KeyTokens]
}

// forget drops target's entry (its volume is unpublished).
func (c *parseCache) forget(target string) {
	c.mu.Lock()
	delete(c.m, target)
	c.mu.Unlock()
}

// parseDigest hashes the audience and both maps in key order, each string
// length-prefixed so that no two different inputs share an encoding.
func parseDigest(vc, secrets map[string]string, audience string) [sha256.Size]byte {
	var stack [4096]byte
	buf := appendString(stack[:0], audience)
	var keys [16]string
	for _, m := range [2]map[string]string{vc, secrets} {
		ks := keys[:0]
		for k := range m {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		buf = binary.AppendUvarint(buf, uint64(len(ks)))
		for _, k := range ks {
			buf = appendString(appendString(buf, k), m[k])
		}
	}
	return sha256.Sum256(buf)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}
