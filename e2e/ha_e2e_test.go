//go:build e2e

package e2e

import (
	"testing"
	"time"

	"vaultcsi.dev/driver/provider/vaulttest"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// What scenario 13 names in Vault and in the cluster.
const (
	haRole   = "ha"
	haSecret = "e2e/ha/x"
	haFile   = "/secrets/value"
)

// 13: the release pointed (helm upgrade) at a 3-node Vault cluster with
// integrated storage over TLS, behind a TCP front on this host: the
// chart's vault.caBundle.pem becomes the driver's --vault-ca-cert. A pod
// starts, a Vault change reaches it, then the active node is killed
// (kill -9): the pod's file stays and is never empty, the driver pod does
// not restart, and the next change reaches the pod once a new leader is
// elected. Deleting the pod revokes its token on the cluster. The release
// is upgraded back to the suite's values afterwards.
func (s *suite) testHAVault(t *testing.T) {
	s.requireLocalCluster(t, "the HA cluster runs on this host's 127.0.0.1 over TLS; kind pods cannot reach it")
	if !s.cfg.hostNetwork || !s.cfg.nodeLocal {
		need.Missing(t, "the HA cluster listens on this host's loopback: needs E2E_HOST_NETWORK=true and E2E_NODE_LOCAL=1")
	}
	start := time.Now()
	c, err := vaulttest.RunCluster()
	if err != nil {
		t.Fatalf("start the HA Vault cluster: %v", err)
	}
	t.Cleanup(c.Stop)
	ns := s.appNS
	if err := ensureNamespace(s.kc, ns, haRole); err != nil {
		t.Fatal(err)
	}
	setup := &vaultSetup{
		k8sHost: s.setup.k8sHost, k8sCA: s.setup.k8sCA, reviewerJWT: s.setup.reviewerJWT, audience: s.setup.audience,
		roles:   map[string][2]string{haRole: {ns, haRole}},
		secrets: map[string]map[string]any{haSecret: {"value": "h1"}},
	}
	if err := setup.apply(c.API.Root); err != nil {
		t.Fatalf("configure the HA cluster: %v", err)
	}

	// Point the release at the cluster, with its CA; back at the end (LIFO:
	// before the cluster stops).
	helmEnv := []string{"KUBECONFIG=" + s.kubeconfig}
	upgrade := func(extra ...string) {
		t.Helper()
		old, err := s.driverPods()
		if err != nil || len(old) == 0 {
			t.Fatalf("driver pods: %v (%v)", old, err)
		}
		args := append([]string{"upgrade", release, s.chart, "-n", releaseNS, "-f", s.valuesFile}, extra...)
		if out, err := runHelm(t, helmEnv, append(args, "--wait", "--timeout", "3m")...); err != nil {
			t.Fatalf("helm upgrade: %v\n%s\n%s", err, out, s.driverLogs())
		}
		if err := s.waitDriversReplaced(old, ""); err != nil {
			t.Fatalf("driver pods not replaced: %v\n%s", err, s.driverLogs())
		}
	}
	upgrade("--set", "vault.address="+c.Addr, "--set-file", "vault.caBundle.pem="+c.CA.File)
	t.Cleanup(func() { upgrade() })
	pointed := time.Since(start)

	s.createPod(t, podSpec{name: "ha", ns: ns, sa: haRole, role: haRole, secrets: oneSecret(haRole)})
	s.waitReady(t, ns, "ha", 2*time.Minute)
	s.waitContent(t, ns, "ha", haFile, "h1", 10*time.Second)
	if err := setup.putSecret(c.API.Root, haSecret, map[string]any{"value": "h2"}); err != nil {
		t.Fatal(err)
	}
	rotated := s.waitContent(t, ns, "ha", haFile, "h2", 90*time.Second)
	restartsBefore := s.driverRestarts(t)

	leader, err := c.WaitActive(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	c.Kill(leader)
	// While the cluster elects: the file stays, with its last value.
	var reads int
	next, err := c.WaitActive(30 * time.Second)
	if err != nil {
		t.Fatalf("no new leader after killing %s: %v", leader.ID, err)
	}
	elected := time.Since(killed)
	for until := time.Now().Add(5 * time.Second); time.Now().Before(until); reads++ {
		if out, err := s.exec(ns, "ha", "cat "+haFile); err != nil || out != "h2" {
			t.Fatalf("%s after the leader kill: %q (%v), want h2", haFile, out, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The next change reaches the pod: rotation resumes on the new leader.
	if err := poll(30*time.Second, 250*time.Millisecond, func() (bool, error) {
		return setup.putSecret(c.API.Root, haSecret, map[string]any{"value": "h3"}) == nil, nil
	}); err != nil {
		t.Fatalf("write to the cluster after the election: %v", err)
	}
	resumed := s.waitContent(t, ns, "ha", haFile, "h3", 90*time.Second)
	if after := s.driverRestarts(t); after != restartsBefore {
		t.Errorf("driver container restarts %d -> %d across the leader kill", restartsBefore, after)
	}

	s.deletePod(t, ns, "ha", time.Minute)
	if err := poll(30*time.Second, 250*time.Millisecond, func() (bool, error) {
		a, err := tokensOf(c.API.Root, ns, haRole)
		return err == nil && len(a) == 0, nil
	}); err != nil {
		t.Errorf("deleting the pod did not revoke its token on the HA cluster")
	}
	s.record("13: 3-node TLS Raft cluster up in %s (%s total to the release pointed at it with its CA bundle); change in the pod after %s; leader %s killed, %s elected after %s, the file read %d times unchanged; next change in the pod %s later; deleting the pod revoked its token",
		c.StartupTime.Round(100*time.Millisecond), pointed.Round(100*time.Millisecond), rotated.Round(100*time.Millisecond),
		leader.ID, next.ID, elected.Round(100*time.Millisecond), reads, resumed.Round(100*time.Millisecond))
}

// driverRestarts sums the restart counts of the driver pods' containers.
func (s *suite) driverRestarts(t *testing.T) int32 {
	t.Helper()
	pods, err := s.driverPods()
	if err != nil {
		t.Fatal(err)
	}
	var n int32
	for _, p := range pods {
		for _, st := range p.Status.ContainerStatuses {
			n += st.RestartCount
		}
	}
	return n
}
