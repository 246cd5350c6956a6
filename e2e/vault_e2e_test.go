//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// telemetry lets the suite count Vault requests from Vault's own metrics.
const telemetryHCL = `telemetry {
  prometheus_retention_time = "2h"
  disable_hostname = true
}
`

func rootClient(addr string) (*vault.Client, error) {
	cfg := vault.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0
	cfg.Timeout = 10 * time.Second
	c, err := vault.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	tok := os.Getenv("VAULT_TOKEN")
	if tok == "" {
		tok = vaulttest.RootToken
	}
	c.SetToken(tok)
	return c, nil
}

// vaultSetup is what the suite configures in Vault, again after a restart.
type vaultSetup struct {
	k8sHost, k8sCA, reviewerJWT, audience string
	// roles: role name -> namespace, service account (policy of the same name
	// reads secret/data/e2e/<role>/*, except roles listed in noPolicy).
	roles    map[string][2]string
	noPolicy map[string]bool
	// secrets: KV v2 name under secret/ -> data.
	secrets map[string]map[string]any
	mu      sync.Mutex
}

func (s *vaultSetup) apply(c *vault.Client) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	auths, err := c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("list auth: %w", err)
	}
	if _, ok := auths["kubernetes/"]; !ok {
		if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, "kubernetes", &vault.EnableAuthOptions{Type: "kubernetes"}); err != nil {
			return fmt.Errorf("enable kubernetes auth: %w", err)
		}
	}
	// Vault reviews each pod token with a TokenReview made with the reviewer's
	// token: a pod token (audience "vault") cannot authenticate to the API
	// server itself, so "use the client's JWT as reviewer" gets a 401.
	if _, err := c.Logical().WriteWithContext(ctx, "auth/kubernetes/config", map[string]any{
		"kubernetes_host":      s.k8sHost,
		"kubernetes_ca_cert":   s.k8sCA,
		"token_reviewer_jwt":   s.reviewerJWT,
		"disable_local_ca_jwt": true,
	}); err != nil {
		return fmt.Errorf("configure kubernetes auth: %w", err)
	}
	for role, who := range s.roles {
		if !s.noPolicy[role] {
			if err := c.Sys().PutPolicyWithContext(ctx, role, fmt.Sprintf("path %q { capabilities = [\"read\"] }\n", "secret/data/e2e/"+role+"/*")); err != nil {
				return fmt.Errorf("policy %s: %w", role, err)
			}
		}
		if _, err := c.Logical().WriteWithContext(ctx, "auth/kubernetes/role/"+role, map[string]any{
			"bound_service_account_names":      []string{who[1]},
			"bound_service_account_namespaces": []string{who[0]},
			"audience":                         s.audience,
			"token_policies":                   []string{role},
			"token_ttl":                        "1h",
		}); err != nil {
			return fmt.Errorf("role %s: %w", role, err)
		}
	}
	for name, data := range s.secrets {
		if _, err := c.KVv2("secret").Put(ctx, name, data); err != nil {
			return fmt.Errorf("put secret/%s: %w", name, err)
		}
	}
	return nil
}

// putSecret writes a secret now and remembers it for a restart.
func (s *vaultSetup) putSecret(c *vault.Client, name string, data map[string]any) error {
	s.mu.Lock()
	s.secrets[name] = data
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.KVv2("secret").Put(ctx, name, data)
	return err
}

// vaultMetrics reads Vault's Prometheus metrics: name -> value for the
// counters the suite reports (the *_count of each timer).
func vaultMetrics(addr, token string) (map[string]float64, error) {
	req, err := http.NewRequest("GET", addr+"/v1/sys/metrics?format=prometheus", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Vault-Token", token)
	cl := &http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("sys/metrics: %s: %s", resp.Status, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || !strings.HasSuffix(name, "_count") || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}

// tokensOf lists the accessors of Vault tokens issued by kubernetes auth to
// one service account.
func tokensOf(c *vault.Client, namespace, sa string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sec, err := c.Logical().ListWithContext(ctx, "auth/token/accessors")
	if err != nil {
		return nil, err
	}
	if sec == nil || sec.Data == nil {
		return nil, nil
	}
	keys, _ := sec.Data["keys"].([]any)
	var out []string
	for _, k := range keys {
		acc, _ := k.(string)
		info, err := c.Auth().Token().LookupAccessorWithContext(ctx, acc)
		if err != nil || info == nil {
			continue // revoked meanwhile
		}
		meta, _ := info.Data["meta"].(map[string]any)
		if meta["service_account_name"] == sa && meta["service_account_namespace"] == namespace {
			out = append(out, acc)
		}
	}
	return out, nil
}
