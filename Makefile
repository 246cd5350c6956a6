# vault-csi-driver. `make demo` and `make test` work on a fresh machine of
# this kind (Debian, Go, root): everything they need is built here and cached
# under .cache/ (git-ignored), keyed on each tool module's go.sum.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
VAULT := .cache/tools/vault

.PHONY: all build vault helm deps demo test unit e2e e2e-kind manifests lint bench bench-go fuzz clean cluster-build cluster-up cluster-up-cp cluster-down

all: build

build: bin/vault-csi-driver

bin/vault-csi-driver: $(shell find cmd driver provider -name '*.go' -not -name '*_test.go') go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/vault-csi-driver

# The Vault server for tests (BUSL-1.1: built for tests, never shipped).
# The first build takes 10-15 minutes on 2 cores; later runs reuse the cache.
vault:
	@bash hack/build-tool.sh hack/vault vault >/dev/null

demo: build vault
	@$(GO) run ./hack/demo

# Static checks: gofmt, golangci-lint v2 (.golangci.yml; built from
# hack/golangci-lint and cached like the other tools), shellcheck over the
# scripts (Debian's package, installed by `make deps`) and a go.mod that
# `go mod tidy` would not change.
GOLANGCI := .cache/tools/golangci-lint
lint: deps
	@bash hack/build-tool.sh hack/golangci-lint golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint >/dev/null
	@out=$$(gofmt -l cmd driver provider hack/demo e2e 2>/dev/null); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GOLANGCI) run ./...
	shellcheck -x $$(git ls-files '*.sh') .ci/run
	$(GO) mod tidy -diff
	@echo "lint: clean"

# Unit and integration tests: real Vault on 127.0.0.1, real tmpfs mounts
# (needs root), the driver binary over its unix socket, csi-sanity.
unit: vault helm deps cluster-build
	$(GO) test -count=1 -timeout 30m ./...
	@# csi-sanity's spec counts, visible in CI's log (go test hides passing output).
	@set -o pipefail; $(GO) test -count=1 -run '^TestSanity$$' -v ./driver/ | grep -E '^(csi-sanity|  passed)'


# The helm CLI (wrapper module hack/helm), for chart tests and e2e.
helm:
	@bash hack/build-tool.sh hack/helm helm helm.sh/helm/v3/cmd/helm >/dev/null

# Regenerate manifests/ from the chart (a test fails when they drift).
manifests: helm
	bash hack/manifests.sh

# End to end on a real local Kubernetes node (no Docker): Helm-installed
# driver, Vault kubernetes auth with real TokenReviews, real pods.
e2e:
	bash hack/e2e.sh

# The same suite on kind (needs a Docker engine; cannot run on these machines).
e2e-kind:
	bash hack/e2e-kind.sh

# Debian packages the tests use (PostgreSQL for the database secrets engine).
deps:
	@bash hack/install-deps.sh

# A real local Kubernetes v1.35.4 node (no Docker): see hack/cluster/README.md.
cluster-build:
	@bash hack/k8s/build.sh >/dev/null
cluster-up:
	bash hack/cluster/up.sh
cluster-up-cp:
	bash hack/cluster/up.sh --control-plane
cluster-down:
	bash hack/cluster/down.sh

test: lint unit e2e

# Load generator speaking CSI as kubelet does (cmd/vault-csi-bench): cold
# publish, throughput, re-publish, rotation, unpublish; Vault requests from
# Vault's own metrics; driver RSS and CPU. A short set, under a minute here.
bench: build vault
	$(GO) run ./cmd/vault-csi-bench --short --json bench-results.json

# The Go benchmarks (through the driver binary, and in-process for pprof).
bench-go: build vault
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./driver/

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 60s ./driver/attributes/

clean:
	rm -rf bin
