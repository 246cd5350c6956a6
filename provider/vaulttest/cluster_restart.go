package vaulttest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// stopTimeout bounds a node's graceful shutdown before it is killed.
const stopTimeout = 15 * time.Second

// RestartAll stops every node (SIGTERM, as a planned restart of the whole
// StatefulSet; SIGKILL if one does not exit in time) and starts them
// again on the same addresses with their Raft data, certificates and
// configuration, unseals them (the same key: nothing is re-initialised)
// and waits for an active node and three voters. The front stays up
// throughout: while the nodes are down its dials are refused, as a
// Service with no ready endpoints refuses them. It returns how long the
// cluster was without an active node, from the first stop to the new
// leader.
func (c *Cluster) RestartAll() (time.Duration, error) {
	start := time.Now()
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func(n *Node) {
			defer wg.Done()
			n.stop(syscall.SIGTERM, stopTimeout)
		}(n)
	}
	wg.Wait()
	for _, n := range c.Nodes {
		c.Front.SetDown(n.Listen, false) // a node killed earlier is back too
		if err := n.start(); err != nil {
			return 0, err
		}
	}
	// Unsealed at once: a node with Raft data needs a quorum of unsealed
	// peers before any of them can lead.
	errs := make([]error, len(c.Nodes))
	for i, n := range c.Nodes {
		wg.Add(1)
		go func(i int, n *Node) {
			defer wg.Done()
			if err := c.unseal(n); err != nil {
				errs[i] = fmt.Errorf("unseal %s after restart: %w\n%s", n.ID, err, n.Logs())
			}
		}(i, n)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if _, err := c.WaitActive(electionTimeout); err != nil {
		return 0, fmt.Errorf("no leader after the restart: %w", err)
	}
	down := time.Since(start)
	if err := c.waitVoters(); err != nil {
		return down, err
	}
	return down, c.waitLeaderKnown()
}

// waitLeaderKnown waits until every running node knows the active node: a
// standby that does not yet answers "local node not active but active
// cluster node not found" (500) to a request the front gives it.
func (c *Cluster) waitLeaderKnown() error {
	return waitFor(nodeReadyTimeout, func() error {
		for _, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			l, err := n.Client.Sys().LeaderWithContext(ctx)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", n.ID, err)
			}
			if !l.IsSelf && l.LeaderClusterAddress == "" {
				return fmt.Errorf("%s does not know the active node yet", n.ID)
			}
		}
		return nil
	})
}

// stop signals the node's process and waits (bounded) for it to exit,
// then kills it. The node's data and addresses are kept for start.
func (n *Node) stop(sig syscall.Signal, limit time.Duration) {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(limit):
		_ = n.cmd.Process.Kill()
		select {
		case <-n.done:
		case <-time.After(limit):
		}
	}
	n.cmd = nil
}
