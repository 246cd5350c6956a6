package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The chart's README lists every value of the schema: regenerate it with
// `go run ./hack/chartdoc` when this fails.
func TestOpsChartValuesTable(t *testing.T) {
	dir := filepath.Join("..", "..", chartDir)
	have, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := render(dir, have)
	if err != nil {
		t.Fatal(err)
	}
	if string(have) != string(want) {
		t.Fatalf("%s/README.md: the values table is stale: run `go run ./hack/chartdoc` (or make chart-docs)", chartDir)
	}
}

func TestTable(t *testing.T) {
	const schema = `{"definitions": {"port": {"type": "integer"}},
	  "properties": {"a": {"type": "object", "properties": {"b": {"$ref": "#/definitions/port"}, "c": {"enum": ["x", "y"]}}},
	                 "d": {"type": ["string", "null"]}}}`
	tests := []struct {
		name, values string
		want         []string // lines of the table, or parts of the error
		wantErr      bool
	}{
		{name: "every leaf with its comment", values: "a:\n  # B's port.\n  b: 80\n  # C,\n  # on two lines.\n  c: x\n# Old paragraph.\n\n# D | with a pipe.\nd: null\n",
			want: []string{"| `a.b` | integer (port) | `80` | B's port. |", "| `a.c` | one of x, y | `\"x\"` | C, on two lines. |", "| `d` | string or null | `null` | D \\| with a pipe. |"}},
		{name: "a value without a comment", values: "a:\n  # B.\n  b: 80\n  c: x\n# D.\nd: null\n",
			want: []string{"a.c has no comment"}, wantErr: true},
		{name: "a schema value missing from values.yaml", values: "a:\n  # B.\n  b: 80\n  # C.\n  c: x\n",
			want: []string{"values.yaml has no d"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Table([]byte(schema), []byte(tt.values))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Table error = %v, want error %v", err, tt.wantErr)
			}
			text := got
			if err != nil {
				text = err.Error()
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("missing %q in:\n%s", w, text)
				}
			}
		})
	}
}
