package driver

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/driver/kube"
	"vaultcsi.dev/driver/driver/policy"
)

// PodLabeler reads a pod's labels from the API server, checking its UID.
type PodLabeler interface {
	PodLabels(ctx context.Context, namespace, name, uid string) (map[string]string, error)
}

// SetAccessPolicy installs the cluster admin's access policy. current is
// called on every publish (a lock-free read of the latest good policy);
// pods is needed only when a rule matches on labels.
func (d *Driver) SetAccessPolicy(current func() *policy.Policy, pods PodLabeler) {
	d.policy, d.pods = current, pods
}

// authorize applies the access policy before any Vault call. It returns
// the decision (for audit) and a PermissionDenied error naming the rule.
func (d *Driver) authorize(ctx context.Context, v *attributes.Volume) (policy.Decision, error) {
	if d.policy == nil {
		return policy.Decision{Allowed: true, Reason: "no access policy configured"}, nil
	}
	p := d.policy()
	r := v.Request
	subj := policy.Subject{
		Namespace: r.Pod.Namespace, ServiceAccount: r.Pod.ServiceAccount,
		PodName: r.Pod.PodName, PodUID: r.Pod.PodUID, Role: r.Role, Paths: paths(v),
		VaultNamespace: r.VaultNamespace, AuthMount: r.AuthMount, // the pod's overrides only
	}
	if v.Reload != nil {
		subj.ReloadSignal = string(v.Reload.Signal)
	}
	if p.NeedsLabels() {
		if d.pods == nil {
			return policy.Decision{Reason: "a rule needs pod labels but the driver has no API server access"},
				status.Error(codes.FailedPrecondition, "access policy: a rule matches pod labels but the driver has no Kubernetes API access (--kubeconfig or in-cluster)")
		}
		labels, err := d.pods.PodLabels(ctx, r.Pod.Namespace, r.Pod.PodName, r.Pod.PodUID)
		if errors.Is(err, kube.ErrPodMismatch) {
			return policy.Decision{Reason: err.Error()}, status.Errorf(codes.PermissionDenied, "access policy: %v", err)
		}
		if err != nil {
			return policy.Decision{Reason: "pod labels unavailable"}, status.Errorf(codes.Unavailable, "access policy: %v", err)
		}
		subj.Labels = labels
	}
	dec := p.Decide(subj)
	if !dec.Allowed {
		// The reason names the deciding rule, or says no rule matched.
		return dec, status.Errorf(codes.PermissionDenied, "access policy denies role %q for %s/%s (service account %s): %s",
			r.Role, r.Pod.Namespace, r.Pod.PodName, r.Pod.ServiceAccount, dec.Reason)
	}
	return dec, nil
}
