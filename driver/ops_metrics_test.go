package driver_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// opsTool builds (or finds in .cache/tools) a tool from its wrapper module.
func opsTool(t *testing.T, module, name, pkg string) string {
	t.Helper()
	return vaulttest.Tool(t, module, name, pkg)
}

// exposedNames are the sample names of a scrape: a histogram's _bucket,
// _count and _sum, a counter's or gauge's own name.
func exposedNames(fams map[string]*dto.MetricFamily) map[string]bool {
	names := map[string]bool{}
	for n, f := range fams {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			names[n+"_bucket"], names[n+"_count"], names[n+"_sum"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[n], names[n+"_count"], names[n+"_sum"] = true, true, true
		default:
			names[n] = true
		}
	}
	return names
}

// Every metric the chart's alert rules and Grafana dashboard query (read
// with Prometheus's own PromQL parser) is in the real driver's /metrics
// after a real publish: no panel on a metric that does not exist, no alert
// that can never fire. The health gauges the alerts use then move with a
// failing refresh and a bad access-policy reload.
func TestOpsMetricNames(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	helm := opsTool(t, "hack/helm", "helm", "helm.sh/helm/v3/cmd/helm")
	names := opsTool(t, "hack/promtool", "promql-names", "./promql-names")
	render := exec.Command(helm, "template", "r", filepath.Join(root, "charts/vault-csi-driver"), "--kube-version", "1.35.0",
		"--set", "prometheusRule.enabled=true,grafanaDashboard.enabled=true")
	rendered, err := render.Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	list := exec.Command(names)
	list.Stdin = bytes.NewReader(rendered)
	var stderr bytes.Buffer
	list.Stderr = &stderr
	out, err := list.Output()
	if err != nil {
		t.Fatalf("promql-names: %v\n%s", err, stderr.String())
	}
	used := map[string][]string{} // metric -> where
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		metric, where, _ := strings.Cut(line, "\t")
		used[metric] = append(used[metric], where)
	}
	if len(used) < 10 {
		t.Fatalf("only %d metrics found in the rules and dashboard:\n%s", len(used), out)
	}

	v := vaulttest.Start(t)
	v.Policy(t, "ops", vaulttest.ReadPolicy("secret/data/ops"))
	v.Role(t, "ops", shopPod.Namespace, shopPod.ServiceAccount, "ops")
	v.PutKV2(t, "ops", map[string]any{"k": "v1"})
	policy := writePolicyFile(t, "rules: [{name: allow-all, effect: allow, paths: ['**']}]")
	d := startObservedDriver(t, v, "--policy-file="+policy)
	target := newTarget(t)
	vol := volume{target: target, pod: shopPod, role: "ops", secrets: "- file: k\n  path: secret/data/ops\n  key: k\n"}
	if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
		t.Fatal(err)
	}
	snap := d.scrape(t)
	exposed := exposedNames(snap.fams)
	var missing []string
	for m, where := range used {
		if !exposed[m] {
			missing = append(missing, m+" (used by "+strings.Join(where, "; ")+")")
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics the rules or dashboard use but the driver does not export after a publish:\n  %s", strings.Join(missing, "\n  "))
	} else {
		t.Logf("%d metrics used by the rules and dashboard, all exported", len(used))
	}

	// A refresh that fails (the role's policy revoked) raises the gauge
	// VaultCSIRefreshFailing watches; the next good refresh lowers it.
	gauge := func() float64 { return d.scrape(t).value("vault_csi_volumes_refresh_failing", nil) }
	if g := gauge(); g != 0 {
		t.Fatalf("refresh failing = %v after a good publish", g)
	}
	v.Policy(t, "ops", `path "secret/data/nothing" { capabilities = ["read"] }`)
	age(t, d.stateDir, target, 15*time.Second)
	if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
		t.Fatal(err)
	}
	if g := gauge(); g != 1 {
		t.Errorf("refresh failing = %v after a failed refresh, want 1", g)
	}
	v.Policy(t, "ops", vaulttest.ReadPolicy("secret/data/ops"))
	age(t, d.stateDir, target, 10*time.Minute) // past the backoff
	if _, err := d.node.NodePublishVolume(ctxT(t), requestFor(v, vol)); err != nil {
		t.Fatal(err)
	}
	if g := gauge(); g != 0 {
		t.Errorf("refresh failing = %v after a good refresh, want 0", g)
	}

	// A bad policy file raises VaultCSIPolicyReloadFailing's gauge until a
	// good one is in force again.
	reload := func(want float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second) // the driver polls every 2s
		for {
			g := d.scrape(t).value("vault_csi_policy_reload_failing", nil)
			if g == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("policy reload failing = %v, want %v", g, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	replacePolicyFile(t, policy, "rules: [{name: x, effect: maybe}]")
	reload(1)
	replacePolicyFile(t, policy, "rules: [{name: allow-again, effect: allow, paths: ['**']}]")
	reload(0)
	if err := os.Remove(policy); err != nil {
		t.Fatal(err)
	}
	reload(1)
}
