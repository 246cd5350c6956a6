package attributes

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"vaultcsi.dev/driver/provider"
)

// claimsFor are the claims the API server puts into a pod's projected
// service-account token.
func claimsFor(p provider.Identity, aud string) map[string]any {
	return map[string]any{
		"iss": "https://kubernetes.default.svc.cluster.local",
		"sub": "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount,
		"aud": []string{aud},
		"kubernetes.io": map[string]any{
			"namespace":      p.Namespace,
			"pod":            map[string]any{"name": p.PodName, "uid": p.PodUID},
			"serviceaccount": map[string]any{"name": p.ServiceAccount, "uid": "5f0b2e8e-0d7c-4f3b-9a1e-4a5b6c7d8e9f"},
		},
	}
}

// jwtOf encodes claims as a JWT with a made-up signature: BindIdentity
// never checks signatures (Vault does).
func jwtOf(claims any, sig string) string {
	enc := base64.RawURLEncoding
	body, _ := json.Marshal(claims)
	return enc.EncodeToString([]byte(`{"alg":"RS256","kid":"k"}`)) + "." + enc.EncodeToString(body) + "." + sig
}

func podToken(p provider.Identity, aud, sig string) string {
	return jwtOf(claimsFor(p, aud), sig)
}

func TestBindIdentity(t *testing.T) {
	const sig = "SIGNATURE-MUST-NOT-LEAK"
	with := func(edit func(c map[string]any)) string {
		c := claimsFor(basePod, audience)
		edit(c)
		return jwtOf(c, sig)
	}
	k8s := func(c map[string]any) map[string]any { return c["kubernetes.io"].(map[string]any) }
	other := basePod
	other.PodName, other.PodUID = "admin-0", "9d6f3a52-1c1e-4c4e-8c2a-7e1b2c3d4e5f"

	tests := []struct {
		name   string
		token  string
		field  string // "" = accepted
		denied bool   // PermissionDenied (IdentityError) rather than InvalidArgument
	}{
		{"matching token", podToken(basePod, audience, sig), "", false},
		{"aud as a string", with(func(c map[string]any) { c["aud"] = audience }), "", false},
		{"aud among several", with(func(c map[string]any) { c["aud"] = []string{"api", audience} }), "", false},
		{"padded base64 payload", func() string {
			p := strings.Split(podToken(basePod, audience, sig), ".")
			for len(p[1])%4 != 0 {
				p[1] += "="
			}
			return strings.Join(p, ".")
		}(), "", false},

		// The volume context names another pod than the token.
		{"token of another pod", podToken(other, audience, sig), KeyPodName, true},
		{"other pod uid", with(func(c map[string]any) { k8s(c)["pod"].(map[string]any)["uid"] = other.PodUID }), KeyPodUID, true},
		{"other namespace", with(func(c map[string]any) { k8s(c)["namespace"] = "kube-system" }), KeyPodNamespace, true},
		{"other service account", with(func(c map[string]any) {
			k8s(c)["serviceaccount"].(map[string]any)["name"] = "admin"
		}), KeyServiceAccount, true},
		{"subject of another service account", with(func(c map[string]any) {
			c["sub"] = "system:serviceaccount:shop:admin"
		}), KeyServiceAccount, true},
		{"no subject", with(func(c map[string]any) { delete(c, "sub") }), KeyServiceAccount, true},
		{"wrong audience", podToken(basePod, "api", sig), KeyTokens, true},
		{"no audience", with(func(c map[string]any) { delete(c, "aud") }), KeyTokens, true},
		{"not bound to a pod (legacy token)", with(func(c map[string]any) { delete(k8s(c), "pod") }), KeyTokens, true},
		{"no kubernetes.io claims", with(func(c map[string]any) { delete(c, "kubernetes.io") }), KeyTokens, true},
		{"no serviceaccount claim", with(func(c map[string]any) { delete(k8s(c), "serviceaccount") }), KeyTokens, true},
		{"claim values differ only in case", with(func(c map[string]any) {
			k8s(c)["pod"].(map[string]any)["name"] = strings.ToUpper(basePod.PodName)
		}), KeyPodName, true},

		// Tokens that cannot be decoded.
		{"not a JWT", "opaque-" + sig, KeyTokens, false},
		{"two parts", "a." + sig, KeyTokens, false},
		{"four parts", "a.b.c." + sig, KeyTokens, false},
		{"payload not base64", "e30." + sig + "!.x", KeyTokens, false},
		{"payload not JSON", "e30." + base64.RawURLEncoding.EncodeToString([]byte(sig)) + ".x", KeyTokens, false},
		{"payload a JSON list", jwtOf([]string{sig}, sig), KeyTokens, false},
		{"aud a number", with(func(c map[string]any) { c["aud"] = 7 }), KeyTokens, false},
		{"claims of the wrong type", with(func(c map[string]any) { c["kubernetes.io"] = sig }), KeyTokens, false},
		{"huge token", strings.Repeat("A", maxTokenLen) + "." + sig + ".x", KeyTokens, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := BindIdentity(tt.token, basePod, audience)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("BindIdentity: %v", err)
				}
				return
			}
			var ie *IdentityError
			var fe *FieldError
			switch {
			case err == nil:
				t.Fatal("accepted")
			case tt.denied && errors.As(err, &ie):
				if ie.Field != tt.field {
					t.Errorf("Field = %q, want %q (%v)", ie.Field, tt.field, err)
				}
			case !tt.denied && errors.As(err, &fe):
				if fe.Field != tt.field {
					t.Errorf("Field = %q, want %q (%v)", fe.Field, tt.field, err)
				}
			default:
				t.Fatalf("error %T %v; want denied=%v", err, err, tt.denied)
			}
			if strings.Contains(err.Error(), sig) || strings.Contains(err.Error(), tt.token) {
				t.Errorf("error echoes the token: %v", err)
			}
			if len(err.Error()) > 400 || strings.ContainsAny(err.Error(), "\n\x00") {
				t.Errorf("error is not one short printable line: %q", err)
			}
		})
	}
}

