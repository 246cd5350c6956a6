package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations on index.json's entry that name the image on import.
const (
	annContainerdName = "io.containerd.image.name"
	annRefName        = "org.opencontainers.image.ref.name"
)

// writeOCI writes an OCI image layout tarball. Its index.json names one
// image index (annotated with the image's name, so `ctr images import`
// names it), which lists one image manifest per platform. anns go on the
// index and on every image manifest. The output is reproducible.
func writeOCI(out, ref string, images []platformImage, anns map[string]string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("--name %q: %w (want repo:tag)", ref, err)
	}
	blobs := map[string][]byte{} // by "sha256:<hex>"
	var adds []mutate.IndexAddendum
	for _, p := range images {
		img := p.img
		if len(anns) > 0 {
			img = mutate.Annotations(img, anns).(v1.Image)
		}
		if err := addImageBlobs(blobs, img); err != nil {
			return fmt.Errorf("%s/%s: %w", p.os, p.arch, err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: p.os, Architecture: p.arch},
		}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	if len(anns) > 0 {
		idx = mutate.Annotations(idx, anns).(v1.ImageIndex)
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	blobs[digest.String()] = raw
	top := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: types.OCIImageIndex, Digest: digest, Size: int64(len(raw)),
			Annotations: map[string]string{
				annContainerdName: containerdName(tag),
				annRefName:        tag.TagStr(),
			},
		}},
	}
	indexJSON, err := json.Marshal(top)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json": indexJSON,
	}
	for d, b := range blobs {
		algo, hex, _ := strings.Cut(d, ":")
		files[path.Join("blobs", algo, hex)] = b
	}
	tmp := out + ".tmp"
	if err := writeTar(tmp, files); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s (%s, index %s, %d platforms)\n", out, ref, digest, len(images))
	return nil
}

// containerdName is the fully qualified name containerd and kubelet use:
// docker.io/library/NAME:TAG for a short name.
func containerdName(t name.Tag) string {
	reg := t.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + t.RepositoryStr() + ":" + t.TagStr()
}

// addImageBlobs adds an image's manifest, config and (compressed) layers.
func addImageBlobs(blobs map[string][]byte, img v1.Image) error {
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	blobs[d.String()] = raw
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cd, err := img.ConfigName()
	if err != nil {
		return err
	}
	blobs[cd.String()] = cfg
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		blobs[ld.String()] = b
	}
	return nil
}

// writeTar writes files (and their parent directories) sorted by path,
// owned by root, with the epoch as every time.
func writeTar(out string, files map[string][]byte) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	dirs := map[string]bool{}
	for p := range files {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			dirs[d+"/"] = true
		}
	}
	var names []string
	for p := range files {
		names = append(names, p)
	}
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	tw := tar.NewWriter(f)
	for _, n := range names {
		h := &tar.Header{Name: n, Mode: 0o644, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(files[n]))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, bytes.NewReader(files[n])); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
