package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ociDescriptor, ociIndex and ociManifest are the OCI image-spec documents.
type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

type ociIndex struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	Manifests     []ociDescriptor   `json:"manifests"`
	Annotations   map[string]string `json:"annotations"`
}

type ociManifest struct {
	MediaType   string            `json:"mediaType"`
	Config      ociDescriptor     `json:"config"`
	Layers      []ociDescriptor   `json:"layers"`
	Annotations map[string]string `json:"annotations"`
}

// The OCI annotations every image and the index must carry (issue 14).
var requiredAnnotations = []string{
	"org.opencontainers.image.source", "org.opencontainers.image.version",
	"org.opencontainers.image.revision", "org.opencontainers.image.licenses",
}

// ELF machine of the driver binary per architecture.
var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// hack/image-index.sh builds an OCI image index for linux/amd64 and
// linux/arm64: each platform's config names its architecture, its layer
// holds a driver binary for that machine, the OCI annotations are set, and
// a CycloneDX SBOM beside it lists every module the binary was built from.
func TestOpsImageIndex(t *testing.T) {
	root := repoRoot(t)
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(root, "hack/image-index.sh"), out)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VERSION=v0.0.0-test", "IMAGE_TAG=test", "IMAGE_SOURCE=https://example.invalid/vault-csi-driver")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/image-index.sh: %v\n%s", err, stderr.String())
	}
	tarPath := strings.TrimSpace(string(stdout))
	files := readTar(t, tarPath)
	blob := func(d ociDescriptor) []byte {
		t.Helper()
		b, ok := files["blobs/"+strings.Replace(d.Digest, ":", "/", 1)]
		if !ok || int64(len(b)) != d.Size {
			t.Fatalf("blob %s: present %v, %d bytes, descriptor says %d", d.Digest, ok, len(b), d.Size)
		}
		return b
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	var top ociIndex
	mustJSON(t, files["index.json"], &top)
	if len(top.Manifests) != 1 || top.Manifests[0].MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("index.json must name one image index: %+v", top.Manifests)
	}
	if n := top.Manifests[0].Annotations["io.containerd.image.name"]; n != "docker.io/library/vault-csi-driver:test" {
		t.Errorf("image name for import = %q", n)
	}
	var idx ociIndex
	mustJSON(t, blob(top.Manifests[0]), &idx)
	checkAnnotations(t, "index", idx.Annotations)

	platforms := map[string]bool{}
	for _, m := range idx.Manifests {
		if m.Platform == nil || m.MediaType != "application/vnd.oci.image.manifest.v1+json" {
			t.Fatalf("index entry %+v", m)
		}
		p := m.Platform.OS + "/" + m.Platform.Architecture
		platforms[p] = true
		var man ociManifest
		mustJSON(t, blob(m), &man)
		checkAnnotations(t, p+" manifest", man.Annotations)
		var cfg struct {
			OS           string `json:"os"`
			Architecture string `json:"architecture"`
			Config       struct {
				Entrypoint []string          `json:"Entrypoint"`
				Labels     map[string]string `json:"Labels"`
			} `json:"config"`
		}
		mustJSON(t, blob(man.Config), &cfg)
		if cfg.OS != m.Platform.OS || cfg.Architecture != m.Platform.Architecture {
			t.Errorf("%s: config says %s/%s", p, cfg.OS, cfg.Architecture)
		}
		checkAnnotations(t, p+" config labels", cfg.Config.Labels)
		if strings.Join(cfg.Config.Entrypoint, " ") != "/vault-csi-driver" {
			t.Errorf("%s: entrypoint %v", p, cfg.Config.Entrypoint)
		}
		if len(man.Layers) != 1 {
			t.Fatalf("%s: %d layers", p, len(man.Layers))
		}
		layer := blob(man.Layers[0])
		bin := layerFile(t, layer, "vault-csi-driver")
		ef, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("%s: /vault-csi-driver is not ELF: %v", p, err)
		}
		if want := elfMachine[m.Platform.Architecture]; ef.Machine != want {
			t.Errorf("%s: binary is for %v, want %v", p, ef.Machine, want)
		}
		size := int64(len(layer)) + man.Config.Size + m.Size
		t.Logf("%s: image %.1f MiB compressed (layer %d bytes, config %d, manifest %d), binary %.1f MiB",
			p, float64(size)/(1<<20), len(layer), man.Config.Size, m.Size, float64(len(bin))/(1<<20))
		checkSBOM(t, filepath.Join(out, fmt.Sprintf("vault-csi-driver-test.%s-%s.cdx.json", m.Platform.OS, m.Platform.Architecture)), bin)
	}
	if len(platforms) != 2 || !platforms["linux/amd64"] || !platforms["linux/arm64"] {
		t.Errorf("platforms %v, want linux/amd64 and linux/arm64", platforms)
	}
}

func checkAnnotations(t *testing.T, where string, m map[string]string) {
	t.Helper()
	for _, k := range requiredAnnotations {
		if m[k] == "" {
			t.Errorf("%s: no %s (have %v)", where, k, m)
		}
	}
	if m["org.opencontainers.image.version"] != "v0.0.0-test" || m["org.opencontainers.image.licenses"] != "Apache-2.0" {
		t.Errorf("%s: version %q, licenses %q", where, m["org.opencontainers.image.version"], m["org.opencontainers.image.licenses"])
	}
}

// checkSBOM: a CycloneDX document whose components are exactly the modules
// in the binary's build information.
func checkSBOM(t *testing.T, path string, bin []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("SBOM beside the image: %v", err)
	}
	var bom struct {
		BOMFormat   string `json:"bomFormat"`
		SpecVersion string `json:"specVersion"`
		Metadata    struct {
			Component struct {
				Name    string `json:"name"`
				Version string `json:"version"`
			} `json:"component"`
		} `json:"metadata"`
		Components []struct {
			Name    string `json:"name"`
			Version string `json:"version"`
			PURL    string `json:"purl"`
		} `json:"components"`
	}
	mustJSON(t, b, &bom)
	if bom.BOMFormat != "CycloneDX" || bom.SpecVersion == "" || bom.Metadata.Component.Name != "vaultcsi.dev/driver" {
		t.Errorf("%s: format %q %q, component %+v", filepath.Base(path), bom.BOMFormat, bom.SpecVersion, bom.Metadata.Component)
	}
	tmp := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(tmp, bin, 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := buildinfo.ReadFile(tmp)
	if err != nil {
		t.Fatal(err)
	}
	inSBOM := map[string]bool{}
	for _, c := range bom.Components {
		inSBOM["pkg:golang/"+c.Name+"@"+c.Version] = true
	}
	missing := 0
	for _, d := range info.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		if !inSBOM["pkg:golang/"+m.Path+"@"+m.Version] {
			missing++
			t.Errorf("%s: module %s@%s of the binary is not in the SBOM", filepath.Base(path), m.Path, m.Version)
		}
	}
	if len(info.Deps) == 0 || len(bom.Components) < len(info.Deps) {
		t.Errorf("%s: %d components for %d modules", filepath.Base(path), len(bom.Components), len(info.Deps))
	}
	t.Logf("%s: %d components, the binary's %d modules all listed (%d missing)", filepath.Base(path), len(bom.Components), len(info.Deps), missing)
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v in %.200s", err, b)
	}
}

// readTar returns the regular files of a tarball by name.
func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if files[h.Name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// layerFile returns one file of a gzipped layer.
func layerFile(t *testing.T, layer []byte, name string) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the layer: %v", name, err)
		}
		if strings.TrimPrefix(h.Name, "/") == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}
