package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/driver/kube"
	"vaultcsi.dev/driver/driver/ops"
	"vaultcsi.dev/driver/driver/reload"
)

// PodReader reads a pod, checking its UID (kube.Client).
type PodReader interface {
	Pod(ctx context.Context, namespace, name, uid string) (*corev1.Pod, error)
}

// Signaller finds a container's main process on this node and signals it
// (reload.Host); it returns the pid signalled.
type Signaller interface {
	Send(podUID, containerID string, sig unix.Signal) (int, error)
}

// reloadTimeout bounds the pod read and process scan of one signal.
const reloadTimeout = 10 * time.Second

// SetReload turns reload signals on: the cluster admin's choice (the
// driver then needs the host's PID namespace). Off, a pod that asks for
// one fails its first publish.
func (d *Driver) SetReload(pods PodReader, s Signaller) {
	d.reloadPods, d.signaller = pods, s
}

// checkReload runs on a first publish, before the access policy and any
// Vault call: the feature must be on and the container the pod names must
// be one of its own (read from the API server, the pod the token names).
func (d *Driver) checkReload(ctx context.Context, a *publishArgs) error {
	r := a.vol.Reload
	if r == nil {
		return nil
	}
	if d.signaller == nil || d.reloadPods == nil {
		return status.Errorf(codes.FailedPrecondition, "%s: reload signals are off on this node (the cluster admin turns them on: Helm value reloadSignals.enabled, driver flag --reload-signals)", attributes.AttrReload)
	}
	p := a.vol.Request.Pod
	ctx, cancel := context.WithTimeout(ctx, reloadTimeout)
	defer cancel()
	pod, err := d.reloadPods.Pod(ctx, p.Namespace, p.PodName, p.PodUID)
	switch {
	case errors.Is(err, kube.ErrPodMismatch):
		return status.Errorf(codes.PermissionDenied, "%s: %v", attributes.AttrReload, err)
	case err != nil:
		return status.Errorf(codes.Unavailable, "%s: reading the pod's containers: %v", attributes.AttrReload, err)
	}
	if _, err := r.Resolve(containerNames(pod)); err != nil {
		return toStatus(err) // InvalidArgument naming reload.container
	}
	return nil
}

func containerNames(pod *corev1.Pod) []string {
	names := make([]string, len(pod.Spec.Containers))
	for i, c := range pod.Spec.Containers {
		names[i] = c.Name
	}
	return names
}

// sendReload signals the volume's container after a refresh changed its
// files (the swap is complete and the record saved). Whatever happens is
// reported; the refresh has succeeded either way.
func (d *Driver) sendReload(a *publishArgs) {
	start := time.Now()
	r := a.vol.Reload
	op := Op{Kind: ops.Signal, Outcome: ops.OK, Target: a.target, Pod: a.vol.Request.Pod, Role: a.vol.Request.Role,
		Container: r.Container, Signal: r.Signal}
	ctx, cancel := context.WithTimeout(context.Background(), reloadTimeout)
	defer cancel()
	pid, err := d.signal(ctx, r, &op)
	op.Latency = time.Since(start)
	if err != nil {
		if op.Outcome == ops.OK {
			op.Outcome = ops.Failed
		}
		op.Err = err
		klog.ErrorS(err, "reload signal not sent; the files were rotated", "target", a.target,
			"pod", podRef(a.vol.Request.Pod), "container", op.Container, "signal", r.Signal)
	} else {
		klog.V(2).InfoS("reload signal sent", "pod", podRef(a.vol.Request.Pod), "container", op.Container,
			"signal", r.Signal, "pid", pid)
	}
	d.observer.Observe(op)
}

// signal finds the container in the pod's status and signals its main
// process. The container ID comes only from the pod the token named, so a
// pod can only ever signal its own containers.
func (d *Driver) signal(ctx context.Context, r *attributes.Reload, op *Op) (int, error) {
	if d.signaller == nil || d.reloadPods == nil {
		return 0, errors.New("reload signals are off on this node")
	}
	p := op.Pod
	pod, err := d.reloadPods.Pod(ctx, p.Namespace, p.PodName, p.PodUID)
	if err != nil {
		if errors.Is(err, kube.ErrPodMismatch) {
			op.Outcome = ops.NotFound
		}
		return 0, err
	}
	name, err := r.Resolve(containerNames(pod))
	if err != nil {
		op.Outcome = ops.NotFound
		return 0, err
	}
	op.Container = name
	var cs *corev1.ContainerStatus
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == name {
			cs = &pod.Status.ContainerStatuses[i]
		}
	}
	if cs == nil || cs.State.Running == nil || cs.ContainerID == "" {
		op.Outcome = ops.NotRunning
		return 0, fmt.Errorf("container %q is not running", name)
	}
	_, id, err := reload.ParseContainerID(cs.ContainerID)
	if err != nil {
		return 0, err
	}
	sig, ok := reload.Number(r.Signal)
	if !ok {
		return 0, fmt.Errorf("signal %q is not a reload signal", r.Signal)
	}
	pid, err := d.signaller.Send(p.PodUID, id, sig)
	if errors.Is(err, reload.ErrNotFound) {
		op.Outcome = ops.NotFound
		return 0, fmt.Errorf("container %q: %w", name, err)
	}
	return pid, err
}
