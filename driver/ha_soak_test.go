package driver_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// The churn soak's size and shape. `make unit` runs soakDefaultVolumes
// (both cluster events included); `make soak` sets soakVolumesEnv=1000.
const (
	soakVolumesEnv     = "VCD_SOAK_VOLUMES"
	soakDefaultVolumes = 100
	soakWaves          = 10
	// soakParallel bounds the CSI calls in flight, as kubelet's
	// operation executor is bounded by the pods starting on a node.
	soakParallel = 8
	// One attempt's deadline, and how long a volume is retried (as
	// kubelet retries, with backoff) before the soak fails.
	soakAttemptDeadline = 10 * time.Second
	soakRetryFor        = 2 * time.Minute
	soakBackoffFirst    = 250 * time.Millisecond
	soakBackoffMax      = 4 * time.Second
	// soakRSSSlack is how far the driver's RSS may end above its start.
	soakRSSSlack = 1.10
	soakRole     = "soak"
	soakKV       = "soak"
	soakKVValue  = "soak-v1"
)

// What happens to the cluster in the middle of a wave.
type soakEvent int

const (
	soakNoEvent soakEvent = iota
	soakLeaderKill
	soakFullRestart
)

func (e soakEvent) String() string {
	return [...]string{"none", "leader kill -9", "full-cluster restart"}[e]
}

// soakEventAt places the events a third and two thirds of the way in.
func soakEventAt(wave int) soakEvent {
	switch wave {
	case soakWaves / 3:
		return soakLeaderKill
	case 2 * soakWaves / 3:
		return soakFullRestart
	}
	return soakNoEvent
}

func soakVolumes(t *testing.T) int {
	t.Helper()
	s := os.Getenv(soakVolumesEnv)
	if s == "" {
		return soakDefaultVolumes
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < soakWaves {
		t.Fatalf("%s=%q: want a number of volumes >= %d", soakVolumesEnv, s, soakWaves)
	}
	return n
}

const (
	soakKVSecrets = "- file: value\n  path: secret/data/" + soakKV + "\n  key: value\n"
	soakDBSecrets = soakKVSecrets +
		"- file: db/username\n  path: database/creds/" + soakRole + "\n  key: username\n" +
		"- file: db/password\n  path: database/creds/" + soakRole + "\n  key: password\n"
)

// soakVolume: every other volume also holds a database credential (a
// lease the driver must renew or revoke).
func soakVolume(t *testing.T, seed string, i int) volume {
	v := haVolume(t, seed)
	v.role, v.secrets = soakRole, soakKVSecrets
	if i%2 == 1 {
		v.secrets = soakDBSecrets
	}
	return v
}

// soakCall is one CSI call of the soak, for the accounting afterwards.
type soakCall struct {
	publish    bool
	start, end time.Time
	code       codes.Code
	msg        string
}

// soak runs the churn against one driver and records every call.
type soak struct {
	t    *testing.T
	c    *vaulttest.Cluster
	d    *observedDriver
	mu   sync.Mutex
	log  []soakCall
	vols []volume // every volume ever published, for the mount check
}

func (s *soak) record(call soakCall) {
	s.mu.Lock()
	s.log = append(s.log, call)
	s.mu.Unlock()
}

// retry makes one CSI call as kubelet does: each attempt with its own
// deadline, a failure retried with doubling backoff, bounded.
func (s *soak) retry(publish bool, call func(ctx context.Context) error) error {
	backoff, until := soakBackoffFirst, time.Now().Add(soakRetryFor)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), soakAttemptDeadline)
		start := time.Now()
		err := call(ctx)
		cancel()
		s.record(soakCall{publish: publish, start: start, end: time.Now(), code: status.Code(err), msg: status.Convert(err).Message()})
		if err == nil || time.Now().After(until) {
			return err
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, soakBackoffMax)
	}
}

func (s *soak) publish(v volume) error {
	err := s.retry(true, func(ctx context.Context) error {
		_, err := s.d.node.NodePublishVolume(ctx, requestFor(s.c.API, v))
		return err
	})
	if err != nil {
		return fmt.Errorf("publish %s: %w", v.pod.PodName, err)
	}
	if b, err := os.ReadFile(filepath.Join(v.target, "value")); err != nil || string(b) != soakKVValue {
		return fmt.Errorf("publish %s: value file %q: %w", v.pod.PodName, b, err)
	}
	return nil
}

func (s *soak) unpublish(v volume) error {
	err := s.retry(false, func(ctx context.Context) error {
		_, err := s.d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-" + v.pod.PodUID, TargetPath: v.target})
		return err
	})
	if err != nil {
		return fmt.Errorf("unpublish %s: %w", v.pod.PodName, err)
	}
	return nil
}

// eventWindow is when a cluster event ran.
type eventWindow struct {
	event      soakEvent
	start, end time.Time
	// recovered is how long the cluster had no leader (full restart) or
	// how long until a new one (leader kill).
	recovered time.Duration
}

// wave unpublishes the previous wave and publishes this one through
// soakParallel workers; with an event, it fires once half of this wave's
// publishes are done, while the rest are in flight.
func (s *soak) wave(prev, next []volume, ev soakEvent) (*eventWindow, error) {
	type job struct {
		v       volume
		publish bool
	}
	jobs := make(chan job)
	var published atomic.Int64
	fire := make(chan struct{})
	var fireOnce sync.Once
	if ev == soakNoEvent || len(next) < 2 {
		fireOnce.Do(func() { close(fire) })
	}
	errs := make(chan error, len(prev)+len(next))
	var wg sync.WaitGroup
	for range soakParallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if j.publish {
					errs <- s.publish(j.v)
					if published.Add(1) == int64(len(next)/2) {
						fireOnce.Do(func() { close(fire) })
					}
				} else {
					errs <- s.unpublish(j.v)
				}
			}
		}()
	}
	var win *eventWindow
	evDone := make(chan error, 1)
	go func() {
		if ev == soakNoEvent {
			evDone <- nil
			return
		}
		<-fire
		win = &eventWindow{event: ev, start: time.Now()}
		var err error
		win.recovered, err = s.clusterEvent(ev)
		win.end = time.Now()
		evDone <- err
	}()
	// Interleaved: the old wave's unpublishes and the new wave's publishes.
	for i := 0; i < max(len(prev), len(next)); i++ {
		if i < len(prev) {
			jobs <- job{v: prev[i]}
		}
		if i < len(next) {
			jobs <- job{v: next[i], publish: true}
		}
	}
	close(jobs)
	wg.Wait()
	fireOnce.Do(func() { close(fire) })
	evErr := <-evDone
	close(errs)
	var first error
	n := 0
	for err := range errs {
		if err != nil {
			n++
			if first == nil {
				first = err
			}
		}
	}
	if first != nil {
		return win, fmt.Errorf("%d calls never succeeded; first: %w", n, first)
	}
	return win, evErr
}

// clusterEvent runs one event and returns the seconds without a leader.
func (s *soak) clusterEvent(ev soakEvent) (time.Duration, error) {
	switch ev {
	case soakLeaderKill:
		leader, err := s.c.WaitActive(30 * time.Second)
		if err != nil {
			return 0, err
		}
		killed := time.Now()
		s.c.Kill(leader)
		if _, err := s.c.WaitActive(30 * time.Second); err != nil {
			return 0, fmt.Errorf("no leader after killing %s: %w", leader.ID, err)
		}
		recovered := time.Since(killed)
		// Back as a voter, so the full restart below starts from three.
		return recovered, s.c.Restart(leader)
	case soakFullRestart:
		return s.c.RestartAll()
	case soakNoEvent:
	}
	return 0, nil
}
