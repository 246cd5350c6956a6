// Package provider is the Vault side of the driver: it logs in with a pod's
// service-account token, reads the secrets a volume asks for and keeps the
// lease information that rotation and revocation need. It knows nothing of
// CSI or mounts; the driver talks to it through Fetch and Release.
package provider

import (
	"errors"
	"os"
	"time"

	"vaultcsi.dev/driver/provider/render"
)

// Errors the driver maps to gRPC codes. Provider errors wrap exactly one of
// these so that callers can use errors.Is without parsing messages.
var (
	ErrInvalid     = errors.New("invalid request")   // InvalidArgument
	ErrDenied      = errors.New("permission denied") // PermissionDenied
	ErrNotFound    = errors.New("not found")         // NotFound
	ErrUnavailable = errors.New("vault unavailable") // Unavailable
	ErrTooLarge    = errors.New("secret too large")  // ResourceExhausted
	// ErrNotIssuing: a secret with args names a path Vault does not answer
	// as a PKI issuing endpoint, so nothing is written (InvalidArgument).
	ErrNotIssuing = errors.New("not a PKI issuing endpoint")
	// ErrTLSVerify: Vault's certificate did not verify against the
	// configured CA (--vault-ca-cert): wrong CA, expired, wrong name. It
	// comes with ErrUnavailable (kubelet retries; an operator must act).
	ErrTLSVerify = errors.New("TLS verification failed")
)

// opLookup is the OnRequest operation of a mount-type lookup.
const opLookup = "lookup"

// SecretSpec is one file of a volume: which Vault path to read and which
// field of it to write.
type SecretSpec struct {
	File string      // path relative to the volume root, validated by the driver
	Path string      // Vault path, e.g. secret/data/db or kv/app
	Key  string      // one field of the data; empty writes the whole map as JSON
	Mode os.FileMode // file mode; 0 means the driver's default
	// Args are the parameters of a write to an issuing endpoint
	// (<pki mount>/issue/<role>); nil means a plain read. The write is sent
	// only after Vault confirms the path is one (see checkIssuing).
	Args map[string]string
	// Index is the entry's position in the volume's secrets attribute, so
	// that errors name it (secrets[2].args) even for a subset of a volume.
	Index int `json:"-"`

	// How the file is made beyond one raw field or the whole map
	// (provider/render); all empty for a plain entry, and omitted from
	// the JSON the driver hashes, so plain volumes hash as before.
	Encoding render.Encoding `json:",omitempty"` // decode Key's value
	Format   render.Format   `json:",omitempty"` // write the issued certificate so
	// Template is the source of a file rendered from the secrets it names
	// (Path, Key and Args are empty then); Tmpl is it parsed and checked.
	Template string           `json:",omitempty"`
	Tmpl     *render.Template `json:"-"`
	// PasswordFrom names the field holding a keystore's password.
	PasswordFrom *FieldRef `json:",omitempty"`
}

// FieldRef is one field of a secret read without args.
type FieldRef struct {
	Path string
	Key  string
}

// Reads lists every Vault read the file needs: its own path and args,
// the secrets its template names and its password's path.
func (s SecretSpec) Reads() []render.Ref {
	var out []render.Ref
	if s.Path != "" {
		out = append(out, render.Ref{Path: s.Path, Args: s.Args})
	}
	if s.Tmpl != nil {
		out = append(out, s.Tmpl.Refs...)
	}
	if s.PasswordFrom != nil {
		out = append(out, render.Ref{Path: s.PasswordFrom.Path})
	}
	return out
}

// Composite reports whether the file needs more than its own read (a
// template, or a password from another secret), so it is rendered once
// every read of the volume has arrived.
func (s SecretSpec) Composite() bool { return s.Tmpl != nil || s.PasswordFrom != nil }

// Identity is who the volume belongs to, as kubelet told the driver.
type Identity struct {
	Namespace      string
	PodName        string
	PodUID         string
	ServiceAccount string
}

// Request is everything the provider needs to fetch one volume's secrets.
type Request struct {
	Role           string
	AuthMount      string // overrides the configured auth mount when set
	VaultNamespace string // overrides the configured Vault namespace when set
	// JWT is the pod's service-account token for the configured audience.
	JWT     string
	Pod     Identity
	Secrets []SecretSpec
	// Session, when set and still valid, is reused instead of logging in.
	Session *Session
	// MaxVolumeBytes bounds the files as tmpfs charges them (whole pages
	// per file, shared data in each file); 0: no bound. Rendering stops as
	// soon as it is passed.
	MaxVolumeBytes int64
	// Memory, when set, is charged for the responses and rendered files
	// this fetch holds; nil: no driver-wide bound.
	Memory *Reservation
	// OnLogin, when set, is called with each new session right after the
	// login and before any read, so the caller can record the token before
	// anything else happens (a crash then leaves a record that names it).
	// An error fails the fetch.
	OnLogin func(*Session) error
}

// File is one fetched file: its contents and the Vault object it came from.
type File struct {
	Name string
	Data []byte
	Mode os.FileMode
}

// SecretInfo describes one Vault object that was read, without its value.
type SecretInfo struct {
	Path          string
	Version       int64 // KV v2 version; 0 for KV v1 and dynamic secrets
	LeaseID       string
	LeaseDuration time.Duration
	Renewable     bool
	// IssuedTTL is the lease's TTL when first issued: a renewal that gives
	// less is capped by max TTL.
	IssuedTTL time.Duration
	// FetchedAt is when the object was read; leases are measured from it.
	FetchedAt time.Time
}

// Session is a Vault login: the token a volume reads with and revokes on
// release. Token is a credential: never log it or put it in an error.
type Session struct {
	Token     string
	Accessor  string
	Namespace string
	Renewable bool
	// IssuedAt is when the token was obtained or last renewed.
	IssuedAt time.Time
	// ExpiresAt is when Vault will expire the token (zero: never).
	ExpiresAt time.Time
}

// Result is the outcome of a Fetch.
type Result struct {
	Files   []File
	Secrets []SecretInfo
	Session *Session
	// LoggedIn is true when Fetch logged in rather than reusing a session.
	LoggedIn bool
	// VaultRequests counts the HTTP requests Fetch sent to Vault.
	VaultRequests int
	// Orphan, on a failed Fetch, is a session it logged in for: the caller
	// must revoke it (Release). Fetch does not, because Vault may be the
	// thing that hangs and the caller knows what it holds while waiting.
	Orphan *Session
}
