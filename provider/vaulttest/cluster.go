package vaulttest

import (
	"bytes"
	"context"
	"errors"
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

	"vaultcsi.dev/driver/provider/vaulttest/need"
)

// ClusterSize is the number of Vault nodes a Cluster runs: the smallest
// Raft cluster that survives the loss of one node.
const ClusterSize = 3

// How long the cluster fixture waits for each step.
const (
	nodeReadyTimeout = 30 * time.Second
	electionTimeout  = 30 * time.Second
	pollInterval     = 50 * time.Millisecond
)

// Cluster is a real 3-node Vault cluster on 127.0.0.1 as production runs
// it: integrated storage (Raft, retry_join), TLS on every listener with a
// CA the fixture made, initialised and unsealed through the API, behind a
// TCP Front. API is a Server view of the cluster through the front (root
// client, jwt auth, KV v2 at secret/, KV v1 at kv/), so the single-server
// helpers (CreateRole, Policy, PutKV2, Token, ConfigurePKI,
// ConfigureDatabase) work against it unchanged.
type Cluster struct {
	Nodes []*Node
	Front *Front
	CA    *CA
	API   *Server
	// Addr is the front's https URL: what the driver is given.
	Addr string
	// StartupTime is how long Run took, from the first process start to
	// a configured cluster with three voters.
	StartupTime time.Duration
	// Phases is how StartupTime was spent, step by step (for the note).
	Phases []string

	dir       string
	unsealKey string
	rootToken string
}

// Node is one Vault server of a Cluster.
type Node struct {
	ID string
	// Listen is the API listener (host:port); Addr its https URL.
	Listen, Addr string
	// Client talks to this node only, with the root token.
	Client *vault.Client

	clusterListen string
	config        string
	cmd           *exec.Cmd
	done          <-chan struct{}
	logs          *bytes.Buffer
	mu            sync.Mutex
}

