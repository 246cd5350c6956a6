// Package kube is the driver's only contact with the Kubernetes API: it
// reads a pod's labels for the access policy (only when a rule needs them)
// and records Events on pods. Publishing never waits on the API server for
// anything else, and no client-side rate limiter sits on the label lookup:
// a burst of pods must not queue behind one (a peer's 5 QPS limit did that).
package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/flowcontrol"
)

// ErrPodMismatch means the pod named in the volume context does not exist
// with that UID: a stale or forged identity.
var ErrPodMismatch = errors.New("pod identity mismatch")

// Client wraps a clientset.
type Client struct {
	cs kubernetes.Interface
}

// NewClient builds a client from a kubeconfig file, or the in-cluster
// service account when kubeconfig is empty.
func NewClient(kubeconfig string) (*Client, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	cfg.UserAgent = "vault-csi-driver"
	// Pod reads sit on the publish path: no client-side throttling there.
	cfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	cfg.Timeout = 10 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &Client{cs: cs}, nil
}

// NewForClientset wraps an existing clientset (tests).
func NewForClientset(cs kubernetes.Interface) *Client { return &Client{cs: cs} }

// PodLabels returns the labels of the pod, checking that its UID is the
// one kubelet named.
func (c *Client) PodLabels(ctx context.Context, namespace, name, uid string) (map[string]string, error) {
	pod, err := c.cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("pod %s/%s: %w: not found", namespace, name, ErrPodMismatch)
	}
	if err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	if string(pod.UID) != uid {
		return nil, fmt.Errorf("pod %s/%s: %w: uid is %s, the volume names %s", namespace, name, ErrPodMismatch, pod.UID, uid)
	}
	return pod.Labels, nil
}

// Recorder records Events on pods, rate-limited per pod by client-go's
// spam filter so a crash-looping pod cannot flood the API server.
type Recorder struct {
	b   record.EventBroadcaster
	rec record.EventRecorder
}

// NewRecorder starts an event broadcaster that writes through c.
func NewRecorder(c *Client, node string) *Recorder {
	b := record.NewBroadcasterWithCorrelatorOptions(record.CorrelatorOptions{
		// 10 events at once per pod and reason class, then one per 30s.
		BurstSize: 10,
		QPS:       1.0 / 30,
	})
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.cs.CoreV1().Events("")})
	rec := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "vault-csi-driver", Host: node})
	return &Recorder{b: b, rec: rec}
}

// Event records one event on a pod.
func (r *Recorder) Event(namespace, name, uid, eventType, reason, message string) {
	if r == nil {
		return
	}
	ref := &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: namespace, Name: name, UID: types.UID(uid)}
	r.rec.Event(ref, eventType, reason, message)
}

// Stop flushes and stops the broadcaster.
func (r *Recorder) Stop() {
	if r != nil {
		r.b.Shutdown()
	}
}
