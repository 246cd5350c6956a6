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
//
// limit bounds every string a function builds (0: no bound): the output
// is counted while it is written, but a value built inside an expression
// (replace "a" <1 MiB> <1 MiB>, printf "%[1]s%[1]s..." x, nested calls
// that each double) is allocated before anything is written. Functions
// that can amplify their input check the size they would build first;
// the others (at most a few times their input) check what they built,
// so that chained calls stay bounded too.
func funcs(secret, guard any, limit int64) template.FuncMap {
	if secret == nil {
		secret = func(string, ...string) (map[string]any, error) { return nil, nil }
	}
	if guard == nil {
		guard = func() (string, error) { return "", nil }
	}
	b := bound(limit)
	return template.FuncMap{
		funcSecret:    secret,
		funcLoopGuard: guard,
		"printf":      b.printf,
		"b64enc":      b.str(func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }),
		"b64dec":      b64dec,
		"upper":       b.str(strings.ToUpper),
		"lower":       b.str(strings.ToLower),
		"trim":        strings.TrimSpace,
		"trimPrefix":  func(prefix, s string) string { return strings.TrimPrefix(s, prefix) },
		"trimSuffix":  func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
		"replace":     b.replace,
		"contains":    func(sub, s string) bool { return strings.Contains(s, sub) },
		"hasPrefix":   func(prefix, s string) bool { return strings.HasPrefix(s, prefix) },
		"hasSuffix":   func(suffix, s string) bool { return strings.HasSuffix(s, suffix) },
		"quote":       b.str(strconv.Quote),
		"squote":      b.str(func(s string) string { return "'" + s + "'" }),
		"join":        b.join,
		"toJson":      b.toJSON,
		"indent":      b.indent,
		"nindent":     func(n int, s string) (string, error) { s, err := b.indent(n, s); return "\n" + s, err },
		"default":     dflt,
		"pathEscape":  b.str(url.PathEscape),
		"queryEscape": b.str(url.QueryEscape),
		"urlEscape":   b.str(urlEscape),
		"keys":        keys,
	}
}

// bound is the largest string a template function may build (0: none).
type bound int64

// check refuses a value of n bytes over the bound, before or after it is built.
func (b bound) check(n int64) error {
	if b > 0 && n > int64(b) {
		return ErrTooLarge
	}
	return nil
}

// str wraps a function that builds at most a few times its input: its
// result is checked, so a chain of them stays within the bound.
func (b bound) str(f func(string) string) func(string) (string, error) {
	return func(s string) (string, error) {
		out := f(s)
		if err := b.check(int64(len(out))); err != nil {
			return "", err
		}
		return out, nil
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
// between every byte: refused. The result's size is known before it is
// built: each occurrence grows it by len(new)-len(old).
func (b bound) replace(old, new, s string) (string, error) {
	if old == "" {
		return "", fmt.Errorf("replace: %w: the string to replace is empty", errValue)
	}
	if grow := int64(len(new)) - int64(len(old)); grow > 0 {
		if err := b.check(int64(len(s)) + int64(strings.Count(s, old))*grow); err != nil {
			return "", err
		}
	}
	return strings.ReplaceAll(s, old, new), nil
}

// join writes a list (such as a PKI ca_chain) with sep between items.
func (b bound) join(sep string, v any) (string, error) {
	var parts []string
	switch l := v.(type) {
	case []string:
		parts = l
	case []any:
		parts = make([]string, 0, len(l))
		size := int64(0)
		for _, e := range l {
			p := fmt.Sprint(e)
			if size += int64(len(p)); b.check(size) != nil {
				return "", ErrTooLarge
			}
			parts = append(parts, p)
		}
	case string:
		return l, nil
	default:
		return "", fmt.Errorf("join: %w: not a list", errValue)
	}
	size := int64(0)
	for _, p := range parts {
		size += int64(len(p))
	}
	if len(parts) > 1 {
		size += int64(len(parts)-1) * int64(len(sep))
	}
	if err := b.check(size); err != nil {
		return "", err
	}
	return strings.Join(parts, sep), nil
}

func (b bound) toJSON(v any) (string, error) {
	out, err := json.Marshal(v) // map keys sorted: deterministic
	if err != nil {
		return "", fmt.Errorf("toJson: %w", errValue)
	}
	if err := b.check(int64(len(out))); err != nil {
		return "", err
	}
	return string(out), nil
}

func (b bound) indent(n int, s string) (string, error) {
	if n < 0 || n > maxIndent {
		return "", fmt.Errorf("indent: %w: width %d not in 0..%d", errValue, n, maxIndent)
	}
	if err := b.check(int64(len(s)) + int64(strings.Count(s, "\n")+1)*int64(n)); err != nil {
		return "", err
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

// verbLetterRE finds each verb's character, past flags, argument indexes,
// width and precision; any character, since fmt prints an argument even
// for a bad verb ("%!\n(string=...)").
var verbLetterRE = regexp.MustCompile(`(?s)%[-+# 0-9.*\[\]]*(.)`)

// printf is fmt.Sprintf minus widths and precisions that would build
// a large string out of nothing ("%0999999999d"), and minus results over
// the bound: explicit argument indexes let one format repeat an argument
// ("%[1]s%[1]s..."), so the size is estimated before formatting: each
// verb prints at most the largest argument (four times it for %q, three
// for %x), its width, and a few bytes of decoration.
func (b bound) printf(format string, args ...any) (string, error) {
	if b > 0 {
		// Arguments no verb uses are printed too ("%!(EXTRA string=...)").
		largest, size := int64(0), int64(len(format))
		for _, a := range args {
			var n int
			switch v := a.(type) {
			case string:
				n = len(v)
			case []byte:
				n = len(v)
			default:
				n = len(fmt.Sprintf("%#v", v)) // what any verb prints, at most
			}
			largest = max(largest, int64(n))
			size += int64(n) + 32
		}
		for _, m := range verbLetterRE.FindAllStringSubmatch(format, -1) {
			factor := int64(1)
			switch m[1] {
			case "q":
				factor = 4
			case "x", "X":
				factor = 3
			}
			size += factor*largest + maxWidth + 32
		}
		if err := b.check(size); err != nil {
			return "", err
		}
	}
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
