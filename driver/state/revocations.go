package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"vaultcsi.dev/driver/provider"
)

// revocationsDir holds one record per Vault token still to be revoked,
// under the state dir (so on tmpfs, root-only, kept across restarts).
const revocationsDir = "revoke"

// Revocation is a Vault token the driver no longer needs and has not yet
// revoked (Vault was unreachable, or the driver handed it over to be
// revoked outside a lock). It holds the token, its namespace and expiry,
// and whose it was: never a secret value. It is also the file's form, so
// every field has an explicit JSON name (see record.go for the schemas:
// schema 1 had no "schema" key and the same fields).
type Revocation struct {
	// Schema is the file's schema; PutRevocation sets it.
	Schema    int       `json:"schema,omitempty"`
	Token     string    `json:"token"`
	Accessor  string    `json:"accessor,omitempty"`
	Namespace string    `json:"namespace,omitempty"` // Vault namespace
	ExpiresAt time.Time `json:"expiresAt,omitzero"`  // zero: unknown
	// Target and the pod say whose token it was, for logs and audit lines.
	Target         string `json:"target,omitempty"`
	PodNamespace   string `json:"podNamespace,omitempty"`
	PodName        string `json:"podName,omitempty"`
	PodUID         string `json:"podUID,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// Reason is why the token is no longer needed (unpublish, failed
	// publish, replaced, ...).
	Reason string `json:"reason"`
	// Added is when the record was made; Attempts counts failed
	// revocations, NextAttempt is when the next one is due.
	Added       time.Time `json:"added"`
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"nextAttempt"`
	LastError   string    `json:"lastError,omitempty"`
}

// NewRevocation records a session's token, for the pod it was made for.
func NewRevocation(s *provider.Session, target string, pod provider.Identity) Revocation {
	return Revocation{
		Token: s.Token, Accessor: s.Accessor, Namespace: s.Namespace, ExpiresAt: s.ExpiresAt,
		Target: target, PodNamespace: pod.Namespace, PodName: pod.PodName, PodUID: pod.PodUID,
		ServiceAccount: pod.ServiceAccount,
	}
}

// Session is what revoking the token needs.
func (r *Revocation) Session() *provider.Session {
	return &provider.Session{Token: r.Token, Accessor: r.Accessor, Namespace: r.Namespace, ExpiresAt: r.ExpiresAt}
}

// Pod is whose token it was.
func (r *Revocation) Pod() provider.Identity {
	return provider.Identity{Namespace: r.PodNamespace, PodName: r.PodName, PodUID: r.PodUID, ServiceAccount: r.ServiceAccount}
}

// Key names a revocation record; the token itself never appears in a file
// name.
func (r *Revocation) Key() string { return RevocationKey(r.Token) }

// RevocationKey is the record key of a token.
func RevocationKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:16])
}

func (s *Store) revocationFile(key string) string {
	return filepath.Join(s.dir, revocationsDir, key+".json")
}

// PutRevocation writes a revocation record atomically.
func (s *Store) PutRevocation(r *Revocation) error {
	if r.Token == "" {
		return errors.New("save revocation: no token")
	}
	rec := *r
	rec.Schema = SchemaVersion
	b, err := json.Marshal(&rec)
	if err != nil {
		return fmt.Errorf("save revocation: %w", err)
	}
	dir := filepath.Join(s.dir, revocationsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save revocation: %w", err)
	}
	if _, err := writeAtomic(s.revocationFile(r.Key()), b); err != nil {
		return fmt.Errorf("save revocation: %w", err)
	}
	return nil
}

// DeleteRevocation removes a record by key; a missing one is fine.
func (s *Store) DeleteRevocation(key string) error {
	if err := os.Remove(s.revocationFile(key)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete revocation: %w", err)
	}
	return nil
}

// Revocations returns every revocation record. A record that cannot be
// parsed is skipped (and reported in the error) rather than stopping the
// others.
func (s *Store) Revocations() ([]*Revocation, error) {
	dir := filepath.Join(s.dir, revocationsDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list revocations: %w", err)
	}
	var out []*Revocation
	var errs []error
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			if strings.HasPrefix(e.Name(), ".tmp-") {
				_ = os.Remove(filepath.Join(dir, e.Name())) // left by a crash mid-write
			}
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var r Revocation
		if err := json.Unmarshal(b, &r); err != nil || r.Token == "" {
			errs = append(errs, fmt.Errorf("revocation record %s is unreadable", e.Name()))
			continue
		}
		if r.Schema > SchemaVersion {
			errs = append(errs, fmt.Errorf("revocation record %s: schema %d is newer than this driver reads (up to %d)", e.Name(), r.Schema, SchemaVersion))
			continue
		}
		out = append(out, &r)
	}
	return out, errors.Join(errs...)
}
