// Package ops is the vocabulary of what the driver does to a volume and
// how it ended, shared by the driver and its reports (audit lines, metric
// labels, Events). It imports nothing of the driver, so audit and metrics
// can use it. Every value is user-visible (an audit line's "action", a
// metric label): never change one.
package ops

// Kind is what an operation was.
type Kind string

// Kinds.
const (
	Publish     Kind = "publish"      // first publish of a volume
	Republish   Kind = "republish"    // a re-publish with nothing due: no Vault call
	Refresh     Kind = "refresh"      // a re-publish that fetched again
	Unpublish   Kind = "unpublish"    // leases and token revoked, volume unmounted
	Deny        Kind = "deny"         // a publish the access policy refused
	Reject      Kind = "reject"       // a publish refused before authorization (bad request); no Vault call
	RevokeRetry Kind = "revoke-retry" // a background retry of a token revocation
)

// MetricOperation is the "operation" label of a kind: a denied or rejected
// request is a publish, a re-publish with nothing due is a refresh.
func (k Kind) MetricOperation() Kind {
	switch k {
	case Deny, Reject:
		return Publish
	case Republish:
		return Refresh
	default:
		return k
	}
}

// Outcome is how an operation ended.
type Outcome string

// Outcomes.
const (
	OK        Outcome = "ok"
	Unchanged Outcome = "unchanged" // a refresh that found the files as they were
	Skipped   Outcome = "skipped"   // a re-publish with nothing due
	Failed    Outcome = "failed"    // for a background revocation: retried later
	KeptOld   Outcome = "kept-old"  // a refresh failed; the files already mounted stay
	Expired   Outcome = "expired"   // a revocation dropped: the token expired in Vault
)

// Action is an audit line's "action".
type Action string

// Audit actions.
const (
	ActionPublish Action = "publish" // first publish of a volume
	ActionRefresh Action = "refresh" // a republish that fetched again
	ActionRevoke  Action = "revoke"  // unpublish: leases and token revoked
	ActionDeny    Action = "deny"    // refused by the access policy
	ActionFail    Action = "fail"    // an attempt that failed
	ActionReject  Action = "reject"  // refused before authorization (bad request); no Vault call
)

// Decision is what the access policy answered ("" when it was not asked).
type Decision string

// Decisions.
const (
	DecisionAllow Decision = "allow"
	DecisionDeny  Decision = "deny"
)

// Reload signals: the Kind, audit action and outcomes of a reload signal
// sent to a pod's container after a refresh changed its files.
const (
	Signal       Kind    = "signal"      // a reload signal after a refresh that changed files
	ActionSignal Action  = "signal"      // a reload signal's audit line
	NotRunning   Outcome = "not-running" // the container is not running: no signal sent
	NotFound     Outcome = "not-found"   // the container or its process was not found: no signal sent
)

// ReloadSignal is a signal a pod may ask for after a rotation. Only these
// four: SIGKILL and SIGSTOP cannot be handled, and numbers mean different
// signals on different architectures.
type ReloadSignal string

// Reload signals.
const (
	SIGHUP  ReloadSignal = "SIGHUP"
	SIGUSR1 ReloadSignal = "SIGUSR1"
	SIGUSR2 ReloadSignal = "SIGUSR2"
	SIGTERM ReloadSignal = "SIGTERM" // the container exits and restarts under its restartPolicy
)

// ReloadSignals lists the signals a pod may ask for, in a stable order.
var ReloadSignals = []ReloadSignal{SIGHUP, SIGUSR1, SIGUSR2, SIGTERM}

// Valid reports whether s is one of ReloadSignals.
func (s ReloadSignal) Valid() bool {
	for _, v := range ReloadSignals {
		if s == v {
			return true
		}
	}
	return false
}
