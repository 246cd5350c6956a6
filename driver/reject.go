package driver

import (
	"context"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/driver/ops"
)

// reject reports a publish refused before authorization (ops.Reject: bad
// attributes, a bad target, a target the driver does not own; no Vault
// call was made, and the identity on it is only claimed), with the pod's
// identity as the volume context claims it (best effort: it may be what
// failed validation), and returns err.
func (d *Driver) reject(req *csi.NodePublishVolumeRequest, err error, start time.Time) error {
	pod, role := attributes.Claimed(req.GetVolumeContext())
	d.observer.Observe(Op{Kind: ops.Reject, Outcome: ops.Failed, Code: status.Code(err).String(), Err: err,
		Target: req.GetTargetPath(), Pod: pod, Role: role, Latency: time.Since(start)})
	return err
}

// decide runs the access policy and records its answer on op: Decision
// (allow or deny) only when the policy decided, and the deciding rule.
func (d *Driver) decide(ctx context.Context, a *publishArgs, op *Op) error {
	dec, err := d.authorize(ctx, a.vol)
	op.Rule = dec.Rule
	switch {
	case err == nil:
		op.Decision = ops.DecisionAllow
	case status.Code(err) == codes.PermissionDenied:
		op.Decision = ops.DecisionDeny
	}
	return err
}
