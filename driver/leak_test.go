package driver_test

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver/attributes"
)

// At the highest verbosity, neither the pod's service-account token nor
// any secret value nor the Vault token reaches the driver's log, whether
// the token travels in the volume context or in the request's Secrets, and
// whether the call succeeds or fails (CVE-2023-2878 is this class).
func TestNoSecretInLogs(t *testing.T) {
	d := startDriver(t, "-v=10")
	var jwts []string
	for _, inSecrets := range []bool{false, true} {
		target := newTarget(t)
		v := volume{target: target, pod: shopPod, secrets: threeSecrets, inSecrets: inSecrets}
		req := v.request()
		jwts = append(jwts, jwtOf(t, req))
		if _, err := d.node.NodePublishVolume(ctxT(t), req); err != nil {
			t.Fatal(err)
		}
		// A republish (fresh token) and a failing publish go through the logs too.
		req2 := v.request()
		jwts = append(jwts, jwtOf(t, req2))
		if _, err := d.node.NodePublishVolume(ctxT(t), req2); err != nil {
			t.Fatal(err)
		}
		bad := volume{target: newTarget(t), pod: shopPod, secrets: "- file: f\n  path: secret/data/other\n  key: x\n", inSecrets: inSecrets}.request()
		jwts = append(jwts, jwtOf(t, bad))
		if _, err := d.node.NodePublishVolume(ctxT(t), bad); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("want PermissionDenied, got %v", err)
		}
		if _, err := d.node.NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: target}); err != nil {
			t.Fatal(err)
		}
	}
	// Stop the driver and wait for it to exit: its output pipe is then
	// drained to the last line, so the scan below sees everything it logged.
	d.stop(syscall.SIGTERM)
	logs := d.logs.String()
	if !strings.Contains(logs, "NodePublishVolume") || !strings.Contains(logs, "redacted") {
		t.Fatalf("the log does not show redacted publish requests at -v=10; the test would prove nothing:\n%s", logs)
	}
	secrets := map[string]string{"db password": dbPassword, "paypal token": paypalToken, "kv1 key": kv1APIKey, "forbidden value": otherValue}
	for i, j := range jwts {
		secrets["service-account token "+string(rune('a'+i))] = j
		// A JWT's signature alone is enough to be a leak.
		secrets["token signature "+string(rune('a'+i))] = j[strings.LastIndex(j, ".")+1:]
	}
	for what, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the driver log contains the %s", what)
		}
	}
	// Vault tokens the driver holds are in its state dir only: tmpfs, root-only.
	info, err := os.Stat(d.stateDir)
	if err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v (%v), want 0700", info.Mode().Perm(), err)
	}
	if strings.Contains(logs, "hvs.") {
		t.Error("the driver log contains a Vault token (hvs.)")
	}
}

func jwtOf(t *testing.T, r *csi.NodePublishVolumeRequest) string {
	t.Helper()
	raw := r.Secrets[attributes.KeyTokens]
	if raw == "" {
		raw = r.VolumeContext[attributes.KeyTokens]
	}
	i := strings.Index(raw, `"token":"`)
	if i < 0 {
		t.Fatal("no token in request")
	}
	rest := raw[i+len(`"token":"`):]
	return rest[:strings.IndexByte(rest, '"')]
}
