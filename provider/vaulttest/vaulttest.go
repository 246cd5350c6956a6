// Package vaulttest runs a real Vault dev server on 127.0.0.1 for tests and
// configures it the way a cluster admin would: jwt auth that trusts a key the
// test holds (tokens shaped like Kubernetes service-account tokens), KV v2 at
// secret/ and KV v1 at kv/.
//
// The binary comes from hack/vault (built once by hack/build-tool.sh and
// cached under .cache/tools), or from $VAULT_BIN. A missing binary fails the
// test rather than skipping it: these tests are the point.
package vaulttest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"vaultcsi.dev/driver/provider"
	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// RootToken is the dev server's root token.
const RootToken = "root"

// Server is a running Vault dev server.
type Server struct {
	Addr string
	// Root is a client authenticated with the root token.
	Root *vault.Client
	// JWTMount is where jwt auth is enabled ("jwt").
	JWTMount string

	listen, config string
	key            *rsa.PrivateKey
	cmd            *exec.Cmd
	done           <-chan struct{}
	logs           *bytes.Buffer
	mu             sync.Mutex
}

// Binary returns the Vault binary's path.
func Binary() (string, error) {
	if p := os.Getenv("VAULT_BIN"); p != "" {
		return p, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, ".cache", "tools", "vault")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no Vault binary at %s: run `bash hack/build-tool.sh hack/vault vault` (or `make test`, which does)", p)
	}
	return p, nil
}

// ModuleRoot is the driver module's root, found above the working
// directory (a package's tests run in its own folder).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for i := 0; i < 20; i++ {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if b, _ := os.ReadFile(filepath.Join(dir, "go.mod")); bytes.HasPrefix(b, []byte("module vaultcsi.dev/driver\n")) {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", fmt.Errorf("driver module root not found above the working directory")
}

// FreeAddr returns a free 127.0.0.1 port.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Start runs a configured dev server for the test and stops it at cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	need.Long(t, "starts a real Vault server")
	s, err := Run()
	if err != nil {
		t.Fatalf("start vault: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Options change how RunWith starts the server.
type Options struct {
	// Listen is the host:port to serve on; empty picks a free 127.0.0.1
	// port. A fixed address lets a test Stop Vault and Start it again there.
	Listen string
	// Config is extra server configuration in HCL (telemetry, say).
	Config string
}

// Run starts a configured dev server; the caller must Stop it.
func Run() (*Server, error) { return RunWith(Options{}) }

// RunWith is Run with options.
func RunWith(o Options) (*Server, error) {
	listen := o.Listen
	if listen == "" {
		var err error
		if listen, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	s := &Server{Addr: "http://" + listen, JWTMount: "jwt", logs: &bytes.Buffer{}, listen: listen, config: o.Config}
	cfg := vault.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	var err error
	if s.Root, err = vault.NewClient(cfg); err != nil {
		return nil, err
	}
	s.Root.SetToken(RootToken)
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Start runs the server (again, after Stop) at its address and configures
// it. A dev server keeps nothing: it comes back empty, with a new jwt key.
func (s *Server) Start() error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	args := []string{"server", "-dev", "-dev-root-token-id=" + RootToken,
		"-dev-listen-address=" + s.listen, "-dev-no-store-token", "-log-level=warn"}
	if s.config != "" {
		// Vault reads -config once at start: the file can go once it answers.
		f, err := os.CreateTemp("", "vaulttest-*.hcl")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		_, err = f.WriteString(s.config)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		args = append(args, "-config="+f.Name())
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "VAULT_DISABLE_MLOCK=true", "HOME="+os.TempDir())
	cmd.Stdout = &lockedWriter{w: s.logs, mu: &s.mu}
	cmd.Stderr = cmd.Stdout
	done, err := StartTied(cmd)
	if err != nil {
		return fmt.Errorf("run %s: %w", bin, err)
	}
	s.cmd, s.done = cmd, done
	if err := s.waitReady(20 * time.Second); err != nil {
		s.Stop()
		return err
	}
	if err := s.configure(); err != nil {
		s.Stop()
		return fmt.Errorf("configure vault: %w", err)
	}
	return nil
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Logs returns what the server printed so far.
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

func (s *Server) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("vault exited: %s", s.Logs())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h, err := s.Root.Sys().HealthWithContext(ctx)
		cancel()
		if err == nil && h.Initialized && !h.Sealed {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("vault not ready after %s: %s", limit, s.Logs())
}

// Stop kills the server and waits for it; Start runs it again.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
	s.cmd = nil
}

// Kill stops the server abruptly (for unavailability tests).
func (s *Server) Kill() { s.Stop() }

// Pause freezes the server (SIGSTOP): it accepts connections (the kernel
// does) and answers nothing, as a hung Vault does, and keeps every token,
// which a dev server restarted with Start would not. Resume (SIGCONT) lets
// it go on. Stop works on a paused server.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return fmt.Errorf("vault is not running")
	}
	return s.cmd.Process.Signal(sig)
}

func (s *Server) configure() error {
	key, err := EnableJWTAuth(s.Root, s.JWTMount)
	if err != nil {
		return err
	}
	s.key = key
	if err := s.Root.Sys().Mount("kv", &vault.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		return fmt.Errorf("mount kv v1: %w", err)
	}
	return nil
}

// EnableJWTAuth enables jwt auth at mount, trusting a new RSA key that it
// returns: tokens signed with it (MintToken) log in as Kubernetes pods.
func EnableJWTAuth(c *vault.Client, mount string) (*rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := c.Sys().EnableAuthWithOptions(mount, &vault.EnableAuthOptions{Type: "jwt"}); err != nil {
		return nil, fmt.Errorf("enable jwt auth at %s: %w", mount, err)
	}
	if _, err := c.Logical().Write("auth/"+mount+"/config", map[string]any{
		"jwt_validation_pubkeys": []string{string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))},
	}); err != nil {
		return nil, fmt.Errorf("configure jwt auth at %s: %w", mount, err)
	}
	return key, nil
}

