// Package audit writes one JSON object per line for every access a volume
// makes to Vault: who asked, for which paths, what the policy said, what
// happened. It is for the cluster's log pipeline, so lines are flat, stable
// and self-contained.
//
// An Event carries no secret value and no token, and must not grow a field
// for one. Lease ids are hashed on output: not secrets, but handles to one
// (anyone holding a lease id and a token with sys/leases access could renew
// or revoke it).
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"regexp"
	"sync"
	"time"
	"vaultcsi.dev/driver/driver/ops"

	"k8s.io/klog/v2"
)

// Event is one access. Zero fields are left out of the line, except the
// latency and request count, which a reader should be able to sum.
type Event struct {
	Time                                         time.Time // zero: now
	Node                                         string    // empty: the Logger's node
	Action                                       ops.Action
	Namespace, Pod, PodUID, ServiceAccount, Role string
	Container, Signal                            string // a reload signal's target and signal
	Paths                                        []string
	Versions                                     map[string]int64 // KV v2 versions by path
	LeaseIDs                                     []string         // hashed on output
	Decision                                     ops.Decision     // empty when the policy was not asked
	Rule                                         string           // the policy rule that decided
	Error                                        string
	Latency                                      time.Duration
	VaultRequests                                int
}

// line is the wire form; the field order here is the order on the line.
type line struct {
	Time           string           `json:"time"`
	Node           string           `json:"node"`
	Action         string           `json:"action"`
	Namespace      string           `json:"namespace,omitempty"`
	Pod            string           `json:"pod,omitempty"`
	PodUID         string           `json:"pod_uid,omitempty"`
	ServiceAccount string           `json:"service_account,omitempty"`
	Role           string           `json:"role,omitempty"`
	Container      string           `json:"container,omitempty"`
	Signal         string           `json:"signal,omitempty"`
	Paths          []string         `json:"paths,omitempty"`
	Versions       map[string]int64 `json:"versions,omitempty"` // keys sorted by encoding/json
	LeaseIDs       []string         `json:"lease_ids,omitempty"`
	Decision       string           `json:"decision,omitempty"`
	Rule           string           `json:"rule,omitempty"`
	Error          string           `json:"error,omitempty"`
	LatencyMS      float64          `json:"latency_ms"`
	VaultRequests  int              `json:"vault_requests"`
}

// Logger writes Events to w. It is safe for concurrent use: each line is
// built first and written with a single Write under a lock, so lines never
// interleave even on a writer that splits concurrent writes. A nil *Logger
// discards events, so that auditing can be switched off without nil checks.
type Logger struct {
	node string
	mu   sync.Mutex
	w    io.Writer
	now  func() time.Time
}

// New returns a Logger writing to w (os.Stdout or a file) for node.
func New(w io.Writer, node string) *Logger {
	return &Logger{w: w, node: node, now: time.Now}
}

// Log writes e as one line. A write error is logged, not returned: an audit
// sink that fails must not fail a mount, and kubelet would only retry.
func (l *Logger) Log(e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	if e.Node == "" {
		e.Node = l.node
	}
	ln := line{
		Time:           e.Time.UTC().Format(time.RFC3339Nano),
		Node:           e.Node,
		Action:         string(e.Action),
		Namespace:      e.Namespace,
		Pod:            e.Pod,
		PodUID:         e.PodUID,
		ServiceAccount: e.ServiceAccount,
		Role:           e.Role,
		Container:      e.Container,
		Signal:         e.Signal,
		Paths:          e.Paths,
		Versions:       e.Versions,
		Decision:       string(e.Decision),
		Rule:           e.Rule,
		Error:          Scrub(e.Error),
		LatencyMS:      float64(e.Latency) / float64(time.Millisecond),
		VaultRequests:  e.VaultRequests,
	}
	if len(e.LeaseIDs) > 0 {
		ln.LeaseIDs = make([]string, len(e.LeaseIDs))
		for i, id := range e.LeaseIDs {
			ln.LeaseIDs[i] = HashLeaseID(id)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)               // paths and errors stay readable; still valid JSON
	if err := enc.Encode(ln); err != nil { // Encode appends the newline
		klog.ErrorS(err, "Audit event not encodable", "action", e.Action)
		return
	}
	l.mu.Lock()
	_, err := l.w.Write(buf.Bytes())
	l.mu.Unlock()
	if err != nil {
		klog.ErrorS(err, "Audit write failed", "action", e.Action)
	}
}

// HashLeaseID is how a lease id appears in audit lines; use it wherever a
// lease must be named (Events, logs) so that they can be correlated.
func HashLeaseID(id string) string {
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// maxErrorLen keeps a line bounded whatever an error wraps.
const maxErrorLen = 1024

// Error texts come from elsewhere (Vault responses, wrapped errors). They
// should never hold a credential; in case one does (CVE-2025-7445 was a
// marshal error echoing a secret), mask what looks like a JWT or a Vault token.
var credentialRE = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*|\bhv[sbr]\.[A-Za-z0-9_-]{20,}|\bs\.[A-Za-z0-9]{24}\b`)

// Scrub masks anything in s that looks like a JWT or a Vault token and
// bounds its length: a last line of defence for error texts.
func Scrub(s string) string {
	if s == "" {
		return ""
	}
	s = credentialRE.ReplaceAllString(s, "[redacted]")
	if len(s) > maxErrorLen {
		s = s[:maxErrorLen] + "...(truncated)"
	}
	return s
}
