package provider

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	vault "github.com/hashicorp/vault/api"
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
	if spec.Key == "" {
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
		b, err := render(v)
		if err != nil {
			return nil, fmt.Errorf("key %q of %s: %w", spec.Key, spec.Path, err)
		}
		out = b
	}
	if len(out) > MaxSecretBytes {
		return nil, fmt.Errorf("file %s from %s: %w: %d bytes, at most %d", spec.File, spec.Path, ErrTooLarge, len(out), MaxSecretBytes)
	}
	return out, nil
}

// render writes strings as they are, lists of strings (a PKI ca_chain) one
// per line, and anything else as JSON.
func render(v any) ([]byte, error) {
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
