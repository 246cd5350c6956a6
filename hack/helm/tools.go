//go:build tools

// Package helm pins the upstream Helm CLI (helm.sh/helm/v3) used by the chart
// drift test and the e2e suite. It lives in its own module so Helm's
// requirements never enter the driver's go.mod. Build it with
//
//	bash hack/build-tool.sh hack/helm helm helm.sh/helm/v3/cmd/helm
//
// which caches the binary in .cache/tools keyed on this module's go.sum.
package helm

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
