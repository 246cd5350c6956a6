package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"vaultcsi.dev/driver/driver/ops"
)

const leaseID = "database/creds/payments/2f6a614c-4aa2-7b19-24b9-ad944a8d4de6"

func TestLogFields(t *testing.T) {
	at := time.Date(2026, 11, 24, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
	tests := []struct {
		name   string
		event  Event
		want   map[string]any // JSON values as encoding/json decodes them
		absent []string
	}{
		{
			name: "publish",
			event: Event{
				Time: at, Action: ops.ActionPublish, Namespace: "shop", Pod: "payment-1", PodUID: "uid-1",
				ServiceAccount: "payment", Role: "payments",
				Paths:    []string{"secret/data/paypal", "database/creds/payments"},
				Versions: map[string]int64{"secret/data/paypal": 7},
				LeaseIDs: []string{leaseID}, Decision: ops.DecisionAllow, Rule: "payment-paypal",
				Latency: 1500 * time.Microsecond, VaultRequests: 3,
			},
			want: map[string]any{
				"time": "2026-11-24T09:00:00.123456789Z", "node": "node-1", "action": "publish",
				"namespace": "shop", "pod": "payment-1", "pod_uid": "uid-1", "service_account": "payment",
				"role": "payments", "paths": []any{"secret/data/paypal", "database/creds/payments"},
				"versions": map[string]any{"secret/data/paypal": 7.0}, "lease_ids": []any{HashLeaseID(leaseID)},
				"decision": "allow", "rule": "payment-paypal", "latency_ms": 1.5, "vault_requests": 3.0,
			},
			absent: []string{"error"},
		},
		{
			name:  "deny without rule, node override",
			event: Event{Time: at, Node: "node-9", Action: ops.ActionDeny, Namespace: "web", Decision: ops.DecisionDeny, Error: "no rule matched"},
			want: map[string]any{
				"node": "node-9", "action": "deny", "decision": "deny", "error": "no rule matched",
				"latency_ms": 0.0, "vault_requests": 0.0,
			},
			absent: []string{"rule", "paths", "versions", "lease_ids", "pod"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			New(&buf, "node-1").Log(tt.event)
			out := buf.String()
			if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
				t.Fatalf("want exactly one line, got %q", out)
			}
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatalf("line is not JSON: %v: %s", err, out)
			}
			for k, v := range tt.want {
				if fmt.Sprint(got[k]) != fmt.Sprint(v) {
					t.Errorf("%s = %#v, want %#v", k, got[k], v)
				}
			}
			for _, k := range tt.absent {
				if _, ok := got[k]; ok {
					t.Errorf("field %s present: %v", k, got[k])
				}
			}
		})
	}
}

func TestFieldOrderIsStable(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, "n").Log(Event{Action: ops.ActionRevoke, Namespace: "ns", Role: "r", Error: "e"})
	out := buf.String()
	keys := []string{`"time"`, `"node"`, `"action"`, `"namespace"`, `"role"`, `"error"`, `"latency_ms"`, `"vault_requests"`}
	last := -1
	for _, k := range keys {
		i := strings.Index(out, k)
		if i <= last {
			t.Fatalf("field %s out of order in %s", k, out)
		}
		last = i
	}
}

func TestLeaseIDNeverRaw(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, "n")
	l.Log(Event{Action: ops.ActionRevoke, LeaseIDs: []string{leaseID, "pki/issue/web/abc"}})
	out := buf.String()
	for _, raw := range []string{leaseID, "2f6a614c-4aa2", "pki/issue/web/abc"} {
		if strings.Contains(out, raw) {
			t.Errorf("raw lease id %q in output: %s", raw, out)
		}
	}
	h := HashLeaseID(leaseID)
	if !strings.HasPrefix(h, "sha256:") || len(h) != len("sha256:")+16 {
		t.Errorf("HashLeaseID = %q", h)
	}
	if HashLeaseID(leaseID) != h || HashLeaseID("other") == h {
		t.Error("HashLeaseID is not a stable, distinguishing hash")
	}
}

func TestErrorScrubbed(t *testing.T) {
	jwt := "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlLXZhbHVl"
	vaultToken := "hvs.CAESIJ9vX0oK1w2q3e4r5t6y7u8i9o0p"
	tests := []struct{ in, leak string }{
		{"login failed for token " + jwt, jwt},
		{"permission denied: token " + vaultToken, vaultToken},
		{"legacy token s.AbCdEfGhIjKlMnOpQrStUvWx rejected", "s.AbCdEfGhIjKlMnOpQrStUvWx"},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		New(&buf, "n").Log(Event{Action: ops.ActionFail, Error: tt.in})
		if strings.Contains(buf.String(), tt.leak) || !strings.Contains(buf.String(), "[redacted]") {
			t.Errorf("credential not redacted: %s", buf.String())
		}
	}
	var buf bytes.Buffer
	New(&buf, "n").Log(Event{Action: ops.ActionFail, Error: strings.Repeat("x", 5000)})
	if buf.Len() > 2*maxErrorLen {
		t.Errorf("long error not truncated: %d bytes", buf.Len())
	}
}

// chunkWriter forwards each Write in small pieces, as a pipe or a slow file
// might, so that unsynchronised writers would interleave.
type chunkWriter struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	for i := 0; i < len(p); i += 7 {
		w.mu.Lock()
		w.out.Write(p[i:min(i+7, len(p))])
		w.mu.Unlock()
	}
	return len(p), nil
}

func TestConcurrentWritersDoNotInterleave(t *testing.T) {
	w := &chunkWriter{}
	l := New(w, "node-1")
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				l.Log(Event{Action: ops.ActionPublish, Pod: fmt.Sprintf("pod-%d-%d", g, i), Paths: []string{"secret/data/x"}})
			}
		})
	}
	wg.Wait()
	sc := bufio.NewScanner(&w.out)
	seen := map[string]bool{}
	for sc.Scan() {
		var e struct {
			Pod string `json:"pod"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("interleaved line %q: %v", sc.Text(), err)
		}
		seen[e.Pod] = true
	}
	if len(seen) != writers*each {
		t.Errorf("got %d distinct lines, want %d", len(seen), writers*each)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestNilAndFailingLoggers(t *testing.T) {
	var l *Logger
	l.Log(Event{Action: ops.ActionPublish}) // no panic
	New(failWriter{}, "n").Log(Event{Action: ops.ActionPublish})
}
