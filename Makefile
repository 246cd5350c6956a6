# vault-csi-driver. `make demo` and `make test` work on a fresh machine of
# this kind (Debian, Go, root): everything they need is built here and cached
# under .cache/ (git-ignored), keyed on each tool module's go.sum.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
VAULT := .cache/tools/vault

.PHONY: all build vault helm deps demo test unit unit-fast soak ops-check ops-tools image chart-docs e2e e2e-kind manifests lint bench bench-full bench-go fuzz clean cluster-build cluster-up cluster-up-cp cluster-down

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
	@out=$$(gofmt -l cmd driver provider hack/demo hack/chartdoc e2e 2>/dev/null); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GOLANGCI) run ./...
	shellcheck -x $$(git ls-files '*.sh') .ci/run
	$(GO) mod tidy -diff
	@echo "lint: clean"

# Unit and integration tests: real Vault on 127.0.0.1, real tmpfs mounts
# (needs root), the driver binary over its unix socket, csi-sanity.
# hack/unit.sh: one control plane shared by every package that needs an API
# server; a test whose real part (root, Vault, PostgreSQL, the Kubernetes
# binaries) is missing fails here instead of skipping.
unit: vault helm deps cluster-build
	bash hack/unit.sh -skip '^TestOps'
	@# csi-sanity's spec counts, visible in CI's log (go test hides passing output).
	@set -o pipefail; $(GO) test -count=1 -run '^TestSanity$$' -v ./driver/ | grep -E '^(csi-sanity|  passed)'


# The churn soak at full size (issue 13): 1,000 volumes (KV and database
# leases) published and unpublished in waves through the driver binary against
# a 3-node Vault cluster over TLS, with a leader kill -9 and a full-cluster
# restart mid-wave; then zero mounts, state records, tokens and leases, and the
# driver's RSS within 10% of its start. `make unit` runs the same soak with
# 100 volumes (TestVaultHA/ChurnSoak).
soak: vault deps
	VCD_SOAK_VOLUMES=1000 VCD_REQUIRE_PARTS=1 $(GO) test -count=1 -timeout 60m -run '^TestVaultHA$$/^ChurnSoak$$' -v ./driver/

# The inner loop: every pure test (parsing, policy, planner, writer, ...)
# in seconds, no Vault, no cluster; tests that need a real part skip and
# say so. See CONTRIBUTING.md.
unit-fast:
	$(GO) test -short -count=1 ./...

# The operations pack (issue 14): promtool's tests of the chart's alerts, every metric
# the alerts and the dashboard use checked against the real driver's /metrics after a
# publish, the multi-platform image index and its SBOMs, and the chart checks
# (monitoring objects rendered, packaged chart, generated values table). The TestOps*
# tests; `unit` skips them so they run once.
ops-check: vault helm ops-tools
	VCD_REQUIRE_PARTS=1 $(GO) test -count=1 -timeout 20m -run '^TestOps' ./driver/ ./e2e/ ./hack/chartdoc/

# promtool and promql-names (hack/promtool), cyclonedx-gomod (hack/cyclonedx): test
# tools built from their own modules and cached in .cache/tools (minutes the first time).
ops-tools:
	@bash hack/build-tool.sh hack/promtool promtool github.com/prometheus/prometheus/cmd/promtool >/dev/null
	@bash hack/build-tool.sh hack/promtool promql-names ./promql-names >/dev/null
	@bash hack/build-tool.sh hack/cyclonedx cyclonedx-gomod github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod >/dev/null

# The image without Docker: an OCI image index for linux/amd64 and linux/arm64 and a
# CycloneDX SBOM per platform, in .cache/images (hack/image-index.sh).
image:
	bash hack/image-index.sh

# Regenerate the values table of the chart's README (a test fails when it drifts).
chart-docs:
	$(GO) run ./hack/chartdoc

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

# The same suite on kind: our own dockerd (Debian's docker.io) and a node image
# built here offline (hack/kind/), Vault as a pod; VCD_KIND_STOCK=1 uses your own
# Docker and stock kind images. Never beside the local cluster:
# flock /tmp/vcd-cluster.lock make e2e-kind
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

test: lint unit ops-check e2e e2e-kind

# Load generator speaking CSI as kubelet does (cmd/vault-csi-bench): cold
# publish, throughput, re-publish, rotation, unpublish; Vault requests from
# Vault's own metrics; driver RSS and CPU. A short set, under a minute here.
# Every cold row shows a floor beside it: a plain Go client's login + the
# same reads, through the same path.
bench: build vault
	$(GO) run ./cmd/vault-csi-bench --short --json bench-results.json

# The matrix the README's performance table comes from: both auth methods
# (kubernetes: a control plane of the bench's own and a TokenReview per
# login), Vault 0, 5 and 20 ms away (a proxy in the bench), 1/3/10 secrets,
# each against its floor; the driver's CPU per publish, re-publish and
# rotation. About 6 minutes on 2 cores.
BENCH_FULL = --vault-latency 0,5ms,20ms --secrets 1,3,10 --scenarios cold,republish,rotation --volumes 200 --iterations 100
bench-full: build vault
	@bash hack/k8s/build.sh >/dev/null
	$(GO) run ./cmd/vault-csi-bench --auth jwt $(BENCH_FULL) --json bench-full-jwt.json
	$(GO) run ./cmd/vault-csi-bench --auth kubernetes $(BENCH_FULL) --json bench-full-kubernetes.json

# The Go benchmarks (through the driver binary, and in-process for pprof).
bench-go: build vault
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./driver/

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 60s ./driver/attributes/
	$(GO) test -run '^$$' -fuzz FuzzConnection -fuzztime 60s ./driver/unaryserver/

clean:
	rm -rf bin
