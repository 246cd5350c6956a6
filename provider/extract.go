package provider

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	vault "github.com/hashicorp/vault/api"

	"vaultcsi.dev/driver/provider/render"
)

// isKVv2 recognises a KV v2 data read: the path has a data/ segment and the
// response nests the fields under data with a metadata object beside them.
// This costs no extra request, unlike asking Vault for the mount's version.
func isKVv2(path string, s *vault.Secret) bool {
	if !strings.Contains("/"+path, "/data/") || len(s.Data) != 2 {
		return false
	}
	_, hasData := s.Data["data"]
	meta, hasMeta := s.Data["metadata"].(map[string]any)
	if !hasData || !hasMeta {
		return false
	}
	_, hasVersion := meta["version"]
	return hasVersion
}

func kvVersion(s *vault.Secret) int64 {
	meta, _ := s.Data["metadata"].(map[string]any)
	n, _ := toInt64(meta["version"])
	return n
}

func toInt64(v any) (int64, error) {
	switch n := v.(type) {
	case json.Number:
		return n.Int64()
	case float64:
		return int64(n), nil
	case int64:
		return n, nil
	case int:
		return int64(n), nil
	case string:
		return strconv.ParseInt(n, 10, 64)
	}
	return 0, fmt.Errorf("not a number")
}

// fields returns the map a file's key is looked up in.
func fields(s *vault.Secret, info SecretInfo) map[string]any {
	if info.Version > 0 {
		inner, _ := s.Data["data"].(map[string]any)
		return inner
	}
	return s.Data
}

// extract renders one file from its secret: one field, or the whole map as
// JSON. Error messages name the field and path, never the value.
func extract(s *vault.Secret, info SecretInfo, spec SecretSpec) ([]byte, error) {
	m := fields(s, info)
	var out []byte
	if spec.Format != render.FormatNone {
		b, err := produce(spec, m, nil, MaxSecretBytes)
		if err != nil {
			return nil, err
		}
		out = b
	} else if spec.Key == "" {
		b, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("encode %s as JSON: %w", spec.Path, ErrInvalid)
		}
		out = b
	} else {
		v, ok := m[spec.Key]
		if !ok {
			return nil, fmt.Errorf("key %q of %s for file %s: %w: the secret has no such key", spec.Key, spec.Path, spec.File, ErrNotFound)
		}
		b, err := renderValue(v)
		if err != nil {
			return nil, fmt.Errorf("key %q of %s: %w", spec.Key, spec.Path, err)
		}
		if spec.Encoding != render.EncodingNone {
			if _, isString := v.(string); !isString {
				return nil, fmt.Errorf("key %q of %s for file %s: %w: encoding %s needs a string value", spec.Key, spec.Path, spec.File, ErrInvalid, spec.Encoding)
			}
			if b, err = render.Decode(spec.Encoding, b); err != nil {
				return nil, fmt.Errorf("key %q of %s for file %s: encoding %s: %w: %w", spec.Key, spec.Path, spec.File, spec.Encoding, ErrInvalid, err)
			}
		}
		out = b
	}
	if len(out) > MaxSecretBytes {
		return nil, fmt.Errorf("file %s from %s: %w: %d bytes, at most %d", spec.File, spec.Path, ErrTooLarge, len(out), MaxSecretBytes)
	}
	return out, nil
}

// PageSize is the unit tmpfs charges a file in.
const PageSize = 4096

// PageBytes is what a file of n bytes costs on tmpfs: whole pages.
func PageBytes(n int) int64 { return (int64(n) + PageSize - 1) / PageSize * PageSize }

// renderer turns read secrets into a volume's files as each read finishes,
// so a secret's decoded map is dropped as soon as its files are rendered.
// Files of one read that ask for the same key (or the whole map) share one
// rendered copy; each file still costs its pages against the volume limit,
// as on tmpfs, and rendering stops at the first file that passes it.
type renderer struct {
	specs []SecretSpec
	files []File // in spec order; each index is written by one goroutine
	limit int64  // volume bytes in pages; 0: none
	mem   *Reservation

	mu       sync.Mutex
	total    int64 // pages of the files rendered so far
	rendered int64 // bytes charged to mem for rendered copies
}

