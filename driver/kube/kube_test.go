package kube_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"vaultcsi.dev/driver/driver/kube"

	"vaultcsi.dev/driver/driver/kube/kubetest"
)

// kubeNS is this package's namespace on a control plane shared with other
// packages' tests.
const kubeNS = "kube-client-test"

// startControlPlane returns the control plane this run shares (make unit
// starts one) or one of this test's own: see kubetest.Start.
func startControlPlane(t *testing.T) (kubeconfig string, cs kubernetes.Interface) {
	t.Helper()
	kc := kubetest.Start(t)
	return kc.Kubeconfig, kc.Clientset
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAgainstAPIServer(t *testing.T) {
	kubeconfig, cs := startControlPlane(t)
	ctx := ctxT(t)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kubeNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(kubeNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "payment"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	no := false
	pod, err := cs.CoreV1().Pods(kubeNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "payment-1", Labels: map[string]string{"app": "payment", "tier": "web"}},
		Spec: corev1.PodSpec{ServiceAccountName: "payment", AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "app", Image: "busybox:1.35"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uid := string(pod.UID)
	c, err := kube.NewClient(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("PodLabels found", func(t *testing.T) {
		labels, err := c.PodLabels(ctxT(t), kubeNS, "payment-1", uid)
		if err != nil {
			t.Fatal(err)
		}
		if len(labels) != 2 || labels["app"] != "payment" || labels["tier"] != "web" {
			t.Errorf("labels = %v", labels)
		}
	})
	t.Run("PodLabels not found", func(t *testing.T) {
		_, err := c.PodLabels(ctxT(t), kubeNS, "payment-2", uid)
		if !errors.Is(err, kube.ErrPodMismatch) || !strings.Contains(err.Error(), "not found") {
			t.Errorf("err = %v, want ErrPodMismatch (not found)", err)
		}
		_, err = c.PodLabels(ctxT(t), "no-such-namespace", "payment-1", uid)
		if !errors.Is(err, kube.ErrPodMismatch) {
			t.Errorf("err = %v in a missing namespace, want ErrPodMismatch", err)
		}
	})
	t.Run("PodLabels uid mismatch", func(t *testing.T) {
		_, err := c.PodLabels(ctxT(t), kubeNS, "payment-1", "6f1c2d3e-0000-4000-8000-00000000beef")
		if !errors.Is(err, kube.ErrPodMismatch) || !strings.Contains(err.Error(), uid) {
			t.Errorf("err = %v, want ErrPodMismatch naming the real uid", err)
		}
	})
	t.Run("PodLabels API error is not a mismatch", func(t *testing.T) {
		// Anonymous: the API server answers 403, which must not read as a
		// forged identity (the driver maps it to Unavailable).
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		anon := rest.AnonymousClientConfig(cfg)
		ac, err := kube.NewForConfig(anon)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ac.PodLabels(ctxT(t), kubeNS, "payment-1", uid)
		if err == nil || errors.Is(err, kube.ErrPodMismatch) {
			t.Errorf("err = %v, want an error that is not ErrPodMismatch", err)
		}
	})
	t.Run("Recorder writes an Event", func(t *testing.T) {
		rec := kube.NewRecorder(c, "node-7")
		rec.Event(kubeNS, "payment-1", uid, corev1.EventTypeWarning, "VaultSecretsDenied", "denied by rule \"x\"")
		var events []corev1.Event
		deadline := time.Now().Add(10 * time.Second)
		for len(events) == 0 && time.Now().Before(deadline) {
			list, err := cs.CoreV1().Events(kubeNS).List(ctxT(t), metav1.ListOptions{FieldSelector: "involvedObject.name=payment-1"})
			if err != nil {
				t.Fatal(err)
			}
			events = list.Items
			time.Sleep(50 * time.Millisecond)
		}
		rec.Stop()
		if len(events) != 1 {
			t.Fatalf("%d events, want 1: %+v", len(events), events)
		}
		e := events[0]
		if e.Type != corev1.EventTypeWarning || e.Reason != "VaultSecretsDenied" || e.Message != "denied by rule \"x\"" ||
			string(e.InvolvedObject.UID) != uid || e.InvolvedObject.Kind != "Pod" ||
			e.Source.Component != "vault-csi-driver" || e.Source.Host != "node-7" {
			t.Errorf("event %+v", e)
		}
		var nilRec *kube.Recorder
		nilRec.Event(kubeNS, "payment-1", uid, "Normal", "X", "nil recorder is a no-op")
		nilRec.Stop()
	})
	t.Run("protobuf on the wire", func(t *testing.T) {
		// What the driver sends and reads on the publish path (an Event per
		// publish, the pod read of a policy with labels): protobuf, not JSON.
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var seen []string
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				resp, err := rt.RoundTrip(r)
				if err == nil {
					mu.Lock()
					seen = append(seen, r.Method+" sent "+r.Header.Get("Content-Type")+" got "+resp.Header.Get("Content-Type"))
					mu.Unlock()
				}
				return resp, err
			})
		}
		pc, err := kube.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.PodLabels(ctxT(t), kubeNS, "payment-1", uid); err != nil {
			t.Fatal(err)
		}
		rec := kube.NewRecorder(pc, "node-7")
		rec.Event(kubeNS, "payment-1", uid, corev1.EventTypeNormal, "VaultSecretsMounted", "protobuf")
		for i := 0; i < 200; i++ { // the broadcaster posts it in the background
			mu.Lock()
			n := len(seen)
			mu.Unlock()
			if n >= 2 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		rec.Stop()
		mu.Lock()
		defer mu.Unlock()
		const pb = "application/vnd.kubernetes.protobuf"
		want := []string{"GET sent  got " + pb, "POST sent " + pb + " got " + pb}
		if strings.Join(seen, "\n") != strings.Join(want, "\n") {
			t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