// Role creates a jwt auth role bound to one namespace and service account,
// with the given policies.
func (s *Server) Role(t testing.TB, name, namespace, serviceAccount string, policies ...string) {
	t.Helper()
	if err := s.CreateRole(name, namespace, serviceAccount, 0, policies...); err != nil {
		t.Fatal(err)
	}
}

// CreateRole is Role without a testing.TB; ttl 0 keeps Vault's default.
func (s *Server) CreateRole(name, namespace, serviceAccount string, ttl time.Duration, policies ...string) error {
	body := RoleBody("vault", namespace, serviceAccount, policies...)
	if ttl > 0 {
		body["token_ttl"] = int(ttl.Seconds())
		body["token_max_ttl"] = int(3 * ttl.Seconds())
	}
	if _, err := s.Root.Logical().Write("auth/"+s.JWTMount+"/role/"+name, body); err != nil {
		return fmt.Errorf("create role %s: %w", name, err)
	}
	return nil
}

// RoleBody is a jwt auth role for pods of one namespace and service
// account, with tokens of the given audience, as a Kubernetes admin sets it.
func RoleBody(audience, namespace, serviceAccount string, policies ...string) map[string]any {
	return map[string]any{
		"role_type":       "jwt",
		"bound_audiences": []string{audience},
		"user_claim":      "sub",
		"bound_claims": map[string]any{
			"/kubernetes.io/namespace":           namespace,
			"/kubernetes.io/serviceaccount/name": serviceAccount,
		},
		"token_policies": policies,
	}
}

// Policy writes a Vault ACL policy.
func (s *Server) Policy(t testing.TB, name, hcl string) {
	t.Helper()
	if err := s.Root.Sys().PutPolicy(name, hcl); err != nil {
		t.Fatalf("put policy %s: %v", name, err)
	}
}

// ReadPolicy returns an HCL policy granting read on each path.
func ReadPolicy(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "path %q { capabilities = [\"read\"] }\n", p)
	}
	return b.String()
}

// PutKV2 writes a KV v2 secret at secret/<name> and returns its version.
func (s *Server) PutKV2(t testing.TB, name string, data map[string]any) int64 {
	t.Helper()
	sec, err := s.Root.KVv2("secret").Put(context.Background(), name, data)
	if err != nil {
		t.Fatalf("put secret/%s: %v", name, err)
	}
	return int64(sec.VersionMetadata.Version)
}

// PutKV1 writes a KV v1 secret at kv/<name>.
func (s *Server) PutKV1(t testing.TB, name string, data map[string]any) {
	t.Helper()
	if _, err := s.Root.Logical().Write("kv/"+name, data); err != nil {
		t.Fatalf("put kv/%s: %v", name, err)
	}
}

// Pod is the identity a minted token carries: the driver's own pod identity
// type, so a test says who a pod is the way the driver does. PodUID must be
// a UUID, as the API server makes it: the driver refuses anything else.
type Pod = provider.Identity

// PodUID derives a stable UUID (version 4 layout) from a seed, so a test
// pod's uid is a real UUID and the same on every run.
func PodUID(seed string) string {
	h := sha256.Sum256([]byte(seed))
	h[6] = h[6]&0x0f | 0x40
	h[8] = h[8]&0x3f | 0x80
	x := hex.EncodeToString(h[:16])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// Token mints an RS256 JWT shaped like a Kubernetes projected
// service-account token for audience "vault", valid for ttl.
func (s *Server) Token(p Pod, ttl time.Duration) string {
	return s.TokenFor(p, "vault", ttl)
}

// TokenFor mints a token for any audience.
func (s *Server) TokenFor(p Pod, audience string, ttl time.Duration) string {
	return MintToken(s.key, p, audience, ttl)
}

// MintToken signs a token shaped like a Kubernetes projected
// service-account token for the pod, valid for ttl.
func MintToken(key *rsa.PrivateKey, p Pod, audience string, ttl time.Duration) string {
	now := time.Now()
	return SignJWT(key, map[string]any{
		"iss": "https://kubernetes.default.svc.cluster.local",
		"sub": "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount,
		"aud": []string{audience},
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      p.Namespace,
			"pod":            map[string]any{"name": p.PodName, "uid": p.PodUID},
			"serviceaccount": map[string]any{"name": p.ServiceAccount, "uid": "sa-" + p.PodUID},
		},
	})
}

// SignJWT signs claims with RS256.
func SignJWT(key *rsa.PrivateKey, claims map[string]any) string {
	enc := base64.RawURLEncoding
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "test"})
	body, _ := json.Marshal(claims)
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(body)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		panic(err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// TokensJSON is the csi.storage.k8s.io/serviceAccount.tokens value kubelet
// sends for one audience.
func TokensJSON(audience, token string, exp time.Time) string {
	b, _ := json.Marshal(map[string]any{audience: map[string]string{
		"token": token, "expirationTimestamp": exp.UTC().Format(time.RFC3339),
	}})
	return string(b)
}
