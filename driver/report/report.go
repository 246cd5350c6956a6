// Package report makes every volume operation visible: a Prometheus
// metric, one JSON audit line, and a Kubernetes Event on the pod. It
// turns a driver.Op into each of those and never sees a secret value.
package report

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver"
	"vaultcsi.dev/driver/driver/audit"
	"vaultcsi.dev/driver/driver/metrics"
	"vaultcsi.dev/driver/driver/ops"
	"vaultcsi.dev/driver/provider"
)

// EventSink records Events on pods (kube.Recorder in production).
type EventSink interface {
	Event(namespace, name, uid, eventType, reason, message string)
}

// Reporter fans operations out. Any of its parts may be nil.
type Reporter struct {
	Metrics *metrics.Metrics
	Audit   *audit.Logger
	Events  EventSink
}

// Event reasons on pods.
const (
	ReasonMounted       = "VaultSecretsMounted"
	ReasonRotated       = "VaultSecretsRotated"
	ReasonRefreshFailed = "VaultSecretsRefreshFailed"
	ReasonDenied        = "VaultSecretsDenied"
	ReasonMountFailed   = "VaultSecretsMountFailed"
	// A reload signal after a refresh changed files: sent, or not sent.
	ReasonReloadSignalled = "VaultSecretsReloadSignalled"
	ReasonReloadFailed    = "VaultSecretsReloadFailed"
)

// Observe implements driver.Observer.
func (r *Reporter) Observe(op driver.Op) {
	if op.Kind == ops.RevokeRetry {
		r.revokeRetry(op)
		return
	}
	if op.Kind == ops.Signal {
		r.reloadSignal(op)
		return
	}
	r.metrics(op)
	r.audit(op)
	r.event(op)
}

func (r *Reporter) metrics(op driver.Op) {
	m := r.Metrics
	if m == nil {
		return
	}
	kind := op.Kind.MetricOperation()
	if op.Kind == ops.Deny {
		m.PolicyDenied(op.Rule)
	}
	// Outcomes are gRPC code names (OK, PermissionDenied, ...), plus for
	// re-publishes what happened: unchanged, skipped (nothing due) and
	// kept-old (the refresh failed and the files stayed).
	outcome := string(op.Outcome)
	switch {
	case op.Code != "" && op.Outcome == ops.Failed:
		outcome = op.Code
	case op.Outcome == ops.OK:
		outcome = codes.OK.String()
	}
	m.ObservePublish(kind, outcome, op.Latency)
	m.ObserveRequests(kind, op.Requests)
	if op.Requests > 0 {
		if op.LoggedIn {
			m.LoggedIn()
		} else if op.Kind == ops.Refresh || op.Kind == ops.Publish {
			m.TokenReused()
		}
	}
	if op.Kind == ops.Refresh && op.Outcome == ops.KeptOld {
		m.RefreshFailed(op.Code) // a gRPC code name: a bounded set
	}
	if op.MountedDelta != 0 {
		m.AddMounted(op.MountedDelta)
	}
	if op.LeasesDelta != 0 {
		m.AddLeases(op.LeasesDelta)
	}
}

func (r *Reporter) audit(op driver.Op) {
	if r.Audit == nil || op.Kind == ops.Republish {
		return // a skipped re-publish touches no secret: not an access
	}
	e := audit.Event{
		Action:    auditAction(op),
		Namespace: op.Pod.Namespace, Pod: op.Pod.PodName, PodUID: op.Pod.PodUID,
		ServiceAccount: op.Pod.ServiceAccount, Role: op.Role,
		Paths: op.Paths, Rule: op.Rule, Latency: op.Latency, VaultRequests: op.Requests,
		Decision: auditDecision(op),
	}
	if len(e.Paths) == 0 {
		e.Paths = secretPaths(op.Secrets)
	}
	if op.Err != nil {
		e.Error = status.Convert(op.Err).Message()
	}
	for _, s := range op.Secrets {
		if s.Version > 0 {
			if e.Versions == nil {
				e.Versions = map[string]int64{}
			}
			e.Versions[s.Path] = s.Version
		}
		if s.LeaseID != "" {
			e.LeaseIDs = append(e.LeaseIDs, s.LeaseID)
		}
	}
	r.Audit.Log(e)
}

// auditDecision is what the access policy answered; "" (left out of the
// line) when it was not asked: a rejected request, an unpublish.
func auditDecision(op driver.Op) ops.Decision {
	if op.Kind == ops.Deny {
		return ops.DecisionDeny
	}
	return op.Decision
}

func auditAction(op driver.Op) ops.Action {
	switch {
	case op.Kind == ops.Reject:
		return ops.ActionReject
	case op.Kind == ops.Deny:
		return ops.ActionDeny
	case op.Kind == ops.Unpublish:
		return ops.ActionRevoke
	case op.Outcome == ops.Failed || op.Outcome == ops.KeptOld:
		return ops.ActionFail
	case op.Kind == ops.Refresh:
		return ops.ActionRefresh
	}
	return ops.ActionPublish
}

