package driver_test

// Issue 9 item 10: the access policy sees vaultNamespace and authMount.

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver/csitest"
	"vaultcsi.dev/driver/provider/vaulttest"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// Item 10. With a policy loaded, a pod's vaultNamespace or authMount
// override is PermissionDenied (before any Vault call) unless an allow
// rule lists it; a listed override logs in through that mount.
func TestPolicyOverrides(t *testing.T) {
	need.Long(t, "configures a second jwt mount on the real Vault")
	v := vaultSrv
	const altMount = "jwt-alt"
	key, err := vaulttest.EnableJWTAuth(v.Root, altMount)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Root.Sys().DisableAuth(altMount) })
	altPod := vaulttest.Pod{Namespace: "shop", PodName: "payment-alt", PodUID: "7a1e1f0c-3c3e-4f4e-9a57-2b1b7a0e00a1", ServiceAccount: "payment"}
	if _, err := v.Root.Logical().Write("auth/"+altMount+"/role/payments",
		vaulttest.RoleBody("vault", altPod.Namespace, altPod.ServiceAccount, "payments")); err != nil {
		t.Fatal(err)
	}
	d := startObservedDriver(t, v, "--policy-file="+writePolicyFile(t, `
rules:
  - name: shop
    effect: allow
    namespaces: ["shop"]
    paths: ["secret/data/*"]
  - name: shop-alt-login
    effect: allow
    namespaces: ["shop"]
    podNames: ["payment-alt"]
    authMounts: ["jwt-alt"]
    paths: ["secret/data/*"]
`))
	const oneSecret = "- file: p\n  path: secret/data/db\n  key: password\n"
	publish := func(pod vaulttest.Pod, jwt string, extra map[string]string) (string, error) {
		target := newTarget(t)
		req := csitest.Publish{VolumeID: "csi-" + pod.PodUID, Target: target, Pod: pod,
			Attributes: map[string]string{"role": "payments", "secrets": oneSecret},
			Tokens:     vaulttest.TokensJSON("vault", jwt, time.Now().Add(time.Hour))}.Request()
		for k, val := range extra {
			req.VolumeContext[k] = val
		}
		_, err := d.node.NodePublishVolume(ctxT(t), req)
		return target, err
	}
	for _, tt := range []struct {
		name  string
		pod   vaulttest.Pod
		extra map[string]string
		want  string
	}{
		{"authMount not listed by any rule", shopPod, map[string]string{"authMount": altMount}, `authMount "jwt-alt"`},
		{"authMount listed, but for another pod", altPod, map[string]string{"authMount": "jwt"}, `authMount "jwt"`},
		{"vaultNamespace not listed by any rule", shopPod, map[string]string{"vaultNamespace": "team-b"}, `vaultNamespace "team-b"`},
		{"vaultNamespace for the pod allowed an authMount", altPod, map[string]string{"authMount": altMount, "vaultNamespace": "team-b"}, `vaultNamespace "team-b"`},
	} {
		t.Run("denied: "+tt.name, func(t *testing.T) {
			r0 := d.scrape(t).vaultRequests()
			target, err := publish(tt.pod, v.Token(tt.pod, time.Hour), tt.extra)
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), tt.want) {
				t.Fatalf("%v, want PermissionDenied naming %s", err, tt.want)
			}
			if got := d.scrape(t).vaultRequests() - r0; got != 0 {
				t.Errorf("a denied override sent %v requests to Vault", got)
			}
			assertNothingMounted(t, target)
		})
	}
	t.Run("allowed: listed authMount logs in there", func(t *testing.T) {
		target, err := publish(altPod, vaulttest.MintToken(key, altPod, "vault", time.Hour), map[string]string{"authMount": altMount})
		if err != nil {
			t.Fatal(err)
		}
		if got := read(t, filepath.Join(target, "p")); got != dbPassword {
			t.Errorf("p = %q", got)
		}
		unpublish(t, d.driverProc, target)
	})
	t.Run("allowed: no override", func(t *testing.T) {
		target, err := publish(shopPod, v.Token(shopPod, time.Hour), nil)
		if err != nil {
			t.Fatal(err)
		}
		unpublish(t, d.driverProc, target)
	})
}
