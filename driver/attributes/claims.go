package attributes

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"vaultcsi.dev/driver/provider"
)

// maxTokenLen bounds the service-account token the driver will decode.
// Kubernetes tokens are about 1 KiB; the bound keeps decoding cheap for
// any input.
const maxTokenLen = 16 << 10

// IdentityError is a volume context whose pod identity is not the one the
// service-account token was issued to (or a token bound to no pod). It is a
// PermissionDenied, not a malformed request: the request is well formed
// but claims to be someone it cannot prove to be. The message names the
// volume-context key and the two values, never the token.
type IdentityError struct {
	Field string
	Msg   string
}

func (e *IdentityError) Error() string { return e.Field + ": " + e.Msg }

func identityErr(field, format string, args ...any) error {
	return &IdentityError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// tokenClaims are the claims of a projected service-account token that
// name who it was issued to (kubernetes.io claims exist since 1.21).
type tokenClaims struct {
	Aud        audiences `json:"aud"`
	Sub        string    `json:"sub"`
	Kubernetes *struct {
		Namespace string `json:"namespace"`
		Pod       *struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
		ServiceAccount *struct {
			Name string `json:"name"`
		} `json:"serviceaccount"`
	} `json:"kubernetes.io"`
}

// audiences is the JWT aud claim: a string or a list of strings (RFC 7519).
type audiences []string

func (a *audiences) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audiences{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("aud is neither a string nor a list of strings")
	}
	*a = many
	return nil
}

// BindIdentity checks that the service-account token was issued for the
// pod the volume context names (namespace, service account, pod name and
// uid) and for the driver's audience. The volume context's pod keys are
// only kubelet's word when the CSIDriver has podInfoOnMount: without it a
// pod's own volumeAttributes pass through verbatim, and the access policy
// would trust whatever the pod wrote. The token is the API server's word,
// and Vault verifies its signature at login, so the two together bind the
// identity. The signature is not checked here.
//
// A token that cannot be decoded is a *FieldError (InvalidArgument); a
// token for someone else, or bound to no pod, is an *IdentityError
// (PermissionDenied). No error contains the token or a part of it.
func BindIdentity(jwt string, pod provider.Identity, audience string) error {
	c, err := decodeClaims(jwt)
	if err != nil {
		return fieldErr(KeyTokens, "the %q token is not a service-account JWT: %v", audience, err)
	}
	if !slices.Contains(c.Aud, audience) {
		return identityErr(KeyTokens, "the token's audience %s does not include %q", quoteList(c.Aud), audience)
	}
	k := c.Kubernetes
	if k == nil || k.Pod == nil || k.ServiceAccount == nil {
		return identityErr(KeyTokens, "the token is not bound to a pod (no kubernetes.io pod claim): kubelet must request it through the CSIDriver's tokenRequests")
	}
	for _, f := range []struct{ field, claim, got, want string }{
		{KeyPodNamespace, "namespace", k.Namespace, pod.Namespace},
		{KeyServiceAccount, "serviceaccount.name", k.ServiceAccount.Name, pod.ServiceAccount},
		{KeyPodName, "pod.name", k.Pod.Name, pod.PodName},
		{KeyPodUID, "pod.uid", k.Pod.UID, pod.PodUID},
	} {
		if f.got != f.want {
			return identityErr(f.field, "%q is not the service-account token's kubernetes.io %s %q", printable(f.want), f.claim, printable(f.got))
		}
	}
	// The API server derives sub from the same identity; a token whose sub
	// disagrees was not issued by it for this service account.
	if want := "system:serviceaccount:" + pod.Namespace + ":" + pod.ServiceAccount; c.Sub != want {
		return identityErr(KeyServiceAccount, "the service-account token's subject %q is not %q", printable(c.Sub), printable(want))
	}
	return nil
}

// decodeClaims decodes a JWT's payload. Errors describe the shape only.
func decodeClaims(jwt string) (*tokenClaims, error) {
	if len(jwt) > maxTokenLen {
		return nil, fmt.Errorf("longer than %d bytes", maxTokenLen)
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%d dot-separated parts, want 3", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, fmt.Errorf("payload is not base64url")
	}
	var c tokenClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("payload is not a JSON object of claims")
	}
	return &c, nil
}

// IsUUID reports whether s is a UUID in its canonical 8-4-4-4-12 hex form,
// as the API server writes pod UIDs. The uid is a component of the target
// path, so anything else (such as "..") must never reach a path.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
				return false
			}
		}
	}
	return true
}

// quoteList renders an aud claim for a message: at most four entries, so
// a crafted token cannot make a long error line.
func quoteList(l []string) string {
	const most = 4
	q := make([]string, 0, most+1)
	for i, s := range l {
		if i == most {
			q = append(q, "...")
			break
		}
		q = append(q, fmt.Sprintf("%q", printable(s)))
	}
	return "[" + strings.Join(q, ", ") + "]"
}