// StartCluster runs a cluster for the test and stops it at cleanup.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	need.Long(t, "starts a real 3-node Vault cluster")
	c, err := RunCluster()
	if err != nil {
		t.Fatalf("start vault cluster: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

// RunCluster starts and configures a cluster; the caller must Stop it.
func RunCluster() (_ *Cluster, err error) {
	start := time.Now()
	dir, err := os.MkdirTemp("", "vaulttest-ha-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if c.CA, err = NewCA(dir, "vault-ca"); err != nil {
		return nil, err
	}
	listens := make([]string, ClusterSize)
	for i := range listens {
		if listens[i], err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	for i := range listens {
		n, err := c.newNode(i, listens)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	if c.Front, err = NewFront(listens); err != nil {
		return nil, err
	}
	c.Addr = "https://" + c.Front.Addr
	for _, n := range c.Nodes {
		if err := n.start(); err != nil {
			return nil, err
		}
	}
	if err := c.initialize(); err != nil {
		return nil, err
	}
	root, err := c.client(c.Addr)
	if err != nil {
		return nil, err
	}
	c.API = &Server{Addr: c.Addr, Root: root, JWTMount: "jwt", logs: &bytes.Buffer{}}
	if err := c.configure(); err != nil {
		return nil, fmt.Errorf("configure vault cluster: %w", err)
	}
	c.StartupTime = time.Since(start)
	return c, nil
}

func (c *Cluster) client(addr string) (*vault.Client, error) {
	cfg := vault.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0
	cfg.Timeout = 10 * time.Second
	if err := cfg.ConfigureTLS(&vault.TLSConfig{CACert: c.CA.File}); err != nil {
		return nil, err
	}
	cl, err := vault.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	cl.SetToken(c.rootToken)
	return cl, nil
}

func (c *Cluster) newNode(i int, listens []string) (*Node, error) {
	id := fmt.Sprintf("vault-%d", i)
	clusterListen, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	cert, key, err := c.CA.Issue(c.dir, id, LeafOptions{DNSNames: []string{"localhost", id}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		return nil, err
	}
	data := filepath.Join(c.dir, id)
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	var joins strings.Builder
	for j, l := range listens {
		if j != i {
			fmt.Fprintf(&joins, "  retry_join {\n    leader_api_addr = %q\n    leader_ca_cert_file = %q\n  }\n", "https://"+l, c.CA.File)
		}
	}
	// performance_multiplier 1: Raft's production timing (the default of 5
	// is for slow disks), so a new leader is elected in about two seconds.
	// Autopilot checks joiners every 1s instead of 10s, so they become
	// voters (and the cluster can lose a node) sooner.
	config := fmt.Sprintf(`storage "raft" {
  path = %q
  node_id = %q
  performance_multiplier = 1
  autopilot_reconcile_interval = "1s"
  autopilot_update_interval = "500ms"
%s}
listener "tcp" {
  address = %q
  cluster_address = %q
  tls_cert_file = %q
  tls_key_file = %q
}
api_addr = %q
cluster_addr = %q
disable_mlock = true
ui = false
`, data, id, joins.String(), listens[i], clusterListen, cert, key, "https://"+listens[i], "https://"+clusterListen)
	cfgFile := filepath.Join(c.dir, id+".hcl")
	if err := os.WriteFile(cfgFile, []byte(config), 0o600); err != nil {
		return nil, err
	}
	n := &Node{ID: id, Listen: listens[i], Addr: "https://" + listens[i], clusterListen: clusterListen, config: cfgFile, logs: &bytes.Buffer{}}
	if n.Client, err = c.client(n.Addr); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *Node) start() error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "server", "-config="+n.config, "-log-level=warn")
	cmd.Env = append(os.Environ(), "VAULT_DISABLE_MLOCK=true", "HOME="+os.TempDir())
	cmd.Stdout = &lockedWriter{w: n.logs, mu: &n.mu}
	cmd.Stderr = cmd.Stdout
	done, err := StartTied(cmd)
	if err != nil {
		return fmt.Errorf("run %s: %w", bin, err)
	}
	n.cmd, n.done = cmd, done
	return nil
}

// Logs returns what the node printed so far.
func (n *Node) Logs() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.logs.String()
}

// Running reports whether the node's process is alive.
func (n *Node) Running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// health asks the node itself; any status (active, standby, sealed) is an answer.
func (n *Node) health(ctx context.Context) (*vault.HealthResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return n.Client.Sys().HealthWithContext(ctx)
}

// initialize inits the cluster on node 0 (one unseal key), unseals it,
// lets autopilot promote joiners quickly, then unseals the others, which
// join through retry_join, and waits for three voters.
func (c *Cluster) initialize() error {
	ctx := context.Background()
	t0 := time.Now()
	phase := func(name string) {
		c.Phases = append(c.Phases, fmt.Sprintf("%s %s", name, time.Since(t0).Round(10*time.Millisecond)))
		t0 = time.Now()
	}
	first := c.Nodes[0]
	if err := waitFor(nodeReadyTimeout, func() error {
		_, err := first.health(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("%s does not answer: %w\n%s", first.ID, err, first.Logs())
	}
	init, err := first.Client.Sys().InitWithContext(ctx, &vault.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		return fmt.Errorf("init %s: %w", first.ID, err)
	}
	phase("first node answers")
	c.unsealKey, c.rootToken = init.KeysB64[0], init.RootToken
	for _, n := range c.Nodes {
		n.Client.SetToken(c.rootToken)
	}
	if err := c.unseal(first); err != nil {
		return err
	}
	if _, err := c.WaitActive(electionTimeout); err != nil {
		return err
	}
	phase("init+unseal+active")
	// Joiners become voters after server_stabilization_time (10s by
	// default); a cluster with non-voters cannot lose its leader.
	if _, err := first.Client.Logical().Write("sys/storage/raft/autopilot/configuration", map[string]any{
		"server_stabilization_time": "1s",
		"cleanup_dead_servers":      false,
	}); err != nil {
		return fmt.Errorf("autopilot configuration: %w", err)
	}
	// The joiners join at once (each retry_join polls every 2s).
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes[1:] {
		wg.Add(1)
		go func(i int, n *Node) {
			defer wg.Done()
			errs[i] = c.unseal(n)
		}(i, n)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	phase("joiners joined+unsealed")
	if err := c.waitVoters(); err != nil {
		return err
	}
	phase("three voters")
	err = c.waitLeaderKnown()
	phase("every node knows the leader")
	return err
}

// unseal gives the node its key until it reports unsealed. A joining node
// needs the key to answer the leader's challenge before it can unseal, so
// the first calls may leave it sealed.
func (c *Cluster) unseal(n *Node) error {
	return waitFor(nodeReadyTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := n.Client.Sys().UnsealWithContext(ctx, c.unsealKey)
		if err != nil {
			return err
		}
		if st.Sealed {
			return fmt.Errorf("%s still sealed", n.ID)
		}
		return nil
	})
}

// waitVoters waits until all ClusterSize servers are Raft voters.
func (c *Cluster) waitVoters() error {
	const want = ClusterSize
	return waitFor(nodeReadyTimeout, func() error {
		active, err := c.Active()
		if err != nil {
			return err
		}
		sec, err := active.Client.Logical().Read("sys/storage/raft/configuration")
		if err != nil {
			return err
		}
		cfg, _ := sec.Data["config"].(map[string]any)
		servers, _ := cfg["servers"].([]any)
		voters := 0
		for _, s := range servers {
			if m, _ := s.(map[string]any); m != nil && m["voter"] == true {
				voters++
			}
		}
		if voters < want {
			return fmt.Errorf("%d of %d servers are voters", voters, want)
		}
		return nil
	})
}

// Active returns the node that is active now (unsealed, not a standby).
func (c *Cluster) Active() (*Node, error) {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		h, err := n.health(context.Background())
		if err == nil && h.Initialized && !h.Sealed && !h.Standby {
			return n, nil
		}
	}
	return nil, errors.New("no active node")
}

// WaitActive waits for an active node and returns it.
func (c *Cluster) WaitActive(limit time.Duration) (*Node, error) {
	var active *Node
	err := waitFor(limit, func() error {
		var err error
		active, err = c.Active()
		return err
	})
	return active, err
}

// Kill stops the node with SIGKILL, as a crashed pod, and takes it out of
// the front (its connections drop, as endpoints of a dead pod do).
func (c *Cluster) Kill(n *Node) {
	c.Front.SetDown(n.Listen, true)
	n.stop(syscall.SIGKILL, 10*time.Second)
}

// Restart starts a killed node again, unseals it, waits for it to be a
// voter again and puts it back in the front.
func (c *Cluster) Restart(n *Node) error {
	if n.Running() {
		return fmt.Errorf("%s is running", n.ID)
	}
	if err := n.start(); err != nil {
		return err
	}
	if err := c.unseal(n); err != nil {
		return fmt.Errorf("unseal %s: %w\n%s", n.ID, err, n.Logs())
	}
	c.Front.SetDown(n.Listen, false)
	if err := c.waitVoters(); err != nil {
		return err
	}
	return c.waitLeaderKnown()
}

// Seal seals a node through the API (it keeps running, its open
// connections stay open, and it stays in the front: clients reaching it
// get 503). Vault seals only an active node this way ("cannot seal when in
// standby mode"): a standby's leadership passes to another node. Use
// RestartSealed for a sealed standby.
func (c *Cluster) Seal(n *Node) error {
	return n.Client.Sys().Seal()
}

// RestartSealed kills a node and starts it again without unsealing it, as
// a pod restarted with no auto-unseal, and puts it back in the front.
func (c *Cluster) RestartSealed(n *Node) error {
	c.Kill(n)
	if err := n.start(); err != nil {
		return err
	}
	c.Front.SetDown(n.Listen, false)
	return waitFor(nodeReadyTimeout, func() error {
		h, err := n.health(context.Background())
		if err != nil {
			return err
		}
		if !h.Sealed {
			return fmt.Errorf("%s is not sealed", n.ID)
		}
		return nil
	})
}

// Unseal unseals a sealed node and waits until it is a voter again.
func (c *Cluster) Unseal(n *Node) error {
	if err := c.unseal(n); err != nil {
		return err
	}
	if err := c.waitVoters(); err != nil {
		return err
	}
	return c.waitLeaderKnown()
}

// Stop kills every node and the front and removes the data.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.stop(syscall.SIGKILL, 10*time.Second)
	}
	if c.Front != nil {
		c.Front.Close()
	}
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
}

// Dir is the fixture's directory (certificates, configs, Raft data).
func (c *Cluster) Dir() string { return c.dir }

// configure sets the cluster up as Run does a dev server: jwt auth, KV v2
// at secret/, KV v1 at kv/.
func (c *Cluster) configure() error {
	if err := c.API.Root.Sys().Mount("secret", &vault.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		return fmt.Errorf("mount kv v2: %w", err)
	}
	if err := c.API.configure(); err != nil {
		return err
	}
	// A new KV v2 mount answers writes only once its upgrade finished.
	return waitFor(nodeReadyTimeout, func() error {
		_, err := c.API.Root.KVv2("secret").Put(context.Background(), "vaulttest-ready", map[string]any{"ok": "1"})
		return err
	})
}

// waitFor polls f until it succeeds or limit passes.
func waitFor(limit time.Duration, f func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", limit, err)
		}
		time.Sleep(pollInterval)
	}
}
