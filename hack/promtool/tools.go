//go:build tools

// Package promtool pins Prometheus's promtool, which runs the chart's alert
// rule tests (`promtool test rules`). The module also holds promql-names
// (./promql-names), which lists the metrics the chart's rules and dashboard
// query, with Prometheus's own PromQL parser. Both stay out of the driver's
// go.mod. Build them with
//
//	bash hack/build-tool.sh hack/promtool promtool github.com/prometheus/prometheus/cmd/promtool
//	bash hack/build-tool.sh hack/promtool promql-names ./promql-names
//
// which cache the binaries in .cache/tools keyed on this module's go.sum.
package promtool

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
