package driver_test

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"vaultcsi.dev/driver/driver/kube/kubetest"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// kubeCluster is a control-plane-only Kubernetes (etcd + kube-apiserver,
// hack/cluster/up.sh --control-plane) in a state dir and on ports of its
// own, so that it can run beside a full cluster with the defaults. There is
// no kubelet and no controller-manager: Pods created here never run and
// namespaces get no default service account, which is all the driver needs
// (it only GETs pods and writes Events).
type kubeCluster struct {
	kubeconfig string
	cs         kubernetes.Interface
}

// TestAPIServer runs every driver test that needs a real API server against
// one control-plane cluster, so that it is started and stopped once.
func TestAPIServer(t *testing.T) {
	c := startKubeCluster(t)
	t.Run("policy pod labels", func(t *testing.T) { testPolicyPodLabels(t, c) })
	t.Run("events", func(t *testing.T) { testPodEvents(t, c) })
	t.Run("event rate limit", func(t *testing.T) { testEventRateLimit(t, c) })
	t.Run("reload signals", func(t *testing.T) { testReloadSignals(t, c) })
}

// startKubeCluster returns the control plane this run shares (make unit
// starts one) or one of this test's own: see kubetest.Start.
func startKubeCluster(t *testing.T) *kubeCluster {
	t.Helper()
	kc := kubetest.Start(t)
	return &kubeCluster{kubeconfig: kc.Kubeconfig, cs: kc.Clientset}
}

// createPod creates (if needed) the namespace and service account, then a
// Pod object, and returns the identity kubelet would send for it, with the
// UID the API server assigned.
func (c *kubeCluster) createPod(t *testing.T, namespace, name, serviceAccount string, labels map[string]string) vaulttest.Pod {
	t.Helper()
	ctx := ctxT(t)
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccount, Namespace: namespace}}
	if _, err := c.cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName:           serviceAccount,
			AutomountServiceAccountToken: &no,
			Containers:                   []corev1.Container{{Name: "app", Image: "busybox:1.35", Command: []string{"sleep", "3600"}}},
		},
	}
	got, err := c.cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", namespace, name, err)
	}
	return vaulttest.Pod{Namespace: namespace, PodName: name, PodUID: string(got.UID), ServiceAccount: serviceAccount}
}

// podEvents lists the Events whose involved object is the pod.
func (c *kubeCluster) podEvents(t *testing.T, p vaulttest.Pod) []corev1.Event {
	t.Helper()
	list, err := c.cs.CoreV1().Events(p.Namespace).List(ctxT(t), metav1.ListOptions{
		FieldSelector: fmt.Sprintf("involvedObject.kind=Pod,involvedObject.name=%s,involvedObject.uid=%s", p.PodName, p.PodUID),
	})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}
