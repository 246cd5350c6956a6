package kube_test

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"vaultcsi.dev/driver/driver/kube"
	"vaultcsi.dev/driver/driver/kube/kubetest"
)

// BenchmarkRecorderEvent is the CPU this process spends per Event on a pod
// (one per cold publish), from the call to the API server's answer: the
// broadcaster posts in the background, so it reads the process's CPU time
// (cpu-us/event) rather than the loop's wall time.
func BenchmarkRecorderEvent(b *testing.B) {
	kc := kubetest.Start(b)
	ns := "kube-bench"
	ctx := context.Background()
	_, _ = kc.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	cfg, err := clientcmd.BuildConfigFromFlags("", kc.Kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	var posted atomic.Int64
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err == nil && r.Method == http.MethodPost {
				posted.Add(1)
			}
			return resp, err
		})
	}
	c, err := kube.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	rec := kube.NewRecorder(c, "bench-node")
	defer rec.Stop()
	wait := func(n int64) {
		for i := 0; i < 2000 && posted.Load() < n; i++ {
			time.Sleep(5 * time.Millisecond)
		}
		if posted.Load() < n {
			b.Fatalf("%d of %d events posted", posted.Load(), n)
		}
	}
	// Warm the connection and the broadcaster.
	rec.Event(ns, "warm", "00000000-0000-4000-8000-000000000000", corev1.EventTypeNormal, "VaultSecretsMounted", "warm")
	wait(1)
	base := posted.Load()
	b.ResetTimer()
	before := cpuTime()
	for i := 0; i < b.N; i++ {
		rec.Event(ns, fmt.Sprintf("pod-%d-%d", b.N, i), fmt.Sprintf("00000000-0000-4000-8000-%012d", i), corev1.EventTypeNormal,
			"VaultSecretsMounted", "mounted 3 secrets from Vault (role shop, 3 paths)")
		if i%8 == 7 {
			wait(base + int64(i+1)) // pace like publishes: no pile-up in the broadcaster's queue
		}
	}
	wait(base + int64(b.N))
	b.ReportMetric(float64((cpuTime()-before).Microseconds())/float64(b.N), "cpu-us/event")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
