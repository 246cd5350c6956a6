package render

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
)

// Bounds that keep a function from building a large value with no input:
// indent's width and printf's width and precision.
const (
	maxIndent = 256
	maxWidth  = 4096
)

// funcs is the whole function set: hermetic and deterministic (no
// environment, files, network, clock or randomness), and none that
// repeats a string or generates a sequence. secret is nil while parsing.
func funcs(secret, guard any) template.FuncMap {
	if secret == nil {
		secret = func(string, ...string) (map[string]any, error) { return nil, nil }
	}
	if guard == nil {
		guard = func() (string, error) { return "", nil }
	}
	return template.FuncMap{
		funcSecret:    secret,
		funcLoopGuard: guard,
		"printf":      safePrintf,
		"b64enc":      func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		"b64dec":      b64dec,
		"upper":       strings.ToUpper,
		"lower":       strings.ToLower,
		"trim":        strings.TrimSpace,
		"trimPrefix":  func(prefix, s string) string { return strings.TrimPrefix(s, prefix) },
		"trimSuffix":  func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
		"replace":     replace,
		"contains":    func(sub, s string) bool { return strings.Contains(s, sub) },
		"hasPrefix":   func(prefix, s string) bool { return strings.HasPrefix(s, prefix) },
		"hasSuffix":   func(suffix, s string) bool { return strings.HasSuffix(s, suffix) },
		"quote":       strconv.Quote,
		"squote":      func(s string) string { return "'" + s + "'" },
		"join":        join,
		"toJson":      toJSON,
		"indent":      indent,
		"nindent":     func(n int, s string) (string, error) { s, err := indent(n, s); return "\n" + s, err },
		"default":     dflt,
		"pathEscape":  url.PathEscape,
		"queryEscape": url.QueryEscape,
		"urlEscape":   urlEscape,
		"keys":        keys,
	}
}

var errValue = errors.New("bad argument")

func b64dec(s string) (string, error) {
	b, err := Decode(EncodingBase64, []byte(s))
	if err != nil {
		return "", fmt.Errorf("b64dec: %w: the value is not base64", errValue)
	}
	return string(b), nil
}

// replace is sprig's: replace old new s. An empty old would insert new
// between every byte: refused.
func replace(old, new, s string) (string, error) {
	if old == "" {
		return "", fmt.Errorf("replace: %w: the string to replace is empty", errValue)
	}
	return strings.ReplaceAll(s, old, new), nil
}

// join writes a list (such as a PKI ca_chain) with sep between items.
func join(sep string, v any) (string, error) {
	switch l := v.(type) {
	case []string:
		return strings.Join(l, sep), nil
	case []any:
		parts := make([]string, 0, len(l))
		for _, e := range l {
			parts = append(parts, fmt.Sprint(e))
		}
		return strings.Join(parts, sep), nil
	case string:
		return l, nil
	}
	return "", fmt.Errorf("join: %w: not a list", errValue)
}

func toJSON(v any) (string, error) {
	b, err := json.Marshal(v) // map keys sorted: deterministic
	if err != nil {
		return "", fmt.Errorf("toJson: %w", errValue)
	}
	return string(b), nil
}

func indent(n int, s string) (string, error) {
	if n < 0 || n > maxIndent {
		return "", fmt.Errorf("indent: %w: width %d not in 0..%d", errValue, n, maxIndent)
	}
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad), nil
}

// dflt is sprig's default: the given value unless it is empty.
func dflt(d, v any) any {
	switch t := v.(type) {
	case nil:
		return d
	case string:
		if t == "" {
			return d
		}
	case bool:
		if !t {
			return d
		}
	}
	return v
}

// keys lists a map's keys in order.
func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// verbRE finds printf's width and precision ("%08.3f", "%*d").
var verbRE = regexp.MustCompile(`%[-+# 0]*(\*|\d+)?(?:\.(\*|\d+))?`)

// safePrintf is fmt.Sprintf minus widths and precisions that would build
// a large string out of nothing ("%0999999999d").
func safePrintf(format string, args ...any) (string, error) {
	for _, m := range verbRE.FindAllStringSubmatch(format, -1) {
		for _, n := range m[1:] {
			if n == "*" {
				return "", fmt.Errorf("printf: %w: * width is not allowed", errValue)
			}
			if w, err := strconv.Atoi(n); n != "" && (err != nil || w > maxWidth) {
				return "", fmt.Errorf("printf: %w: width or precision over %d", errValue, maxWidth)
			}
		}
	}
	return fmt.Sprintf(format, args...), nil
}

// urlEscape percent-encodes every byte but RFC 3986's unreserved ones, so
// the result is safe in any part of a URL (a password in user:password@).
func urlEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
