package render

import (
	"errors"
	"fmt"
	"strings"
	"text/template"
	"text/template/parse"
)

// walker checks a parsed template and collects the secrets it reads and
// its range loops.
type walker struct {
	src    string
	refs   []Ref
	ranges []*parse.RangeNode
	seen   map[string]bool
}

func (w *walker) node(n parse.Node, depth int) error {
	switch n := n.(type) {
	case nil:
		return nil
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := w.node(c, depth); err != nil {
				return err
			}
		}
	case *parse.ActionNode:
		return w.pipe(n.Pipe)
	case *parse.IfNode:
		return w.branch(&n.BranchNode, depth)
	case *parse.WithNode:
		return w.branch(&n.BranchNode, depth)
	case *parse.RangeNode:
		if depth+1 > maxRangeDepth {
			return fmt.Errorf("line %d: range nested deeper than %d", w.line(n), maxRangeDepth)
		}
		if err := rangeOver(n.Pipe); err != nil {
			return fmt.Errorf("line %d: %w", w.line(n), err)
		}
		if err := w.pipe(n.Pipe); err != nil {
			return err
		}
		w.ranges = append(w.ranges, n)
		if err := w.node(n.List, depth+1); err != nil {
			return err
		}
		return w.node(n.ElseList, depth)
	case *parse.TemplateNode:
		return fmt.Errorf("line %d: template and block are not allowed", w.line(n))
	case *parse.PipeNode:
		return w.pipe(n)
	}
	return nil
}

func (w *walker) branch(b *parse.BranchNode, depth int) error {
	if err := w.pipe(b.Pipe); err != nil {
		return err
	}
	if err := w.node(b.List, depth); err != nil {
		return err
	}
	return w.node(b.ElseList, depth)
}

func (w *walker) pipe(p *parse.PipeNode) error {
	if p == nil {
		return nil
	}
	for _, c := range p.Cmds {
		if err := w.command(c); err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) command(c *parse.CommandNode) error {
	if len(c.Args) == 0 {
		return nil
	}
	if id, ok := c.Args[0].(*parse.IdentifierNode); ok {
		switch id.Ident {
		case "call":
			return fmt.Errorf("line %d: call is not allowed", w.line(c))
		case funcSecret:
			return w.secret(c)
		}
	}
	for _, a := range c.Args {
		switch a := a.(type) {
		case *parse.PipeNode:
			if err := w.pipe(a); err != nil {
				return err
			}
		case *parse.ChainNode:
			if p, ok := a.Node.(*parse.PipeNode); ok {
				if err := w.pipe(p); err != nil {
					return err
				}
			}
		case *parse.IdentifierNode:
			if a.Ident == funcSecret {
				return fmt.Errorf("line %d: secret must be called with a literal path, as in secret \"kv/data/app\"", w.line(c))
			}
		}
	}
	return nil
}

// secret records a call's literal path and args.
func (w *walker) secret(c *parse.CommandNode) error {
	if len(c.Args) < 2 {
		return fmt.Errorf("line %d: secret must be called with a literal path, as in secret \"kv/data/app\"", w.line(c))
	}
	var ref Ref
	for i, a := range c.Args[1:] {
		s, ok := a.(*parse.StringNode)
		if !ok {
			return fmt.Errorf("line %d: secret's path and args must be literal strings (the access policy checks them before anything is read)", w.line(c))
		}
		if i == 0 {
			ref.Path = s.Text
			continue
		}
		k, v, ok := strings.Cut(s.Text, "=")
		if !ok || k == "" {
			return fmt.Errorf("line %d: secret's args are \"name=value\" strings", w.line(c))
		}
		if ref.Args == nil {
			ref.Args = map[string]string{}
		}
		if _, dup := ref.Args[k]; dup {
			return fmt.Errorf("line %d: secret arg %q given twice", w.line(c), k)
		}
		ref.Args[k] = v
	}
	if key := RefKey(ref); !w.seen[key] {
		if len(w.refs) >= MaxRefs {
			return fmt.Errorf("line %d: reads more than %d secrets", w.line(c), MaxRefs)
		}
		w.seen[key] = true
		w.refs = append(w.refs, ref)
	}
	return nil
}

// guardRanges puts a call of the loop guard first in every range body.
func guardRanges(ranges []*parse.RangeNode) error {
	if len(ranges) == 0 {
		return nil
	}
	g, err := template.New("guard").Funcs(funcs(nil, nil, 0)).Parse("{{" + funcLoopGuard + "}}")
	if err != nil {
		return fmt.Errorf("%w: loop guard: %w", ErrInvalid, err)
	}
	call := g.Root.Nodes[0]
	for _, r := range ranges {
		if r.List != nil {
			r.List.Nodes = append([]parse.Node{call}, r.List.Nodes...)
		}
	}
	return nil
}

// rangeOver accepts a range over data only (a field, a variable, index or
// a secret): never over a number or a function's result, which is how a
// template burns CPU without writing anything.
func rangeOver(p *parse.PipeNode) error {
	if p == nil || len(p.Cmds) == 0 {
		return nil
	}
	last := p.Cmds[len(p.Cmds)-1]
	if len(last.Args) == 0 {
		return nil
	}
	switch a := last.Args[0].(type) {
	case *parse.FieldNode, *parse.VariableNode, *parse.DotNode, *parse.ChainNode:
		return nil // data, or a field of something (a field of a number fails)
	case *parse.PipeNode:
		return rangeOver(a)
	case *parse.IdentifierNode:
		if a.Ident == "index" || a.Ident == funcSecret {
			return nil
		}
	case *parse.NumberNode:
		return errors.New("range over an integer is not allowed")
	}
	return errors.New("range is only allowed over data (a field, a variable, index or secret)")
}

// line is the 1-based line of n (its Position is a byte offset).
func (w *walker) line(n parse.Node) int {
	pos := int(n.Position())
	if pos > len(w.src) {
		pos = len(w.src)
	}
	return strings.Count(w.src[:pos], "\n") + 1
}
