// Package kube is the driver's only contact with the Kubernetes API: it
// reads a pod's labels for the access policy (only when a rule needs them),
// a pod's containers and their status for reload signals (only for pods
// that ask for one), and records Events on pods. Publishing never waits on the API server for
// anything else, and no client-side rate limiter sits on the label lookup:
// a burst of pods must not queue behind one (a peer's 5 QPS limit did that).
//
// It talks to the API through a REST client that knows only core/v1, not
// the full clientset: the clientset's scheme links every API group into
// the binary (about 30 MB, most of the driver's resident memory).
package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/flowcontrol"
)

// ErrPodMismatch means the pod named in the volume context does not exist
// with that UID: a stale or forged identity.
var ErrPodMismatch = errors.New("pod identity mismatch")

// scheme holds the only types the driver reads or writes: core/v1.
var scheme = runtime.NewScheme()

func init() {
	if err := corev1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	metav1.AddToGroupVersion(scheme, corev1.SchemeGroupVersion)
}

// Client is a core/v1 REST client.
type Client struct {
	rc rest.Interface
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
	return NewForConfig(cfg)
}

// NewForConfig builds a client from a rest.Config.
func NewForConfig(cfg *rest.Config) (*Client, error) {
	c := rest.CopyConfig(cfg)
	c.UserAgent = "vault-csi-driver"
	// Pod reads sit on the publish path: no client-side throttling there.
	c.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	c.Timeout = 10 * time.Second
	c.APIPath = "/api"
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	// Protobuf, as kubelet and the controllers speak: an Event posted per
	// publish (and the API server's answer) costs a fraction of the CPU
	// that reflection-driven JSON did.
	c.ContentType = runtime.ContentTypeProtobuf
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &Client{rc: rc}, nil
}

// PodLabels returns the labels of the pod, checking that its UID is the
// one kubelet named.
func (c *Client) PodLabels(ctx context.Context, namespace, name, uid string) (map[string]string, error) {
	pod, err := c.Pod(ctx, namespace, name, uid)
	if err != nil {
		return nil, err
	}
	return pod.Labels, nil
}

// Pod returns the pod (its containers and their status, for reload
// signals), checking that its UID is the one kubelet named.
func (c *Client) Pod(ctx context.Context, namespace, name, uid string) (*corev1.Pod, error) {
	var pod corev1.Pod
	err := c.rc.Get().Namespace(namespace).Resource("pods").Name(name).Do(ctx).Into(&pod)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("pod %s/%s: %w: not found", namespace, name, ErrPodMismatch)
	}
	if err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	if string(pod.UID) != uid {
		return nil, fmt.Errorf("pod %s/%s: %w: uid is %s, the volume names %s", namespace, name, ErrPodMismatch, pod.UID, uid)
	}
	return &pod, nil
}

// sink writes events through the REST client (record.EventSink).
type sink struct{ rc rest.Interface }

func (s sink) Create(e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.rc.Post().Namespace(e.Namespace).Resource("events").Body(e).Do(context.TODO()).Into(out)
	return out, err
}

func (s sink) Update(e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.rc.Put().Namespace(e.Namespace).Resource("events").Name(e.Name).Body(e).Do(context.TODO()).Into(out)
	return out, err
}

func (s sink) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.rc.Patch(types.StrategicMergePatchType).Namespace(e.Namespace).Resource("events").Name(e.Name).
		Body(data).Do(context.TODO()).Into(out)
	return out, err
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
	b.StartRecordingToSink(sink{rc: c.rc})
	rec := b.NewRecorder(scheme, corev1.EventSource{Component: "vault-csi-driver", Host: node})
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
