// Command image assembles a single-layer container image from local files and writes it
// as a docker-archive tarball (the `docker save` layout: manifest.json, config, layers)
// and/or as an OCI image layout tarball holding an image index with one image per
// platform, without Docker or a registry. Both load with `ctr -n k8s.io images import`
// and `kind load image-archive`.
//
//	go run . --name busybox:1.35 --name busybox:latest \
//	  --file /bin/busybox=/bin/busybox:0755 --symlink /bin/sh=busybox \
//	  --entrypoint /bin/sh --out busybox.tar
//
//	go run . --name vault-csi-driver:0.1.0 --platform linux/amd64 --platform linux/arm64 \
//	  --file 'bin/{os}-{arch}/vault-csi-driver=/vault-csi-driver:0755' \
//	  --annotation org.opencontainers.image.version=0.1.0 --oci vault-csi-driver.oci.tar
//
// In --file sources, {os} and {arch} stand for each platform's.
// Flags that take a command (--entrypoint, --cmd) accept a JSON array or a
// whitespace-separated string. The output is reproducible: every timestamp is the
// epoch and every file is owned by 0:0 unless --owner says otherwise.
package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fset := flag.NewFlagSet("image", flag.ContinueOnError)
	var names, files, symlinks, dirs, envs, labels, annotations, platforms list
	fset.Var(&names, "name", "image reference name:tag (repeatable; the first is the main name)")
	fset.Var(&files, "file", "SRC=DST[:MODE] copy a local file (or directory, recursively) to DST in the image; MODE is octal (repeatable)")
	fset.Var(&symlinks, "symlink", "DST=TARGET create a symlink DST pointing at TARGET (repeatable)")
	fset.Var(&dirs, "dir", "DST[:MODE] create an empty directory (repeatable), e.g. /tmp:1777")
	fset.Var(&envs, "env", "KEY=VALUE environment variable (repeatable)")
	fset.Var(&labels, "label", "KEY=VALUE image label (repeatable)")
	fset.Var(&annotations, "annotation", "KEY=VALUE OCI annotation on the index and each image manifest (repeatable; --oci only)")
	entrypoint := fset.String("entrypoint", "", "entrypoint: JSON array or whitespace-separated words")
	cmd := fset.String("cmd", "", "default arguments: JSON array or whitespace-separated words")
	workdir := fset.String("workdir", "/", "working directory")
	user := fset.String("user", "", "user[:group] the container runs as")
	owner := fset.String("owner", "0:0", "UID:GID owning every file in the layer")
	fset.Var(&platforms, "platform", "OS/ARCH of an image (repeatable; default linux/"+runtime.GOARCH+")")
	out := fset.String("out", "", "docker-archive tarball to write (one platform only)")
	oci := fset.String("oci", "", "OCI image layout tarball to write: an image index with every platform")
	fset.Usage = func() {
		fmt.Fprintln(fset.Output(), "usage: image --name NAME:TAG {--out FILE.tar | --oci FILE.tar} [--file SRC=DST[:MODE]]... [--entrypoint CMD] [flags]")
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		return err
	}
	if len(names) == 0 || *out == "" && *oci == "" || fset.NArg() != 0 {
		fset.Usage()
		return fmt.Errorf("--name and --out or --oci are required; no positional arguments")
	}
	if len(platforms) == 0 {
		platforms = list{"linux/" + runtime.GOARCH}
	}
	if *out != "" && len(platforms) != 1 {
		return fmt.Errorf("--out writes one platform's image; use --oci for %d platforms", len(platforms))
	}
	uid, gid, err := parseOwner(*owner)
	if err != nil {
		return err
	}
	anns, err := keyValues("--annotation", annotations)
	if err != nil {
		return err
	}
	spec := imageSpec{uid: uid, gid: gid, dirs: dirs, files: files, symlinks: symlinks, envs: envs, labels: labels,
		entrypoint: *entrypoint, cmd: *cmd, workdir: *workdir, user: *user}
	var images []platformImage
	for _, p := range platforms {
		osName, arch, ok := strings.Cut(p, "/")
		if !ok || osName == "" || arch == "" {
			return fmt.Errorf("--platform %q: want OS/ARCH", p)
		}
		img, n, err := spec.build(osName, arch, *oci != "")
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		images = append(images, platformImage{os: osName, arch: arch, img: img, entries: n})
	}
	if *oci != "" {
		if err := writeOCI(*oci, names[0], images, anns); err != nil {
			return err
		}
	}
	if *out == "" {
		return nil
	}
	img := images[0].img
	refs := map[name.Reference]v1.Image{}
	for _, n := range names {
		tag, err := name.NewTag(n)
		if err != nil {
			return fmt.Errorf("--name %q: %w (want repo:tag)", n, err)
		}
		refs[tag] = img
	}
	tmp := *out + ".tmp"
	if err := tarball.MultiRefWriteToFile(tmp, refs); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", *out, err)
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	id, _ := img.ConfigName()
	fmt.Fprintf(os.Stderr, "wrote %s (%s, id %s, %d entries)\n", *out, strings.Join(names, ", "), id, images[0].entries)
	return nil
}

