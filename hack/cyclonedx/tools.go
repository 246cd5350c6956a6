//go:build tools

// Package cyclonedx pins cyclonedx-gomod, which writes the CycloneDX SBOM of
// the driver binary's modules beside the image (hack/image-index.sh). It
// lives in its own module so its requirements never enter the driver's
// go.mod. Build it with
//
//	bash hack/build-tool.sh hack/cyclonedx cyclonedx-gomod github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod
//
// which caches the binary in .cache/tools keyed on this module's go.sum.
package cyclonedx

import (
	_ "github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod"
)
