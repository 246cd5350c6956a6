package vaulttest

import (
	"context"
	"testing"
	"time"
)

// TestCluster starts the 3-node TLS cluster, checks a standby forwards a
// write to the leader, loses the leader to kill -9 and gets a new one, and
// brings the old node back as a voter; then restarts all three nodes
// and reads what was written before.
func TestCluster(t *testing.T) {
	c := StartCluster(t)
	t.Logf("cluster start-up: %s (%v)", c.StartupTime.Round(time.Millisecond), c.Phases)
	ctx := context.Background()
	leader, err := c.Active()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if n == leader {
			continue
		}
		// Vault's default request forwarding: a write on a standby lands.
		if _, err := n.Client.KVv2("secret").Put(ctx, "via-"+n.ID, map[string]any{"v": n.ID}); err != nil {
			t.Fatalf("write through standby %s: %v", n.ID, err)
		}
	}
	killed := time.Now()
	c.Kill(leader)
	next, err := c.WaitActive(electionTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if next == leader {
		t.Fatalf("the killed node %s is still active", leader.ID)
	}
	t.Logf("new leader %s after %s", next.ID, time.Since(killed).Round(time.Millisecond))
	sec, err := c.API.Root.KVv2("secret").Get(ctx, "via-"+next.ID)
	if err != nil || sec.Data["v"] != next.ID {
		t.Fatalf("read after election: %v %v", sec, err)
	}
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	// The whole cluster stopped and started again keeps its data and its
	// root token, and elects a leader once unsealed.
	down, err := c.RestartAll()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("full restart: a leader again %s after the first stop", down.Round(time.Millisecond))
	for _, n := range c.Nodes {
		if !n.Running() {
			t.Errorf("%s not running after the restart", n.ID)
		}
	}
	sec, err = c.API.Root.KVv2("secret").Get(ctx, "via-"+next.ID)
	if err != nil || sec.Data["v"] != next.ID {
		t.Fatalf("read after the full restart: %v %v", sec, err)
	}
}
