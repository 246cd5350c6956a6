//go:build tools

// Package golangcilint pins golangci-lint v2, which `make lint` runs over the
// driver module. It lives in its own module so the linter's requirements never
// enter the driver's go.mod. Build it with
//
//	bash hack/build-tool.sh hack/golangci-lint golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint
//
// which caches the binary keyed on this module's go.sum.
package golangcilint

import (
	_ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
)
