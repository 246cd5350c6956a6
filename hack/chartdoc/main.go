// Command chartdoc writes the values table of the chart's README from the
// values schema (which values exist, their types) and values.yaml (defaults,
// and the comment above each key as its description), between the markers
// <!-- values:begin --> and <!-- values:end -->.
//
//	go run ./hack/chartdoc          # rewrite charts/vault-csi-driver/README.md
//	go run ./hack/chartdoc --check  # fail when the README is stale
//
// Every value in the schema must have a comment in values.yaml.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

const (
	chartDir    = "charts/vault-csi-driver"
	beginMarker = "<!-- values:begin -->"
	endMarker   = "<!-- values:end -->"
)

func main() {
	check := flag.Bool("check", false, "fail when the README's table is stale instead of rewriting it")
	dir := flag.String("chart", chartDir, "chart directory")
	flag.Parse()
	if err := run(*dir, *check); err != nil {
		fmt.Fprintln(os.Stderr, "chartdoc:", err)
		os.Exit(1)
	}
}

func run(dir string, check bool) error {
	readme := filepath.Join(dir, "README.md")
	have, err := os.ReadFile(readme)
	if err != nil {
		return err
	}
	want, err := render(dir, have)
	if err != nil {
		return err
	}
	if bytes.Equal(have, want) {
		return nil
	}
	if check {
		return fmt.Errorf("%s: the values table is stale: run `go run ./hack/chartdoc`", readme)
	}
	return os.WriteFile(readme, want, 0o644)
}

// render returns readme with its values table regenerated.
func render(dir string, readme []byte) ([]byte, error) {
	schemaJSON, err := os.ReadFile(filepath.Join(dir, "values.schema.json"))
	if err != nil {
		return nil, err
	}
	valuesYAML, err := os.ReadFile(filepath.Join(dir, "values.yaml"))
	if err != nil {
		return nil, err
	}
	table, err := Table(schemaJSON, valuesYAML)
	if err != nil {
		return nil, err
	}
	b, rest, ok := bytes.Cut(readme, []byte(beginMarker))
	_, after, ok2 := bytes.Cut(rest, []byte(endMarker))
	if !ok || !ok2 {
		return nil, fmt.Errorf("README.md has no %s ... %s section", beginMarker, endMarker)
	}
	var out bytes.Buffer
	out.Write(b)
	out.WriteString(beginMarker + "\n" + table + endMarker)
	out.Write(after)
	return out.Bytes(), nil
}

// schema is the part of JSON schema the table needs.
type schema struct {
	Type       any                `json:"type"`
	Enum       []any              `json:"enum"`
	Const      any                `json:"const"`
	Ref        string             `json:"$ref"`
	AnyOf      []schema           `json:"anyOf"`
	Properties map[string]*schema `json:"properties"`
	Defs       map[string]*schema `json:"definitions"`
}

// row is one value of the chart.
type row struct{ path, typ, def, desc string }

// Table renders the markdown table of every leaf value of the schema: a
// value is a leaf unless its schema lists properties inline.
func Table(schemaJSON, valuesYAML []byte) (string, error) {
	var s schema
	if err := json.Unmarshal(schemaJSON, &s); err != nil {
		return "", fmt.Errorf("values.schema.json: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(valuesYAML, &doc); err != nil {
		return "", fmt.Errorf("values.yaml: %w", err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return "", errors.New("values.yaml: not a mapping")
	}
	root := &s
	var rows []row
	var errs []error
	var walk func(prefix string, s *schema, node *yaml.Node)
	walk = func(prefix string, s *schema, node *yaml.Node) {
		for _, name := range sortedKeys(s.Properties) {
			if prefix == "" && name == "global" {
				continue // helm's own
			}
			ps := s.Properties[name]
			path := prefix + name
			key, val := lookup(node, name)
			if key == nil {
				errs = append(errs, fmt.Errorf("values.yaml has no %s (the schema lists it)", path))
				continue
			}
			if len(ps.Properties) > 0 {
				walk(path+".", ps, val)
				continue
			}
			desc := comment(key)
			if desc == "" {
				errs = append(errs, fmt.Errorf("values.yaml: %s has no comment to describe it", path))
			}
			def, err := defaultOf(val)
			if err != nil {
				errs = append(errs, fmt.Errorf("values.yaml: %s: %w", path, err))
			}
			rows = append(rows, row{path: path, typ: typeOf(ps, root), def: def, desc: desc})
		}
	}
	walk("", &s, doc.Content[0])
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("| value | type | default | description |\n|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.path, cell(r.typ), cell(r.def), cell(r.desc))
	}
	return b.String(), nil
}

// sortedKeys keeps the schema's order stable: alphabetical within a level.
func sortedKeys(m map[string]*schema) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// lookup finds key name in a YAML mapping node.
func lookup(node *yaml.Node, name string) (*yaml.Node, *yaml.Node) {
	if node == nil || node.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		if node.Content[i].Value == name {
			return node.Content[i], node.Content[i+1]
		}
	}
	return nil, nil
}

// comment is the last paragraph of the comment above a key, as one line.
func comment(key *yaml.Node) string {
	c := strings.TrimSpace(key.HeadComment)
	if i := strings.LastIndex(c, "\n\n"); i >= 0 {
		c = c[i+2:]
	}
	var words []string
	for _, l := range strings.Split(c, "\n") {
		words = append(words, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#")))
	}
	return strings.TrimSpace(strings.Join(words, " "))
}

func defaultOf(val *yaml.Node) (string, error) {
	var v any
	if err := val.Decode(&v); err != nil {
		return "", err
	}
	if v == nil {
		return "`null`", nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return "`" + string(b) + "`", nil
}

func typeOf(s, root *schema) string {
	switch {
	case s.Ref != "":
		name := strings.TrimPrefix(s.Ref, "#/definitions/")
		if d := root.Defs[name]; d != nil && d.Type != nil {
			return fmt.Sprintf("%s (%s)", typeName(d.Type), name)
		}
		return name
	case len(s.Enum) > 0:
		var parts []string
		for _, e := range s.Enum {
			parts = append(parts, fmt.Sprint(e))
		}
		return "one of " + strings.Join(parts, ", ")
	case s.Const != nil:
		b, _ := json.Marshal(s.Const)
		return string(b)
	case len(s.AnyOf) > 0:
		var parts []string
		for i := range s.AnyOf {
			parts = append(parts, typeOf(&s.AnyOf[i], root))
		}
		return strings.Join(parts, " or ")
	case s.Type != nil:
		return typeName(s.Type)
	}
	return "any"
}

func typeName(t any) string {
	switch v := t.(type) {
	case string:
		return v
	case []any:
		var parts []string
		for _, p := range v {
			parts = append(parts, fmt.Sprint(p))
		}
		return strings.Join(parts, " or ")
	}
	return fmt.Sprint(t)
}

// cell escapes what would break a markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