// renderRead writes the files specs[i] for i in idx, all backed by one read.
func (rd *renderer) renderRead(s *vault.Secret, info SecretInfo, idx []int) error {
	shared := make(map[string][]byte, 1)
	for _, i := range idx {
		spec := rd.specs[i]
		how := spec.Key + "\x00" + string(spec.Encoding) + "\x00" + string(spec.Format)
		data, ok := shared[how]
		if !ok {
			var err error
			if data, err = extract(s, info, spec); err != nil {
				return err
			}
			if err := rd.charge(data); err != nil {
				return fmt.Errorf("file %s from %s: %w", spec.File, spec.Path, err)
			}
			shared[how] = data
		}
		if err := rd.place(i, data); err != nil {
			return err
		}
	}
	return nil
}

// charge holds a rendered copy's bytes against the memory budget until
// refund (the files are written, or the fetch failed).
func (rd *renderer) charge(data []byte) error {
	if err := rd.mem.Charge(int64(len(data))); err != nil {
		return err
	}
	rd.mu.Lock()
	rd.rendered += int64(len(data))
	rd.mu.Unlock()
	return nil
}

// place counts a rendered file's pages against the volume limit and keeps it.
func (rd *renderer) place(i int, data []byte) error {
	spec := rd.specs[i]
	rd.mu.Lock()
	rd.total += PageBytes(len(data))
	total := rd.total
	rd.mu.Unlock()
	if rd.limit > 0 && total > rd.limit {
		return fmt.Errorf("file %s from %s: %w: the volume's files exceed its limit of %d bytes (each file counted in whole %d-byte pages, as tmpfs charges them)",
			spec.File, spec.Path, ErrTooLarge, rd.limit, PageSize)
	}
	rd.files[i] = File{Name: spec.File, Data: data, Mode: spec.Mode}
	return nil
}

// renderComposite renders specs[i], which needs several reads (get), once
// they have all arrived. A template's output is bounded while it is
// written by what is left of the volume limit.
func (rd *renderer) renderComposite(i int, get fieldsOf) error {
	spec := rd.specs[i]
	max := int64(MaxSecretBytes)
	if rd.limit > 0 {
		rd.mu.Lock()
		left := rd.limit - rd.total
		rd.mu.Unlock()
		if left < max {
			max = left
		}
		if max <= 0 {
			return fmt.Errorf("file %s: %w: the volume's files exceed its limit of %d bytes", spec.File, ErrTooLarge, rd.limit)
		}
	}
	var own map[string]any
	if spec.Path != "" {
		var err error
		if own, err = get(render.Ref{Path: spec.Path, Args: spec.Args}); err != nil {
			return err
		}
	}
	data, err := produce(spec, own, get, max)
	if err != nil {
		return err
	}
	if err := rd.charge(data); err != nil {
		return fmt.Errorf("file %s: %w", spec.File, err)
	}
	return rd.place(i, data)
}

// refund gives back the rendered copies' bytes (files not returned).
func (rd *renderer) refund() {
	rd.mu.Lock()
	n := rd.rendered
	rd.rendered = 0
	rd.mu.Unlock()
	rd.mem.Refund(n)
}

// renderValue writes strings as they are, lists of strings (a PKI ca_chain) one
// per line, and anything else as JSON.
func renderValue(v any) ([]byte, error) {
	switch t := v.(type) {
	case string:
		return []byte(t), nil
	case json.Number:
		return []byte(t.String()), nil
	case []any:
		lines := make([]string, 0, len(t))
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return json.Marshal(t)
			}
			lines = append(lines, strings.TrimRight(s, "\n"))
		}
		return []byte(strings.Join(lines, "\n") + "\n"), nil
	}
	return json.Marshal(v)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
