package policy

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Pattern semantics are documented in the package comment (policy.go).

// segKind says how a segment matches, so that the common cases avoid path.Match.
type segKind uint8

const (
	segLiteral    segKind = iota // exact string
	segAny                       // `*`: any non-empty segment
	segPrefix                    // `abc*`: the commonest pattern, without path.Match
	segPattern                   // path.Match
	segDoubleStar                // `**`: zero or more segments (one or more when last)
)

type segment struct {
	kind segKind
	text string
}

func (s segment) match(v string) bool {
	switch s.kind {
	case segLiteral:
		return v == s.text
	case segAny:
		return v != ""
	case segPrefix:
		return strings.HasPrefix(v, s.text)
	default:
		ok, _ := path.Match(s.text, v) // pattern validated at compile time
		return ok
	}
}

func compileSegment(p string) (segment, error) {
	switch {
	case p == "*" || p == "**":
		return segment{kind: segAny}, nil
	case !strings.ContainsAny(p, `*?[\`):
		return segment{kind: segLiteral, text: p}, nil
	case strings.IndexAny(p, `*?[\`) == len(p)-1 && p[len(p)-1] == '*':
		return segment{kind: segPrefix, text: p[:len(p)-1]}, nil
	}
	// path.Match checks the whole pattern for syntax even when the match
	// fails early, so matching against "" is a complete validation.
	if _, err := path.Match(p, ""); err != nil {
		return segment{}, fmt.Errorf("bad pattern %q: %w", p, err)
	}
	return segment{kind: segPattern, text: p}, nil
}

// nameGlob matches a single-segment name such as a namespace or a role.
type nameGlob segment

func compileName(p string) (nameGlob, error) {
	if p == "" {
		return nameGlob{}, errors.New("empty pattern")
	}
	if strings.Contains(p, "/") {
		return nameGlob{}, fmt.Errorf("pattern %q: names contain no /", p)
	}
	s, err := compileSegment(p)
	return nameGlob(s), err
}

func (g nameGlob) match(v string) bool { return v != "" && segment(g).match(v) }

// matchNames reports whether v matches any of gs; no patterns match anything.
func matchNames(gs []nameGlob, v string) bool {
	if len(gs) == 0 {
		return true
	}
	for _, g := range gs {
		if g.match(v) {
			return true
		}
	}
	return false
}

// pathGlob matches a Vault path. A pattern without metacharacters is kept as
// one literal so that the most common rule is a single string comparison.
type pathGlob struct {
	literal string // the whole pattern when it has no metacharacters, else its literal leading segments
	segs    []segment
}

func compilePath(p string) (pathGlob, error) {
	if p == "" {
		return pathGlob{}, errors.New("empty pattern")
	}
	if err := checkPathForm(p); err != nil {
		return pathGlob{}, fmt.Errorf("pattern %q: %w", p, err)
	}
	if !strings.ContainsAny(p, `*?[\`) {
		return pathGlob{literal: p}, nil
	}
	parts := strings.Split(p, "/")
	g := pathGlob{segs: make([]segment, 0, len(parts))}
	for _, part := range parts {
		if len(g.segs) == 0 && !strings.ContainsAny(part, `*?[\`) {
			g.literal += part + "/" // a cheap prefix test rejects most paths
			continue
		}
		if part == "**" {
			g.segs = append(g.segs, segment{kind: segDoubleStar})
			continue
		}
		if strings.Contains(part, "**") {
			return pathGlob{}, fmt.Errorf("pattern %q: ** must be a whole path segment", p)
		}
		s, err := compileSegment(part)
		if err != nil {
			return pathGlob{}, err
		}
		g.segs = append(g.segs, s)
	}
	return g, nil
}

func (g *pathGlob) match(p string) bool {
	if g.segs == nil {
		return p == g.literal
	}
	if !strings.HasPrefix(p, g.literal) {
		return false
	}
	return matchSegs(g.segs, p[len(g.literal):])
}

// matchSegs matches a canonical path (no empty segments, no trailing slash),
// so an empty rest means the path is used up.
func matchSegs(segs []segment, p string) bool {
	for len(segs) > 0 {
		s := segs[0]
		if s.kind == segDoubleStar {
			if len(segs) == 1 {
				return p != "" // trailing **: one or more segments
			}
			for {
				if matchSegs(segs[1:], p) { // ** takes the segments skipped so far
					return true
				}
				i := strings.IndexByte(p, '/')
				if i < 0 {
					return false
				}
				p = p[i+1:]
			}
		}
		if p == "" {
			return false
		}
		head, rest := p, ""
		if i := strings.IndexByte(p, '/'); i >= 0 {
			head, rest = p[:i], p[i+1:]
		}
		if !s.match(head) {
			return false
		}
		segs, p = segs[1:], rest
	}
	return p == ""
}

// matchPaths reports whether p matches any of gs.
func matchPaths(gs []pathGlob, p string) bool {
	for i := range gs {
		if gs[i].match(p) {
			return true
		}
	}
	return false
}

// checkPathForm rejects what a canonical Vault path cannot contain. Requests
// are held to the same form so that `secret/data/shop/*` cannot be satisfied
// by secret/data/shop/../../sys/raw or by spelling tricks like a//b.
func checkPathForm(p string) error {
	if p == "" {
		return errors.New("empty path")
	}
	for p != "" {
		seg := p
		if i := strings.IndexByte(p, '/'); i >= 0 {
			seg, p = p[:i], p[i+1:]
			if p == "" {
				return errors.New("trailing /")
			}
		} else {
			p = ""
		}
		switch seg {
		case "":
			return errors.New("empty segment (leading or double /)")
		case ".", "..":
			return fmt.Errorf("%q segment", seg)
		}
	}
	return nil
}
