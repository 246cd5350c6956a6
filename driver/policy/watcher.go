package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// MaxFileSize bounds what a policy file read may allocate.
const MaxFileSize = 1 << 20

// DefaultInterval is the poll interval when NewWatcher is given none.
const DefaultInterval = 2 * time.Second

// Watcher holds the current policy of a file and reloads it when the file's
// content changes. It polls a content hash instead of using inotify: a
// ConfigMap volume updates by swapping a ..data symlink, which watches on the
// file itself miss, and a read every few seconds of a small file costs nothing.
type Watcher struct {
	path     string
	interval time.Duration
	onReload func(error)
	cur      atomic.Pointer[Policy]

	// Owned by the Run goroutine.
	lastSum [sha256.Size]byte // content last parsed, good or bad
	lastBad error             // parse error of the content at lastSum, nil when it is in force
	lastErr string            // last reported read error, to report it once
}

// NewWatcher loads path; an error here is fatal at start-up. onReload, when
// not nil, is called from Run after every reload attempt of changed content
// (nil on success), on a new read error, and when the file is readable again
// after one (nil when its content is the policy in force), so the last report
// always says whether the file and the policy in force agree. interval <= 0 means DefaultInterval.
func NewWatcher(path string, interval time.Duration, onReload func(err error)) (*Watcher, error) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	w := &Watcher{path: path, interval: interval, onReload: onReload, lastSum: sha256.Sum256(data)}
	w.cur.Store(p)
	klog.InfoS("Access policy loaded", "path", path, "rules", p.Len(), "sha256", shortSum(w.lastSum))
	return w, nil
}

// Current returns the policy in force; cheap enough for every publish.
func (w *Watcher) Current() *Policy { return w.cur.Load() }

// Run polls the file until ctx is done. Call it once.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.check()
		}
	}
}

// check reloads the file if its content changed. A bad file keeps the last
// good policy in force: a typo in a ConfigMap must not open or close every
// mount in the cluster.
func (w *Watcher) check() {
	data, err := readFile(w.path)
	if err != nil {
		if err.Error() != w.lastErr { // a missing file would otherwise report every tick
			w.lastErr = err.Error()
			w.report(err)
		}
		return
	}
	recovered := w.lastErr != ""
	w.lastErr = ""
	sum := sha256.Sum256(data)
	if sum == w.lastSum {
		if recovered {
			w.report(w.lastBad) // readable again: the last report must not stay a read error
		}
		return
	}
	w.lastSum = sum
	p, err := Parse(data)
	if err != nil {
		w.lastBad = fmt.Errorf("%s: %w", w.path, err)
		w.report(w.lastBad)
		return
	}
	w.lastBad = nil
	w.cur.Store(p)
	klog.InfoS("Access policy reloaded", "path", w.path, "rules", p.Len(), "sha256", shortSum(sum))
	w.report(nil)
}

func (w *Watcher) report(err error) {
	if err != nil {
		klog.ErrorS(err, "Access policy reload failed; keeping the last good policy", "path", w.path)
	}
	if w.onReload != nil {
		w.onReload(err)
	}
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path) //nolint:gosec // the admin's --policy-file; follows the ..data symlink afresh on every read
	if err != nil {
		return nil, fmt.Errorf("read policy file: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose on close
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read policy file %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("read policy file %s: larger than %d bytes", path, MaxFileSize)
	}
	return data, nil
}

func shortSum(s [sha256.Size]byte) string { return hex.EncodeToString(s[:6]) }
