package render

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/template"
)

// Bounds on one template.
const (
	MaxTemplateBytes = 16 << 10
	// MaxRefs bounds the distinct secrets one template reads.
	MaxRefs = 32
	// maxRangeDepth bounds nested range loops: each level multiplies the
	// work by the length of a list, and a loop with no output is not
	// stopped by the output limit.
	maxRangeDepth = 2
)

// funcSecret is the template function that names a Vault read.
const funcSecret = "secret"

// funcLoopGuard is called first in every range body (Parse puts it there)
// and fails the execution after maxIterations: a nested range over large
// lists writes nothing, so the output limit would never stop it.
const (
	funcLoopGuard = "vcdLoopGuard"
	maxIterations = 100_000
)

// Ref is one Vault read a template names: secret "path" ["k=v" ...].
type Ref struct {
	Path string
	Args map[string]string // nil: a plain read
}

// Template is a parsed, checked template. It is safe for concurrent use.
type Template struct {
	t    *template.Template
	Refs []Ref // in the order the template first names them, distinct
}

// Lookup returns the fields of a secret the template named.
type Lookup func(Ref) (map[string]any, error)

// Parse checks src and finds every secret it reads. Only literal strings
// may name a path or an arg; define, template and block (recursion), call,
// range over anything but data, and deeper nesting of range are refused.
func Parse(name, src string) (*Template, error) {
	if len(src) > MaxTemplateBytes {
		return nil, fmt.Errorf("%w: %d bytes; at most %d", ErrInvalid, len(src), MaxTemplateBytes)
	}
	if strings.TrimSpace(src) == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalid)
	}
	t, err := template.New(name).Option("missingkey=error").Funcs(funcs(nil, nil, 0)).Parse(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, parseMsg(err))
	}
	if len(t.Templates()) > 1 {
		return nil, fmt.Errorf("%w: define and block are not allowed (one template per file)", ErrInvalid)
	}
	w := &walker{src: src, seen: map[string]bool{}}
	if err := w.node(t.Root, 0); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(w.refs) == 0 {
		return nil, fmt.Errorf("%w: reads no secret (use secret \"<path>\")", ErrInvalid)
	}
	if err := guardRanges(w.ranges); err != nil {
		return nil, err
	}
	return &Template{t: t, Refs: w.refs}, nil
}

// parseMsg drops text/template's "template: name:" prefix, keeping line:col.
func parseMsg(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "template: ")
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return msg
}

// RefKey identifies a read: its path and its args in a stable order.
func RefKey(r Ref) string {
	var b strings.Builder
	b.WriteString(r.Path)
	for _, k := range sortedKeys(r.Args) {
		fmt.Fprintf(&b, "\x00%s=%s", k, r.Args[k])
	}
	return b.String()
}

var errLoops = errors.New("too many iterations")

// missingKeyRE finds the key in text/template's missingkey=error message.
var missingKeyRE = regexp.MustCompile(`map has no entry for key "((?:[^"\\]|\\.)*)"`)

// Execute renders the template into at most max bytes (0: no bound),
// reading secrets through get. The output is counted while it is written,
// so a template cannot build a file larger than max in memory.
func (t *Template) Execute(get Lookup, max int64) ([]byte, error) {
	fields := map[string]map[string]any{}
	var order []Ref
	secret := func(path string, args ...string) (map[string]any, error) {
		ref := Ref{Path: path}
		for _, a := range args {
			k, v, _ := strings.Cut(a, "=")
			if ref.Args == nil {
				ref.Args = map[string]string{}
			}
			ref.Args[k] = v
		}
		key := RefKey(ref)
		if m, ok := fields[key]; ok {
			return m, nil
		}
		m, err := get(ref)
		if err != nil {
			return nil, err
		}
		fields[key] = m
		order = append(order, ref)
		return m, nil
	}
	clone, err := t.t.Clone()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	iterations := 0
	guard := func() (string, error) {
		if iterations++; iterations > maxIterations {
			return "", errLoops
		}
		return "", nil
	}
	clone.Funcs(funcs(secret, guard, max))
	w := &limitWriter{max: max}
	if err := clone.Execute(w, nil); err != nil {
		if errors.Is(err, ErrTooLarge) {
			return nil, ErrTooLarge
		}
		if errors.Is(err, errLoops) {
			return nil, fmt.Errorf("%w: range ran more than %d times", ErrInvalid, maxIterations)
		}
		if m := missingKeyRE.FindStringSubmatch(err.Error()); m != nil {
			return nil, fmt.Errorf("%w: key %q not in %s", ErrMissingKey, m[1], missingFrom(order, fields, m[1]))
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalid, scrub(execMsg(err), fields))
	}
	return w.buf, nil
}

// missingFrom names the secret(s) the template read that lack key.
func missingFrom(order []Ref, fields map[string]map[string]any, key string) string {
	var names []string
	for _, r := range order {
		if _, ok := fields[RefKey(r)][key]; !ok {
			names = append(names, r.Path)
		}
	}
	if len(names) == 0 {
		return "the data the template reads"
	}
	return strings.Join(names, ", ")
}

// execMsg keeps text/template's location and cause on one short line.
func execMsg(err error) string {
	msg := strings.TrimPrefix(err.Error(), "template: ")
	msg = strings.ReplaceAll(msg, "\n", " ")
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return msg
}

// scrub cuts every string value of the secrets read out of msg: an error
// is logged and put in Events, a value never is.
func scrub(msg string, fields map[string]map[string]any) string {
	for _, m := range fields {
		for _, v := range m {
			if s, ok := v.(string); ok && len(s) >= 3 {
				msg = strings.ReplaceAll(msg, s, "[redacted]")
			}
		}
	}
	return msg
}

// limitWriter keeps what is written, up to max bytes.
type limitWriter struct {
	buf []byte
	max int64
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.max > 0 && int64(len(w.buf))+int64(len(p)) > w.max {
		return 0, ErrTooLarge
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

var _ io.Writer = (*limitWriter)(nil)
