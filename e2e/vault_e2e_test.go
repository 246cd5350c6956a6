//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// vaultProc is a Vault dev server this suite runs itself, on a fixed address
// so that it can be stopped and started again on the same port (dev mode keeps
// everything in memory: a restart is a new, empty Vault that configure() sets
// up the same way again).
type vaultProc struct {
	listen, addr, dir string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done <-chan struct{}
	logs bytes.Buffer
}

// telemetry lets the suite count Vault requests from Vault's own metrics.
const telemetryHCL = `telemetry {
  prometheus_retention_time = "2h"
  disable_hostname = true
}
`

func newVaultProc(listen string) (*vaultProc, error) {
	dir, err := os.MkdirTemp("", "vcsi-e2e-vault-")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "telemetry.hcl"), []byte(telemetryHCL), 0o600); err != nil {
		return nil, err
	}
	return &vaultProc{listen: listen, addr: "http://" + listen, dir: dir}, nil
}

// start runs the server and waits until it answers (bounded).
func (v *vaultProc) start() error {
	bin, err := vaulttest.Binary()
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd != nil {
		return fmt.Errorf("vault already running")
	}
	cmd := exec.Command(bin, "server", "-dev", "-dev-root-token-id="+vaulttest.RootToken,
		"-dev-listen-address="+v.listen, "-dev-no-store-token", "-log-level=warn",
		"-config="+filepath.Join(v.dir, "telemetry.hcl"))
	cmd.Env = append(os.Environ(), "VAULT_DISABLE_MLOCK=true", "HOME="+v.dir)
	cmd.Stdout = &lockedBuf{b: &v.logs, mu: &v.mu}
	cmd.Stderr = cmd.Stdout
	done, err := vaulttest.StartTied(cmd)
	if err != nil {
		return fmt.Errorf("run %s: %w", bin, err)
	}
	v.cmd, v.done = cmd, done
	c, err := rootClient(v.addr)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h, err := c.Sys().HealthWithContext(ctx)
		cancel()
		if err == nil && h.Initialized && !h.Sealed {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("vault exited: %s", v.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vault not ready after 20s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop kills the server and waits for it to exit (bounded).
func (v *vaultProc) stop() {
	v.mu.Lock()
	cmd, done := v.cmd, v.done
	v.cmd = nil
	v.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

func (v *vaultProc) cleanup() {
	v.stop()
	_ = os.RemoveAll(v.dir)
}

func (v *vaultProc) Logs() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.logs.String()
}

type lockedBuf struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

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