func (r *Reporter) event(op driver.Op) {
	if r.Events == nil || op.Pod.PodName == "" {
		return
	}
	p := op.Pod
	switch {
	case op.Kind == ops.Deny:
		r.Events.Event(p.Namespace, p.PodName, p.PodUID, "Warning", ReasonDenied, message(op.Err))
	case op.Kind == ops.Publish && op.Outcome == ops.Failed:
		r.Events.Event(p.Namespace, p.PodName, p.PodUID, "Warning", ReasonMountFailed, message(op.Err))
	case op.Kind == ops.Publish:
		r.Events.Event(p.Namespace, p.PodName, p.PodUID, "Normal", ReasonMounted,
			fmt.Sprintf("mounted %s with role %q", describe(op.Secrets), op.Role))
	case op.Kind == ops.Refresh && op.Outcome == ops.KeptOld:
		r.Events.Event(p.Namespace, p.PodName, p.PodUID, "Warning", ReasonRefreshFailed,
			"refresh failed, keeping the files already mounted: "+message(op.Err))
	case op.Kind == ops.Refresh && op.Changed:
		r.Events.Event(p.Namespace, p.PodName, p.PodUID, "Normal", ReasonRotated,
			fmt.Sprintf("rotated (%s): now %s", op.Reason, describe(op.Secrets)))
	}
}

// message is a status error's text. Driver errors never hold values; the
// audit scrubber masks anything credential-shaped all the same.
func message(err error) string {
	if err == nil {
		return ""
	}
	st := status.Convert(err)
	if st.Code() == codes.Unknown {
		return audit.Scrub(err.Error())
	}
	return audit.Scrub(st.Code().String() + ": " + st.Message())
}

// describe lists paths with KV versions and lease TTLs: never values.
func describe(infos []provider.SecretInfo) string {
	parts := make([]string, 0, len(infos))
	for _, s := range infos {
		switch {
		case s.Version > 0:
			parts = append(parts, fmt.Sprintf("%s (v%d)", s.Path, s.Version))
		case s.LeaseDuration > 0:
			parts = append(parts, fmt.Sprintf("%s (ttl %s)", s.Path, s.LeaseDuration))
		default:
			parts = append(parts, s.Path)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func secretPaths(infos []provider.SecretInfo) []string {
	out := make([]string, 0, len(infos))
	for _, s := range infos {
		out = append(out, s.Path)
	}
	return out
}

// revokeRetry reports a background revocation attempt: every attempt is
// counted; the end of one (revoked, or dropped at the token's expiry) is
// an audit line. No Event: the pod is usually gone.
func (r *Reporter) revokeRetry(op driver.Op) {
	r.Metrics.RevocationRetry(op.Outcome)
	if r.Audit == nil || op.Outcome == ops.Failed {
		return
	}
	e := audit.Event{
		Action:    ops.ActionRevoke,
		Namespace: op.Pod.Namespace, Pod: op.Pod.PodName, PodUID: op.Pod.PodUID, ServiceAccount: op.Pod.ServiceAccount,
		VaultRequests: op.Requests, // no decision: the access policy is not asked
	}
	if op.Outcome == ops.Expired {
		e.Error = "the token expired before Vault could be reached: Vault revoked it and its leases"
	}
	r.Audit.Log(e)
}

// reloadSignal reports a reload signal: a metric, an audit line
// ("action":"signal") and an Event, Normal when it was sent, Warning when
// not (the refresh itself succeeded: the files were rotated).
func (r *Reporter) reloadSignal(op driver.Op) {
	r.Metrics.ReloadSignal(op.Signal, op.Outcome)
	if r.Audit != nil {
		e := audit.Event{
			Action:    ops.ActionSignal,
			Namespace: op.Pod.Namespace, Pod: op.Pod.PodName, PodUID: op.Pod.PodUID,
			ServiceAccount: op.Pod.ServiceAccount, Role: op.Role,
			Container: op.Container, Signal: string(op.Signal), Latency: op.Latency,
		}
		if op.Err != nil {
			e.Error = string(op.Outcome) + ": " + message(op.Err)
		}
		r.Audit.Log(e)
	}
	if r.Events == nil || op.Pod.PodName == "" {
		return
	}
	p := op.Pod
	if op.Outcome == ops.OK {
		r.Events.Event(p.Namespace, p.PodName, p.PodUID, "Normal", ReasonReloadSignalled,
			fmt.Sprintf("sent %s to container %q after its secrets changed", op.Signal, op.Container))
		return
	}
	r.Events.Event(p.Namespace, p.PodName, p.PodUID, "Warning", ReasonReloadFailed,
		fmt.Sprintf("no %s sent to container %q (%s): %s; the files were rotated", op.Signal, op.Container, op.Outcome, message(op.Err)))
}
