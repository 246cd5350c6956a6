package state

import (
	"encoding/json"
	"fmt"
	"time"

	"vaultcsi.dev/driver/provider"
)

// The on-tmpfs record is a contract across driver versions: a driver
// upgraded (or rolled back) while pods run must still refresh and revoke
// what the previous one recorded. So the file has its own types with
// explicit JSON names and a schema number, never the provider's Go structs,
// and every earlier schema stays readable (testdata holds one record of
// each; TestRecordedFormats and the driver's TestStateFormatsRefreshAndRevoke
// prove them).
//
// Schemas:
//   - 1 (no "schema" key): written up to issue 10. The volume's own fields
//     had JSON names; the pod, secrets and sessions were provider structs
//     encoded by their Go field names ("PodName", "LeaseID", "Token").
//   - 2: every field named explicitly below.
//
// Durations are integer nanoseconds in both, times RFC 3339.
//
// Every schema 2 name equals its schema 1 name but for case, and
// encoding/json matches names case-insensitively: a driver of schema 1
// (rolled back to) reads a schema 2 record whole (TestRollbackReadsSchema2).
const (
	schemaV1 = 1
	schemaV2 = 2
	// SchemaVersion is the schema this driver writes.
	SchemaVersion = schemaV2
)

// record is schema 2 of a volume's file.
type record struct {
	Schema         int            `json:"schema"`
	Target         string         `json:"target"`
	VolumeID       string         `json:"volumeID"`
	Pod            podRecord      `json:"pod"`
	Role           string         `json:"role"`
	RequestHash    string         `json:"requestHash"`
	FetchedAt      time.Time      `json:"fetchedAt"`
	Secrets        []secretRecord `json:"secrets"`
	Session        *sessionRecord `json:"session,omitempty"`
	RotationPeriod time.Duration  `json:"rotationPeriod"`
	Jitter         time.Duration  `json:"jitter"`
	Failures       int            `json:"failures,omitempty"`
	NextAttempt    time.Time      `json:"nextAttempt,omitzero"`
	LastError      string         `json:"lastError,omitempty"`
	PrunePending   bool           `json:"prunePending,omitempty"`
	Pending        bool           `json:"pending,omitempty"`
	Incoming       *sessionRecord `json:"incoming,omitempty"`
}

type podRecord struct {
	Namespace      string `json:"namespace"`
	Name           string `json:"podName"`
	UID            string `json:"podUID"`
	ServiceAccount string `json:"serviceAccount"`
}

type secretRecord struct {
	Path          string        `json:"path"`
	Version       int64         `json:"version,omitempty"`
	LeaseID       string        `json:"leaseID,omitempty"`
	LeaseDuration time.Duration `json:"leaseDuration,omitempty"`
	Renewable     bool          `json:"renewable,omitempty"`
	IssuedTTL     time.Duration `json:"issuedTTL,omitempty"`
	FetchedAt     time.Time     `json:"fetchedAt,omitzero"`
}

// sessionRecord is a Vault token: a credential (the directory is root-only).
type sessionRecord struct {
	Token     string    `json:"token"`
	Accessor  string    `json:"accessor,omitempty"`
	Namespace string    `json:"namespace,omitempty"`
	Renewable bool      `json:"renewable,omitempty"`
	IssuedAt  time.Time `json:"issuedAt,omitzero"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// recordV1 is schema 1, spelled out with the names the Go structs of the
// time produced, so that renaming a provider field cannot break reading it.
type recordV1 struct {
	Target         string           `json:"target"`
	VolumeID       string           `json:"volumeID"`
	Pod            podRecordV1      `json:"pod"`
	Role           string           `json:"role"`
	RequestHash    string           `json:"requestHash"`
	FetchedAt      time.Time        `json:"fetchedAt"`
	Secrets        []secretRecordV1 `json:"secrets"`
	Session        *sessionRecordV1 `json:"session"`
	RotationPeriod time.Duration    `json:"rotationPeriod"`
	Jitter         time.Duration    `json:"jitter"`
	Failures       int              `json:"failures"`
	NextAttempt    time.Time        `json:"nextAttempt"`
	LastError      string           `json:"lastError"`
	PrunePending   bool             `json:"prunePending"`
	Pending        bool             `json:"pending"`
	Incoming       *sessionRecordV1 `json:"incoming"`
}

type podRecordV1 struct {
	Namespace      string `json:"Namespace"`
	PodName        string `json:"PodName"`
	PodUID         string `json:"PodUID"`
	ServiceAccount string `json:"ServiceAccount"`
}

type secretRecordV1 struct {
	Path          string        `json:"Path"`
	Version       int64         `json:"Version"`
	LeaseID       string        `json:"LeaseID"`
	LeaseDuration time.Duration `json:"LeaseDuration"`
	Renewable     bool          `json:"Renewable"`
	IssuedTTL     time.Duration `json:"IssuedTTL"`
	FetchedAt     time.Time     `json:"FetchedAt"`
}

type sessionRecordV1 struct {
	Token     string    `json:"Token"`
	Accessor  string    `json:"Accessor"`
	Namespace string    `json:"Namespace"`
	Renewable bool      `json:"Renewable"`
	IssuedAt  time.Time `json:"IssuedAt"`
	ExpiresAt time.Time `json:"ExpiresAt"`
}

// schemaOf reads only the schema number; a record without one is schema 1.
func schemaOf(b []byte) (int, error) {
	var h struct {
		Schema int `json:"schema"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return 0, err
	}
	if h.Schema == 0 {
		return schemaV1, nil
	}
	return h.Schema, nil
}

