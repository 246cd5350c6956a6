package e2e

// The operations pack (`make ops-check`, part of `make test`): the chart's
// monitoring objects rendered and checked, its alerts run through
// `promtool test rules`, and the multi-platform image index with its SBOMs.
// Tools come from their wrapper modules under hack/, cached in .cache/tools.

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"vaultcsi.dev/driver/provider/vaulttest"
)

// toolBin builds (or finds in .cache/tools) a tool from its wrapper module.
func toolBin(t testing.TB, module, name, pkg string) string {
	t.Helper()
	return vaulttest.Tool(t, module, name, pkg)
}

func promtoolBin(t testing.TB) string {
	return toolBin(t, "hack/promtool", "promtool", "github.com/prometheus/prometheus/cmd/promtool")
}

// obj is one rendered object, decoded loosely, with its YAML.
type obj struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	raw []byte
}

// decode decodes the object strictly into v.
func (o obj) decode(t *testing.T, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(o.raw, v); err != nil {
		t.Fatalf("%s %s does not decode strictly: %v", o.Kind, o.Metadata.Name, err)
	}
}

// opsRelease and opsNamespace name the release in rendering tests.
const (
	opsRelease   = "vcsi"
	opsNamespace = "vcsi-system"
)

// renderChart renders chart (a folder or a packaged .tgz) with --set values.
func renderChart(t *testing.T, chart string, set ...string) ([]obj, error) {
	t.Helper()
	args := []string{"template", opsRelease, chart, "--namespace", opsNamespace, "--kube-version", "1.35.0"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := runHelm(t, nil, args...)
	if err != nil {
		return nil, err
	}
	var objs []obj
	for _, doc := range strings.Split(out, "\n---\n") {
		var o obj
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("bad YAML: %v\n%s", err, doc)
		}
		if o.Kind != "" {
			o.raw = []byte(doc)
			objs = append(objs, o)
		}
	}
	return objs, nil
}

func mustRender(t *testing.T, set ...string) []obj {
	t.Helper()
	objs, err := renderChart(t, chartDir, set...)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func kindsOf(objs []obj) map[string]int {
	m := map[string]int{}
	for _, o := range objs {
		m[o.Kind]++
	}
	return m
}

func findKind(t *testing.T, objs []obj, kind string) obj {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind {
			return o
		}
	}
	t.Fatalf("no %s rendered (have %v)", kind, kindsOf(objs))
	return obj{}
}

// everythingOn turns on every optional operations object.
var everythingOn = []string{
	"podMonitor.enabled=true", "podMonitor.labels.release=prom", "scrapeAnnotations=true",
	"prometheusRule.enabled=true", "grafanaDashboard.enabled=true",
	"networkPolicy.enabled=true", "vault.address=https://10.0.0.5:8200", "networkPolicy.vault.cidrs[0]=10.1.0.0/16",
}

