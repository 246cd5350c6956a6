package driver_test

import (
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/provider/vaulttest"
)

// Only the payment pods may read paypal; anyone in shop may read db.
const bindingPolicy = `
rules:
  - name: paypal-payment-only
    effect: allow
    namespaces: ["shop"]
    podNames: ["payment-*"]
    paths: ["secret/data/paypal"]
  - name: paypal-nobody-else
    effect: deny
    paths: ["secret/data/paypal"]
  - name: shop-db
    effect: allow
    namespaces: ["shop"]
    paths: ["secret/data/db"]
`

// A CSIDriver installed without podInfoOnMount lets a pod's own
// volumeAttributes carry the csi.storage.k8s.io/pod.* keys verbatim. A pod
// that names another pod there gets PermissionDenied naming the key before
// any Vault call: the token (the API server's word) decides who it is.
func TestIdentityBoundToToken(t *testing.T) {
	d := startObservedDriver(t, vaultSrv, "--policy-file="+writePolicyFile(t, bindingPolicy))
	// Same namespace and service account as shopPod, so Vault's role would
	// let it log in: only the access policy (by pod name) keeps it out.
	attacker := vaulttest.Pod{Namespace: "shop", PodName: "attacker-1", PodUID: vaulttest.PodUID("shop/attacker-1"), ServiceAccount: "payment"}
	tokens := func(p vaulttest.Pod, aud string) string {
		return vaulttest.TokensJSON("vault", vaultSrv.TokenFor(p, aud, time.Hour), time.Now().Add(time.Hour))
	}

	// The attacker's honest request is refused by the policy: the baseline.
	target := newTarget(t)
	_, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: attacker, secrets: paypalOnly}.request())
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "paypal-nobody-else") {
		t.Fatalf("honest request: %v, want PermissionDenied by paypal-nobody-else", err)
	}

	otherNS := shopPod
	otherNS.Namespace = "elsewhere"
	otherSA := shopPod
	otherSA.ServiceAccount = "admin"
	for _, tt := range []struct {
		name      string
		claimed   vaulttest.Pod // what the volume context says
		token     string        // whose token kubelet sent
		inSecrets bool
		field     string
	}{
		{"pod name of another pod", shopPod, tokens(attacker, "vault"), false, attributes.KeyPodName},
		{"token in request secrets (1.35+)", shopPod, tokens(attacker, "vault"), true, attributes.KeyPodName},
		{"pod uid of another pod", func() vaulttest.Pod { p := attacker; p.PodUID = shopPod.PodUID; return p }(), tokens(attacker, "vault"), false, attributes.KeyPodUID},
		{"namespace", otherNS, tokens(shopPod, "vault"), false, attributes.KeyPodNamespace},
		{"service account", otherSA, tokens(shopPod, "vault"), false, attributes.KeyServiceAccount},
		{"token for another audience", shopPod, tokens(shopPod, "api"), false, attributes.KeyTokens},
	} {
		t.Run(tt.name, func(t *testing.T) {
			target := newTarget(t)
			req := volume{target: target, pod: tt.claimed, secrets: paypalOnly}.request()
			delete(req.VolumeContext, attributes.KeyTokens)
			if tt.inSecrets {
				req.Secrets = map[string]string{attributes.KeyTokens: tt.token}
			} else {
				req.VolumeContext[attributes.KeyTokens] = tt.token
			}
			before := d.scrape(t).vaultRequests()
			_, err := d.node.NodePublishVolume(ctxT(t), req)
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("err = %v, want PermissionDenied naming %s", err, tt.field)
			}
			if after := d.scrape(t).vaultRequests(); after != before {
				t.Errorf("%v Vault requests for a spoofed identity", after-before)
			}
			jwt := tt.token[strings.Index(tt.token, `"token":"`)+9:]
			jwt = jwt[:strings.IndexByte(jwt, '"')]
			if strings.Contains(err.Error(), jwt[strings.LastIndexByte(jwt, '.')+1:]) {
				t.Errorf("error echoes the token: %v", err)
			}
			assertNothingMounted(t, target)
		})
	}

	// The real payment pod still reads it.
	target = newTarget(t)
	if _, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: shopPod, secrets: paypalOnly}.request()); err != nil {
		t.Fatalf("payment pod: %v", err)
	}
	unpublish(t, d.driverProc, target)
}

// A pod uid that is not a UUID never reaches a path or Vault.
func TestPodUIDMustBeUUID(t *testing.T) {
	d := startDriver(t)
	for _, uid := range []string{"..", "uid-1", "../../etc"} {
		p := shopPod
		p.PodUID = uid
		target := newTarget(t)
		_, err := d.node.NodePublishVolume(ctxT(t), volume{target: target, pod: p, secrets: threeSecrets}.request())
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), attributes.KeyPodUID) {
			t.Errorf("uid %q: %v, want InvalidArgument naming %s", uid, err, attributes.KeyPodUID)
		}
		assertNothingMounted(t, target)
	}
}

// A re-publish is bound as the first publish was: the driver remembers the
// last accepted request per target (parse cache), and any change to it is
// parsed and bound again. kubelet's periodic call at a mounted target with
// another pod's token is refused, and the volume's own call still works.
func TestRepublishRebindsIdentity(t *testing.T) {
	d := startDriver(t)
	attacker := vaulttest.Pod{Namespace: "shop", PodName: "attacker-1", PodUID: vaulttest.PodUID("shop/attacker-1"), ServiceAccount: "payment"}
	target := newTarget(t)
	req := volume{target: target, pod: shopPod, secrets: threeSecrets, inSecrets: true}.request()
	if _, err := d.node.NodePublishVolume(ctxT(t), req); err != nil {
		t.Fatal(err)
	}
	defer unpublish(t, d, target)
	if _, err := d.node.NodePublishVolume(ctxT(t), req); err != nil {
		t.Fatalf("re-publish: %v", err)
	}
	spoof := proto.Clone(req).(*csi.NodePublishVolumeRequest)
	spoof.Secrets = map[string]string{attributes.KeyTokens: vaulttest.TokensJSON("vault", vaultSrv.Token(attacker, time.Hour), time.Now().Add(time.Hour))}
	if _, err := d.node.NodePublishVolume(ctxT(t), spoof); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), attributes.KeyPodName) {
		t.Fatalf("re-publish with another pod's token: %v, want PermissionDenied naming %s", err, attributes.KeyPodName)
	}
	if _, err := d.node.NodePublishVolume(ctxT(t), req); err != nil {
		t.Fatalf("re-publish after the refused one: %v", err)
	}
}