// Parse binds the identity: a volume context naming another pod than the
// token is an IdentityError before anything else trusts it.
func TestParseBindsIdentity(t *testing.T) {
	ctx := baseContext()
	ctx[KeyPodName] = "admin-0"
	_, err := Parse(ctx, nil, audience)
	var ie *IdentityError
	if !errors.As(err, &ie) || ie.Field != KeyPodName {
		t.Fatalf("Parse = %v, want an IdentityError naming %s", err, KeyPodName)
	}
	for _, uid := range []string{"..", "uid-1", "0e8a1c3a8d7e4c619a511d3c4f6f2b10", "0e8a1c3a-8d7e-4c61-9a51-1d3c4f6f2b1g"} {
		ctx := baseContext()
		ctx[KeyPodUID] = uid
		var fe *FieldError
		if _, err := Parse(ctx, nil, audience); !errors.As(err, &fe) || fe.Field != KeyPodUID {
			t.Errorf("pod.uid %q: Parse = %v, want a FieldError naming %s", uid, err, KeyPodUID)
		}
	}
}

func TestIsUUID(t *testing.T) {
	for s, want := range map[string]bool{
		"0e8a1c3a-8d7e-4c61-9a51-1d3c4f6f2b10":  true,
		"0E8A1C3A-8D7E-4C61-9A51-1D3C4F6F2B10":  true,
		"00000000-0000-0000-0000-000000000000":  true,
		"":                                      false,
		"..":                                    false,
		"0e8a1c3a-8d7e-4c61-9a51-1d3c4f6f2b1":   false,
		"0e8a1c3a-8d7e-4c61-9a51-1d3c4f6f2b100": false,
		"0e8a1c3a_8d7e-4c61-9a51-1d3c4f6f2b10":  false,
		"0e8a1c3a-8d7e-4c61-9a51-1d3c4f6f2b1z":  false,
		"../../../../../../../../../../../etc":  false,
		"0e8a1c3a-8d7e-4c61-9a51-1d3c4f6f2b/0":  false,
	} {
		if got := IsUUID(s); got != want {
			t.Errorf("IsUUID(%q) = %v, want %v", s, got, want)
		}
	}
}

// FuzzBindIdentity: any header.payload either binds the base pod or fails
// with one of the two error types, never echoing the token: its signature
// part is a marker that must not show up.
func FuzzBindIdentity(f *testing.F) {
	const marker = "LEAK-MARKER-Zq9"
	f.Add(strings.TrimSuffix(podToken(basePod, audience, ""), "."))
	f.Add("a.b")
	f.Add(".")
	f.Add(strings.TrimSuffix(jwtOf(map[string]any{"aud": "vault", "kubernetes.io": map[string]any{"pod": nil}}, ""), "."))
	f.Add(strings.TrimSuffix(jwtOf(map[string]any{"aud": []any{1, "vault"}}, ""), "."))
	f.Add(strings.TrimSuffix(jwtOf(map[string]any{"aud": "vault", "sub": "x" + marker}, ""), "."))
	f.Fuzz(func(t *testing.T, headerPayload string) {
		// Claim values may be echoed, the signature never: skip inputs
		// whose payload itself carries the marker.
		for _, part := range append(strings.Split(headerPayload, "."), headerPayload) {
			b, _ := base64.RawURLEncoding.DecodeString(strings.TrimRight(part, "="))
			if strings.Contains(part, marker) || strings.Contains(string(b), marker) {
				return
			}
		}
		err := BindIdentity(headerPayload+"."+marker, basePod, audience)
		if err == nil {
			return
		}
		var ie *IdentityError
		var fe *FieldError
		if !errors.As(err, &ie) && !errors.As(err, &fe) {
			t.Fatalf("error %T: %v", err, err)
		}
		if strings.Contains(err.Error(), marker) {
			t.Fatalf("error echoes the token's signature: %v", err)
		}
		if len(err.Error()) > 1000 {
			t.Fatalf("error of %d bytes", len(err.Error()))
		}
	})
}
