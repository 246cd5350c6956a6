package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Summary is what the records say about refreshes that are failing, for the
// driver's health gauges.
type Summary struct {
	Volumes int
	// RefreshFailing counts volumes whose last refresh failed (their pods
	// read the files of an earlier fetch).
	RefreshFailing int
	// LeaseExpiry is the earliest expiry of a secret with a TTL (a lease, a
	// certificate), and TokenExpiry of a Vault token holding leases, among
	// the failing volumes; zero when there is none.
	LeaseExpiry, TokenExpiry time.Time
}

// Summarize reads every record (from the cache when the file is unchanged:
// one stat per volume) and sums up the failing ones. A record that vanishes
// meanwhile (an unpublish) is skipped; any other unreadable record is an
// error, so that a gauge never reports "healthy" for volumes it cannot see.
func (s *Store) Summarize() (Summary, error) {
	var sum Summary
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return sum, fmt.Errorf("state dir %s: %w", s.dir, err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		v, err := s.cachedRecord(filepath.Join(s.dir, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return sum, err
		}
		sum.Volumes++
		if v.Failures == 0 {
			continue
		}
		sum.RefreshFailing++
		leased := false
		for _, sec := range v.Secrets {
			if sec.LeaseDuration <= 0 {
				continue
			}
			leased = leased || sec.LeaseID != ""
			start := sec.FetchedAt
			if start.IsZero() {
				start = v.FetchedAt
			}
			sum.LeaseExpiry = earliest(sum.LeaseExpiry, start.Add(sec.LeaseDuration))
		}
		if sess := v.Session; leased && sess != nil && !sess.ExpiresAt.IsZero() {
			sum.TokenExpiry = earliest(sum.TokenExpiry, sess.ExpiresAt)
		}
	}
	return sum, nil
}

func earliest(cur, t time.Time) time.Time {
	if cur.IsZero() || t.Before(cur) {
		return t
	}
	return cur
}

// cachedRecord returns the record in file name, decoding it only when the
// file changed since it was cached. The result is shared with the cache:
// read it, never change it.
func (s *Store) cachedRecord(name string) (*Volume, error) {
	info, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	c, ok := s.cache[name]
	s.mu.Unlock()
	if ok && c.mtime.Equal(info.ModTime()) && c.size == info.Size() {
		return c.v, nil
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	v, err := decodeVolume(b)
	if err != nil {
		return nil, fmt.Errorf("parse state file %s: %w", filepath.Base(name), err)
	}
	s.remember(name, v)
	return v, nil
}