// decodeVolume reads a volume record of any schema this driver knows. A
// newer schema is an error rather than a guess: misreading a token would
// leave it unrevoked.
func decodeVolume(b []byte) (*Volume, error) {
	schema, err := schemaOf(b)
	if err != nil {
		return nil, err
	}
	switch schema {
	case schemaV1:
		var r recordV1
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("schema %d: %w", schema, err)
		}
		return r.volume(), nil
	case schemaV2:
		var r record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("schema %d: %w", schema, err)
		}
		return r.volume(), nil
	default:
		return nil, fmt.Errorf("record schema %d is newer than this driver reads (up to %d)", schema, SchemaVersion)
	}
}

// encodeVolume writes a volume record in the current schema.
func encodeVolume(v *Volume) ([]byte, error) {
	r := record{
		Schema: SchemaVersion, Target: v.Target, VolumeID: v.VolumeID,
		Pod:  podRecord{Namespace: v.Pod.Namespace, Name: v.Pod.PodName, UID: v.Pod.PodUID, ServiceAccount: v.Pod.ServiceAccount},
		Role: v.Role, RequestHash: v.RequestHash, FetchedAt: v.FetchedAt,
		Session: toSessionRecord(v.Session), RotationPeriod: v.RotationPeriod, Jitter: v.Jitter,
		Failures: v.Failures, NextAttempt: v.NextAttempt, LastError: v.LastError,
		PrunePending: v.PrunePending, Pending: v.Pending, Incoming: toSessionRecord(v.Incoming),
	}
	if v.Secrets != nil {
		r.Secrets = make([]secretRecord, len(v.Secrets))
	}
	for i, s := range v.Secrets {
		r.Secrets[i] = secretRecord{Path: s.Path, Version: s.Version, LeaseID: s.LeaseID, LeaseDuration: s.LeaseDuration,
			Renewable: s.Renewable, IssuedTTL: s.IssuedTTL, FetchedAt: s.FetchedAt}
	}
	return json.Marshal(&r)
}

func toSessionRecord(s *provider.Session) *sessionRecord {
	if s == nil {
		return nil
	}
	return &sessionRecord{Token: s.Token, Accessor: s.Accessor, Namespace: s.Namespace, Renewable: s.Renewable,
		IssuedAt: s.IssuedAt, ExpiresAt: s.ExpiresAt}
}

func (s *sessionRecord) session() *provider.Session {
	if s == nil {
		return nil
	}
	return &provider.Session{Token: s.Token, Accessor: s.Accessor, Namespace: s.Namespace, Renewable: s.Renewable,
		IssuedAt: s.IssuedAt, ExpiresAt: s.ExpiresAt}
}

func (r *record) volume() *Volume {
	v := &Volume{
		Target: r.Target, VolumeID: r.VolumeID,
		Pod:  provider.Identity{Namespace: r.Pod.Namespace, PodName: r.Pod.Name, PodUID: r.Pod.UID, ServiceAccount: r.Pod.ServiceAccount},
		Role: r.Role, RequestHash: r.RequestHash, FetchedAt: r.FetchedAt,
		Session: r.Session.session(), RotationPeriod: r.RotationPeriod, Jitter: r.Jitter,
		Failures: r.Failures, NextAttempt: r.NextAttempt, LastError: r.LastError,
		PrunePending: r.PrunePending, Pending: r.Pending, Incoming: r.Incoming.session(),
	}
	if r.Secrets != nil {
		v.Secrets = make([]provider.SecretInfo, len(r.Secrets))
	}
	for i, s := range r.Secrets {
		v.Secrets[i] = provider.SecretInfo{Path: s.Path, Version: s.Version, LeaseID: s.LeaseID, LeaseDuration: s.LeaseDuration,
			Renewable: s.Renewable, IssuedTTL: s.IssuedTTL, FetchedAt: s.FetchedAt}
	}
	return v
}

func (s *sessionRecordV1) session() *provider.Session {
	if s == nil {
		return nil
	}
	return &provider.Session{Token: s.Token, Accessor: s.Accessor, Namespace: s.Namespace, Renewable: s.Renewable,
		IssuedAt: s.IssuedAt, ExpiresAt: s.ExpiresAt}
}

func (r *recordV1) volume() *Volume {
	v := &Volume{
		Target: r.Target, VolumeID: r.VolumeID,
		Pod:  provider.Identity{Namespace: r.Pod.Namespace, PodName: r.Pod.PodName, PodUID: r.Pod.PodUID, ServiceAccount: r.Pod.ServiceAccount},
		Role: r.Role, RequestHash: r.RequestHash, FetchedAt: r.FetchedAt,
		Session: r.Session.session(), RotationPeriod: r.RotationPeriod, Jitter: r.Jitter,
		Failures: r.Failures, NextAttempt: r.NextAttempt, LastError: r.LastError,
		PrunePending: r.PrunePending, Pending: r.Pending, Incoming: r.Incoming.session(),
	}
	if r.Secrets != nil {
		v.Secrets = make([]provider.SecretInfo, len(r.Secrets))
	}
	for i, s := range r.Secrets {
		v.Secrets[i] = provider.SecretInfo{Path: s.Path, Version: s.Version, LeaseID: s.LeaseID, LeaseDuration: s.LeaseDuration,
			Renewable: s.Renewable, IssuedTTL: s.IssuedTTL, FetchedAt: s.FetchedAt}
	}
	return v
}
