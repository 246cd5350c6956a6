//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// 10: the release is upgraded to a new driver image while a pod runs (a
// DaemonSet rolling update): the pod's files stay, the new driver takes
// over the volume's state (rotation resumes with its token and leases), and
// deleting the pod afterwards still revokes the token the old driver made.
func (s *suite) testUpgrade(t *testing.T) {
	if s.cfg.upgradeImage == "" {
		need.Missing(t, "E2E_UPGRADE_IMAGE is not set (hack/e2e.sh builds and loads a second driver image)")
	}
	ns := s.appNS
	s.createPod(t, podSpec{name: "upgraded", ns: ns, sa: "upgrade", role: "upgrade", secrets: oneSecret("upgrade")})
	s.waitReady(t, ns, "upgraded", 2*time.Minute)
	s.waitContent(t, ns, "upgraded", "/secrets/value", "u1", 10*time.Second)
	before, err := tokensOf(s.vc, ns, "upgrade")
	if err != nil || len(before) != 1 {
		t.Fatalf("want the volume's one Vault token before the upgrade, got %v (%v)", before, err)
	}
	old, err := s.driverPods()
	if err != nil || len(old) == 0 {
		t.Fatalf("driver pods: %v (%v)", old, err)
	}

	start := time.Now()
	repo, tag := strings.Split(s.cfg.upgradeImage, ":")[0], tagOf(s.cfg.upgradeImage)
	if out, err := runHelm(t, []string{"KUBECONFIG=" + s.kubeconfig}, "upgrade", release, s.chart, "-n", releaseNS,
		"-f", s.valuesFile, "--set", "image.repository="+repo, "--set", "image.tag="+tag,
		"--wait", "--timeout", "3m"); err != nil {
		t.Fatalf("helm upgrade: %v\n%s\n%s", err, out, s.driverLogs())
	}
	// helm --wait returns once the DaemonSet reports its pods updated and
	// Ready; check that every driver pod is a new one on the new image.
	if err := s.waitDriversReplaced(old, s.cfg.upgradeImage); err != nil {
		t.Fatalf("the driver pods were not replaced by %s: %v\n%s", s.cfg.upgradeImage, err, s.driverLogs())
	}
	rolled := time.Since(start)
	if out, err := s.exec(ns, "upgraded", "cat /secrets/value"); err != nil || out != "u1" {
		t.Errorf("files after the upgrade: %q (%v), want u1", out, err)
	}

	// Rotation resumes under the new driver, on the volume's recorded token.
	if err := s.setup.putSecret(s.vc, "e2e/upgrade/x", map[string]any{"value": "u2"}); err != nil {
		t.Fatal(err)
	}
	took := s.waitContent(t, ns, "upgraded", "/secrets/value", "u2", 2*time.Minute)
	after, err := tokensOf(s.vc, ns, "upgrade")
	if err != nil || len(after) != 1 || after[0] != before[0] {
		t.Errorf("want the volume's token from before the upgrade (%v) still the only one, got %v (%v)", before, after, err)
	}

	// The new driver revokes what the old one made.
	s.deletePod(t, ns, "upgraded", time.Minute)
	if err := poll(30*time.Second, 250*time.Millisecond, func() (bool, error) {
		a, err := tokensOf(s.vc, ns, "upgrade")
		return err == nil && len(a) == 0, nil
	}); err != nil {
		t.Errorf("after the upgrade, deleting the pod did not revoke the token the old driver made")
	}
	s.record("10: helm upgrade to %s: driver pods replaced and Ready in %s; files kept; new value in the pod %s later on the same Vault token; deleting the pod revoked it",
		s.cfg.upgradeImage, rolled.Round(100*time.Millisecond), took.Round(100*time.Millisecond))
}

// waitDriversReplaced polls (bounded) until every driver pod of old has a
// successor that is Ready and, when image is set, runs that image.
func (s *suite) waitDriversReplaced(old []corev1.Pod, image string) error {
	return poll(2*time.Minute, 250*time.Millisecond, func() (bool, error) {
		pods, err := s.driverPods()
		if err != nil || len(pods) != len(old) {
			return false, nil
		}
		for _, p := range pods {
			if p.DeletionTimestamp != nil || !podReady(&p) || image != "" && p.Spec.Containers[0].Image != image {
				return false, nil
			}
			for _, o := range old {
				if o.UID == p.UID {
					return false, nil
				}
			}
		}
		return true, nil
	})
}