// Off by default: nothing that needs the Prometheus Operator's CRDs, no
// scrape annotations, no dashboard, no NetworkPolicy; the readiness probe,
// the measured resources and maxUnavailable always.
func TestOpsChartDefaults(t *testing.T) {
	objs := mustRender(t)
	k := kindsOf(objs)
	for _, kind := range []string{"PodMonitor", "PrometheusRule", "NetworkPolicy"} {
		if k[kind] != 0 {
			t.Errorf("%s rendered by default", kind)
		}
	}
	var ds appsv1.DaemonSet
	findKind(t, objs, "DaemonSet").decode(t, &ds)
	if a := ds.Spec.Template.Annotations["prometheus.io/scrape"]; a != "" {
		t.Errorf("scrape annotation by default: %q", a)
	}
	for _, o := range objs {
		if o.Kind == "ConfigMap" && strings.HasSuffix(o.Metadata.Name, "-dashboard") {
			t.Error("dashboard ConfigMap rendered by default")
		}
	}
	c := ds.Spec.Template.Spec.Containers[0]
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.StrVal != "healthz" {
		t.Errorf("readiness probe: %+v", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness probe must stay /healthz: %+v", p)
	}
	// From the bench (README Performance): 39.9 MB at 601 volumes, 55.6 MB at 10,000.
	for what, q := range map[string]struct {
		got  resource.Quantity
		want string
	}{
		"requests.memory": {c.Resources.Requests[corev1.ResourceMemory], "48Mi"},
		"limits.memory":   {c.Resources.Limits[corev1.ResourceMemory], "192Mi"},
		"requests.cpu":    {c.Resources.Requests[corev1.ResourceCPU], "10m"},
	} {
		if q.got.Cmp(resource.MustParse(q.want)) != 0 {
			t.Errorf("resources.%s = %s, want %s", what, q.got.String(), q.want)
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		t.Error("a CPU limit would throttle publishes")
	}
	gomem := false
	for _, e := range c.Env {
		gomem = gomem || e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil &&
			e.ValueFrom.ResourceFieldRef.Resource == "limits.memory"
	}
	if !gomem {
		t.Error("GOMEMLIMIT does not follow the memory limit")
	}
	u := ds.Spec.UpdateStrategy
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil || u.RollingUpdate.MaxUnavailable == nil ||
		u.RollingUpdate.MaxUnavailable.IntValue() != 1 || u.RollingUpdate.MaxSurge != nil {
		t.Errorf("updateStrategy = %+v", u)
	}
}

// Everything on: each object is well-formed and wired to the DaemonSet.
func TestOpsChartMonitoringOn(t *testing.T) {
	objs := mustRender(t, everythingOn...)
	var ds appsv1.DaemonSet
	findKind(t, objs, "DaemonSet").decode(t, &ds)
	podLabels := ds.Spec.Template.Labels

	// PodMonitor: selects the driver pods, scrapes the metrics port, adds node.
	var pm struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			NamespaceSelector struct {
				MatchNames []string `json:"matchNames"`
			} `json:"namespaceSelector"`
			PodMetricsEndpoints []struct {
				Port        string `json:"port"`
				Path        string `json:"path"`
				Interval    string `json:"interval"`
				Relabelings []struct {
					SourceLabels []string `json:"sourceLabels"`
					TargetLabel  string   `json:"targetLabel"`
				} `json:"relabelings"`
			} `json:"podMetricsEndpoints"`
		} `json:"spec"`
	}
	pmo := findKind(t, objs, "PodMonitor")
	if err := yaml.Unmarshal(pmo.raw, &pm); err != nil {
		t.Fatal(err)
	}
	for k, v := range pm.Spec.Selector.MatchLabels {
		if podLabels[k] != v {
			t.Errorf("PodMonitor selects %s=%s; the driver pods have %v", k, v, podLabels)
		}
	}
	if pm.Metadata.Labels["release"] != "prom" || len(pm.Spec.NamespaceSelector.MatchNames) != 1 ||
		pm.Spec.NamespaceSelector.MatchNames[0] != opsNamespace {
		t.Errorf("PodMonitor labels %v, namespaces %v", pm.Metadata.Labels, pm.Spec.NamespaceSelector.MatchNames)
	}
	ports := map[string]int32{}
	for _, p := range ds.Spec.Template.Spec.Containers[0].Ports {
		ports[p.Name] = p.ContainerPort
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("PodMonitor endpoints: %+v", pm.Spec.PodMetricsEndpoints)
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if ports[ep.Port] != 9809 || ep.Path != "/metrics" || ep.Interval != "30s" {
		t.Errorf("PodMonitor endpoint %+v; container ports %v", ep, ports)
	}
	if len(ep.Relabelings) != 1 || ep.Relabelings[0].TargetLabel != "node" ||
		strings.Join(ep.Relabelings[0].SourceLabels, ",") != "__meta_kubernetes_pod_node_name" {
		t.Errorf("PodMonitor must add the node label the alerts group by: %+v", ep.Relabelings)
	}

	// Scrape annotations name the metrics port.
	a := ds.Spec.Template.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "9809" || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations: %v", a)
	}

	// The dashboard ConfigMap carries the sidecar's label and a dashboard.
	var cm corev1.ConfigMap
	found := false
	for _, o := range objs {
		if o.Kind == "ConfigMap" && strings.HasSuffix(o.Metadata.Name, "-dashboard") {
			o.decode(t, &cm)
			found = true
		}
	}
	if !found || cm.Labels["grafana_dashboard"] != "1" || cm.Namespace != opsNamespace {
		t.Fatalf("dashboard ConfigMap: found %v, labels %v, namespace %q", found, cm.Labels, cm.Namespace)
	}
	var dash struct {
		UID    string            `json:"uid"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["vault-csi-driver.json"]), &dash); err != nil || dash.UID == "" || len(dash.Panels) < 10 {
		t.Errorf("dashboard JSON: uid %q, %d panels, %v", dash.UID, len(dash.Panels), err)
	}

	// The NetworkPolicy allows DNS and Vault (the IP in vault.address and the
	// CIDRs given) on Vault's port, nothing else.
	var np networkingv1.NetworkPolicy
	findKind(t, objs, "NetworkPolicy").decode(t, &np)
	if len(np.Spec.PolicyTypes) != 1 || np.Spec.PolicyTypes[0] != networkingv1.PolicyTypeEgress || len(np.Spec.Ingress) != 0 {
		t.Errorf("policyTypes %v, ingress %v", np.Spec.PolicyTypes, np.Spec.Ingress)
	}
	for k, v := range np.Spec.PodSelector.MatchLabels {
		if podLabels[k] != v {
			t.Errorf("NetworkPolicy selects %s=%s; the driver pods have %v", k, v, podLabels)
		}
	}
	if got := egressSummary(np); got != "53/UDP,53/TCP to [pods] | 8200/TCP to [10.1.0.0/16 10.0.0.5/32]" {
		t.Errorf("egress = %s", got)
	}
}

// egressSummary writes a NetworkPolicy's egress rules compactly.
func egressSummary(np networkingv1.NetworkPolicy) string {
	var rules []string
	for _, r := range np.Spec.Egress {
		var ports, to []string
		for _, p := range r.Ports {
			ports = append(ports, p.Port.String()+"/"+string(*p.Protocol))
		}
		for _, peer := range r.To {
			switch {
			case peer.IPBlock != nil:
				to = append(to, peer.IPBlock.CIDR)
			case peer.PodSelector != nil || peer.NamespaceSelector != nil:
				to = append(to, "pods")
			}
		}
		rules = append(rules, strings.Join(ports, ",")+" to "+"["+strings.Join(to, " ")+"]")
	}
	return strings.Join(rules, " | ")
}

// Bad combinations fail at render time with the value named.
func TestOpsChartRefuses(t *testing.T) {
	tests := []struct {
		name string
		set  []string
		want string // in the error; "" means it must render
	}{
		{"scraping a loopback listener", []string{"podMonitor.enabled=true", "listenAddress=127.0.0.1"}, "listenAddress"},
		{"annotations without metrics", []string{"scrapeAnnotations=true", "metricsPort=0"}, "metricsPort"},
		{"NetworkPolicy with Vault by name only", []string{"networkPolicy.enabled=true"}, "networkPolicy.vault.cidrs"},
		{"NetworkPolicy with in-cluster Vault pods", []string{"networkPolicy.enabled=true",
			"networkPolicy.vault.namespaceSelector.matchLabels.name=vault"}, ""},
		{"rule duration from a fractional rotationPeriod", []string{"prometheusRule.enabled=true", "rotationPeriod=1.5m"}, "refreshFailingFor"},
		{"maxSurge: two drivers on one node", []string{"updateStrategy.rollingUpdate.maxSurge=1"}, "maxSurge"},
		{"RollingUpdate without maxUnavailable", []string{"updateStrategy.rollingUpdate=null"}, "rollingUpdate"},
		{"unknown podMonitor value", []string{"podMonitor.enable=true"}, "enable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := renderChart(t, chartDir, tt.set...)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("should render: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one naming %q", err, tt.want)
			}
		})
	}
	// Vault inside the cluster: its port comes from the address (443 for https).
	objs := mustRender(t, "networkPolicy.enabled=true", "vault.address=https://vault.vault.svc",
		"networkPolicy.vault.podSelector.matchLabels.app=vault")
	var np networkingv1.NetworkPolicy
	findKind(t, objs, "NetworkPolicy").decode(t, &np)
	if got := egressSummary(np); got != "53/UDP,53/TCP to [pods] | 443/TCP to [pods]" {
		t.Errorf("egress = %s", got)
	}
}

// `helm package` output (what e2e installs) renders exactly as the folder.
func TestOpsChartPackage(t *testing.T) {
	dir := t.TempDir()
	if out, err := runHelm(t, nil, "package", chartDir, "-d", dir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	pkgs, _ := filepath.Glob(filepath.Join(dir, "*.tgz"))
	if len(pkgs) != 1 {
		t.Fatalf("helm package wrote %v", pkgs)
	}
	if out, err := runHelm(t, nil, "lint", pkgs[0], "--strict", "--kube-version", "1.35.0", "--set", strings.Join(everythingOn, ",")); err != nil {
		t.Fatalf("lint of the package: %v\n%s", err, out)
	}
	fromPkg, err := renderChart(t, pkgs[0], everythingOn...)
	if err != nil {
		t.Fatal(err)
	}
	fromDir := mustRender(t, everythingOn...)
	if len(fromPkg) != len(fromDir) {
		t.Fatalf("package renders %v, folder %v", kindsOf(fromPkg), kindsOf(fromDir))
	}
	for i := range fromDir {
		if !bytes.Equal(fromPkg[i].raw, fromDir[i].raw) {
			t.Errorf("%s %s differs between package and folder", fromDir[i].Kind, fromDir[i].Metadata.Name)
		}
	}
}

// promRule is the part of a PrometheusRule the rule tests need.
type promRule struct {
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// The alerts as the chart renders them pass `promtool check rules` and
// `promtool test rules` (e2e/testdata/alerts_test.yaml), where each alert
// fires on series that should page and stays silent on series that should not.
func TestOpsAlertRules(t *testing.T) {
	objs := mustRender(t, "prometheusRule.enabled=true")
	o := findKind(t, objs, "PrometheusRule")
	var pr promRule
	if err := yaml.Unmarshal(o.raw, &pr); err != nil {
		t.Fatal(err)
	}
	alerts := map[string]bool{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
				t.Errorf("%s: severity %q", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" || !strings.Contains(r.Annotations["description"], "Check first") {
				t.Errorf("%s: needs a summary and a description saying what to check first: %v", r.Alert, r.Annotations)
			}
		}
	}
	if len(alerts) != 7 {
		t.Errorf("alerts: %v", alerts)
	}
	// The spec as rendered (not re-encoded from promRule, which would add
	// empty fields) is a rules file.
	var raw struct {
		Spec struct {
			Groups []any `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(o.raw, &raw); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rules, err := yaml.Marshal(map[string]any{"groups": raw.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o600); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o600); err != nil {
		t.Fatal(err)
	}
	checkAlertCoverage(t, tests, alerts)
	promtool := promtoolBin(t)
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
}

// checkAlertCoverage fails unless every alert has a test case where it
// fires and one where the input holds series that must not page and it is
// silent (an empty exp_alerts), and no test names an unknown alert.
func checkAlertCoverage(t *testing.T, tests []byte, alerts map[string]bool) {
	t.Helper()
	var f struct {
		Tests []struct {
			Name      string `json:"name"`
			AlertTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(tests, &f); err != nil {
		t.Fatal(err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range f.Tests {
		for _, a := range tc.AlertTest {
			if !alerts[a.Alertname] {
				t.Errorf("test %q names alert %q, which the chart does not have", tc.Name, a.Alertname)
			}
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	for a := range alerts {
		if !fires[a] || !silent[a] {
			t.Errorf("alert %s: a firing case %v, a silent case %v; want both", a, fires[a], silent[a])
		}
	}
}