// imageSpec is what every platform's image is made of.
type imageSpec struct {
	uid, gid                            int
	dirs, files, symlinks, envs, labels list
	entrypoint, cmd, workdir, user      string
}

type platformImage struct {
	os, arch string
	img      v1.Image
	entries  int
}

// build makes the image of one platform: {os} and {arch} in --file sources
// are that platform's. With oci, every media type is OCI's.
func (sp imageSpec) build(osName, arch string, oci bool) (v1.Image, int, error) {
	expand := strings.NewReplacer("{os}", osName, "{arch}", arch)
	l := &layerBuilder{uid: sp.uid, gid: sp.gid, entries: map[string]*entry{}}
	for _, d := range sp.dirs {
		dst, mode, err := splitMode(d, 0o755)
		if err != nil {
			return nil, 0, fmt.Errorf("--dir %q: %w", d, err)
		}
		if err := l.addDir(dst, mode); err != nil {
			return nil, 0, err
		}
	}
	for _, f := range sp.files {
		src, rest, ok := strings.Cut(f, "=")
		if !ok || src == "" {
			return nil, 0, fmt.Errorf("--file %q: want SRC=DST[:MODE]", f)
		}
		dst, mode, err := splitMode(rest, 0)
		if err != nil {
			return nil, 0, fmt.Errorf("--file %q: %w", f, err)
		}
		if err := l.addPath(expand.Replace(src), dst, mode); err != nil {
			return nil, 0, err
		}
	}
	for _, s := range sp.symlinks {
		dst, target, ok := strings.Cut(s, "=")
		if !ok || dst == "" || target == "" {
			return nil, 0, fmt.Errorf("--symlink %q: want DST=TARGET", s)
		}
		if err := l.addSymlink(dst, target); err != nil {
			return nil, 0, err
		}
	}
	layerTar, err := l.tar()
	if err != nil {
		return nil, 0, err
	}
	var lopts []tarball.LayerOption
	if oci {
		lopts = append(lopts, tarball.WithMediaType(types.OCILayer))
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, lopts...)
	if err != nil {
		return nil, 0, fmt.Errorf("layer: %w", err)
	}

	cfg := v1.Config{
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		WorkingDir: sp.workdir,
		User:       sp.user,
	}
	for _, e := range sp.envs {
		if !strings.Contains(e, "=") {
			return nil, 0, fmt.Errorf("--env %q: want KEY=VALUE", e)
		}
		cfg.Env = setEnv(cfg.Env, e)
	}
	if len(sp.labels) > 0 {
		if cfg.Labels, err = keyValues("--label", sp.labels); err != nil {
			return nil, 0, err
		}
	}
	if cfg.Entrypoint, err = words(sp.entrypoint); err != nil {
		return nil, 0, fmt.Errorf("--entrypoint: %w", err)
	}
	if cfg.Cmd, err = words(sp.cmd); err != nil {
		return nil, 0, fmt.Errorf("--cmd: %w", err)
	}

	base := empty.Image
	if oci {
		base = mutate.ConfigMediaType(mutate.MediaType(base, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{CreatedBy: "vaultcsi.dev/hack/image", Created: v1.Time{Time: time.Unix(0, 0).UTC()}},
	})
	if err != nil {
		return nil, 0, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, 0, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = osName, arch
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config = cfg
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, 0, err
	}
	return img, len(l.entries), nil
}

// keyValues parses KEY=VALUE flags.
func keyValues(flagName string, kvs list) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", flagName, kv)
		}
		m[k] = v
	}
	return m, nil
}

// entry is one tar entry of the layer; body is read from src at write time.
type entry struct {
	hdr tar.Header
	src string
}

type layerBuilder struct {
	uid, gid int
	entries  map[string]*entry // by clean path without leading slash
}

func clean(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("image path %q must be absolute", p)
	}
	c := strings.TrimPrefix(path.Clean(p), "/")
	if c == "" {
		return "", fmt.Errorf("image path %q names the root", p)
	}
	return c, nil
}

func (l *layerBuilder) header(name string, typ byte, mode int64) tar.Header {
	return tar.Header{
		Name: name, Typeflag: typ, Mode: mode,
		Uid: l.uid, Gid: l.gid, ModTime: time.Unix(0, 0), Format: tar.FormatPAX,
	}
}

