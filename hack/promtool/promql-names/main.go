// Command promql-names lists the metrics that Prometheus rules and Grafana
// dashboards query, parsed with Prometheus's own PromQL parser. It reads a
// rendered chart (a YAML stream: `helm template ... | promql-names`) and finds
// the expressions of every PrometheusRule and of every ConfigMap holding a
// Grafana dashboard (JSON with "panels"). It prints one "metric<TAB>where"
// line per use, sorted, and exits 1 when an expression does not parse or
// there is none at all.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// expr is one query and where it was found.
type expr struct{ where, query string }

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "promql-names:", err)
		os.Exit(1)
	}
	lines, err := run(in)
	w := bufio.NewWriter(os.Stdout)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	_ = w.Flush()
	if err != nil {
		fmt.Fprintln(os.Stderr, "promql-names:", err)
		os.Exit(1)
	}
}

func run(in []byte) ([]string, error) {
	exprs, err := collect(in)
	if err != nil {
		return nil, err
	}
	if len(exprs) == 0 {
		return nil, errors.New("no PrometheusRule or dashboard expressions in the input")
	}
	seen := map[string]bool{}
	var out []string
	var errs []error
	for _, e := range exprs {
		names, err := metricNames(e.query)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.where, err))
			continue
		}
		for _, n := range names {
			l := n + "\t" + e.where
			if !seen[l] {
				seen[l] = true
				out = append(out, l)
			}
		}
	}
	sort.Strings(out)
	return out, errors.Join(errs...)
}

// collect finds the expressions in a YAML stream of Kubernetes objects.
func collect(in []byte) ([]expr, error) {
	var out []expr
	for i, doc := range bytes.Split(in, []byte("\n---")) {
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Spec struct {
				Groups []struct {
					Name  string `json:"name"`
					Rules []struct {
						Alert  string `json:"alert"`
						Record string `json:"record"`
						Expr   string `json:"expr"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"spec"`
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		switch obj.Kind {
		case "PrometheusRule":
			for _, g := range obj.Spec.Groups {
				for _, r := range g.Rules {
					out = append(out, expr{where: "rule " + r.Alert + r.Record, query: r.Expr})
				}
			}
		case "ConfigMap":
			for key, v := range obj.Data {
				if !strings.HasSuffix(key, ".json") {
					continue
				}
				d, err := dashboardExprs(obj.Metadata.Name+"/"+key, []byte(v))
				if err != nil {
					return nil, err
				}
				out = append(out, d...)
			}
		}
	}
	return out, nil
}

type panel struct {
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// labelValues is Grafana's label_values(METRIC, LABEL) variable query.
var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)

func dashboardExprs(where string, js []byte) ([]expr, error) {
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(js, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if d.Panels == nil {
		return nil, nil // not a dashboard
	}
	var out []expr
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out = append(out, expr{where: fmt.Sprintf("dashboard %s panel %q", where, p.Title), query: grafanaVars(t.Expr)})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.Definition
		if m := labelValues.FindStringSubmatch(q); m != nil {
			q = m[1]
		}
		out = append(out, expr{where: fmt.Sprintf("dashboard %s variable %q", where, v.Name), query: grafanaVars(q)})
	}
	return out, nil
}

// grafanaVars replaces Grafana's interval macros with a duration so the
// query parses; other variables sit inside label-matcher strings.
func grafanaVars(q string) string {
	return strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h").Replace(q)
}

func metricNames(q string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(q)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			err = fmt.Errorf("selector %s names no metric", vs)
		}
		names = append(names, name)
		return nil
	})
	return names, err
}