func (l *layerBuilder) put(e *entry) error {
	if old, ok := l.entries[e.hdr.Name]; ok {
		if old.hdr.Typeflag == tar.TypeDir && e.hdr.Typeflag == tar.TypeDir {
			if e.hdr.Mode != 0o755 {
				old.hdr.Mode = e.hdr.Mode
			}
			return nil
		}
		return fmt.Errorf("/%s given twice", e.hdr.Name)
	}
	for d := path.Dir(e.hdr.Name); d != "." && d != "/"; d = path.Dir(d) {
		if p, ok := l.entries[d]; ok {
			if p.hdr.Typeflag != tar.TypeDir {
				return fmt.Errorf("/%s: parent /%s is not a directory", e.hdr.Name, d)
			}
			continue
		}
		h := l.header(d, tar.TypeDir, 0o755)
		l.entries[d] = &entry{hdr: h}
	}
	l.entries[e.hdr.Name] = e
	return nil
}

func (l *layerBuilder) addDir(dst string, mode fs.FileMode) error {
	c, err := clean(dst)
	if err != nil {
		return err
	}
	return l.put(&entry{hdr: l.header(c, tar.TypeDir, tarMode(mode))})
}

func (l *layerBuilder) addSymlink(dst, target string) error {
	c, err := clean(dst)
	if err != nil {
		return err
	}
	h := l.header(c, tar.TypeSymlink, 0o777)
	h.Linkname = target
	return l.put(&entry{hdr: h})
}

// addPath adds the file or directory tree at src as dst. A non-zero mode overrides the
// permission bits of a single file (for a directory tree it applies to regular files).
func (l *layerBuilder) addPath(src, dst string, mode fs.FileMode) error {
	c, err := clean(dst)
	if err != nil {
		return err
	}
	fi, err := os.Stat(src) // follow a symlink given on the command line
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return l.addFile(src, c, fi, mode)
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := path.Join(c, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return l.put(&entry{hdr: l.header(target, tar.TypeDir, tarMode(info.Mode()))})
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			h := l.header(target, tar.TypeSymlink, 0o777)
			h.Linkname = link
			return l.put(&entry{hdr: h})
		case info.Mode().IsRegular():
			return l.addFile(p, target, info, mode)
		default:
			return fmt.Errorf("%s: unsupported file type %v", p, info.Mode().Type())
		}
	})
}

func (l *layerBuilder) addFile(src, c string, fi fs.FileInfo, mode fs.FileMode) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", src)
	}
	m := fi.Mode()
	if mode != 0 {
		m = mode
	}
	h := l.header(c, tar.TypeReg, tarMode(m))
	h.Size = fi.Size()
	return l.put(&entry{hdr: h, src: src})
}

// tar writes the entries sorted by path, so parents precede children and the output is stable.
func (l *layerBuilder) tar() ([]byte, error) {
	keys := make([]string, 0, len(l.entries))
	for k := range l.entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, k := range keys {
		e := l.entries[k]
		h := e.hdr
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		f, err := os.Open(e.src)
		if err != nil {
			return nil, err
		}
		n, err := io.Copy(tw, f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.src, err)
		}
		if n != h.Size {
			return nil, fmt.Errorf("%s changed size while being read", e.src)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tarMode keeps the permission, setuid/setgid and sticky bits in tar's encoding.
func tarMode(m fs.FileMode) int64 {
	r := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		r |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		r |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		r |= 0o1000
	}
	return r
}

// splitMode splits "DST[:MODE]" where MODE is octal (e.g. 0755, 1777).
func splitMode(s string, def fs.FileMode) (string, fs.FileMode, error) {
	dst, m, ok := strings.Cut(s, ":")
	if dst == "" {
		return "", 0, fmt.Errorf("empty destination")
	}
	if !ok {
		return dst, def, nil
	}
	v, err := strconv.ParseUint(m, 8, 32)
	if err != nil || v > 0o7777 {
		return "", 0, fmt.Errorf("mode %q is not an octal permission", m)
	}
	mode := fs.FileMode(v & 0o777)
	if v&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if v&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if v&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return dst, mode, nil
}

func parseOwner(s string) (int, int, error) {
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("--owner %q: want numeric UID:GID", s)
	}
	return uid, gid, nil
}

func words(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if strings.HasPrefix(s, "[") {
		var w []string
		if err := json.Unmarshal([]byte(s), &w); err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		return w, nil
	}
	return strings.Fields(s), nil
}

func setEnv(env []string, kv string) []string {
	k, _, _ := strings.Cut(kv, "=")
	for i, e := range env {
		if strings.HasPrefix(e, k+"=") {
			env[i] = kv
			return env
		}
	}
	return append(env, kv)
}
