package config

import (
	"strconv"
	"strings"
)

// This file maps a field path to a YAML line. The YAML parser in go.mod (sigs.k8s.io/yaml over
// go.yaml.in/yaml/v2) does not report positions, so we scan block-style YAML by indentation: enough
// for Envoy bootstraps. Flow collections ({...}, [...]) and block scalars count as one node at the
// line of their key; anything we cannot follow just makes the line less precise, never an error.

// ynode is one YAML node: the line it starts on and its children.
type ynode struct {
	line  int
	keys  map[string]*ynode // mapping children, keys as written
	items []*ynode          // sequence children
}

// source is one input document: its name for error messages and, for YAML, its line tree.
type source struct {
	name string
	root *ynode // nil for JSON input
}

type yframe struct {
	ind int
	n   *ynode
	seq bool
}

type yscanner struct {
	stack      []yframe
	pending    *ynode // a key or item with an empty value; the next line decides what it holds
	pendInd    int
	pendKey    bool // pending is a mapping key (a sequence may then start at the same indent)
	skipInd    int  // inside a block scalar: skip lines indented more than this; -1 when not
	flowDepth  int  // inside a multi-line flow collection
	root       *ynode
	hasContent bool
}

// scanYAML builds the line tree of a block-style YAML document.
func scanYAML(data []byte) *ynode {
	s := &yscanner{root: &ynode{line: 1}, skipInd: -1}
	for i, raw := range strings.Split(string(data), "\n") {
		s.line(i+1, strings.TrimRight(raw, "\r"))
	}
	return s.root
}

func (s *yscanner) line(no int, raw string) {
	text := strings.TrimLeft(raw, " ")
	ind := len(raw) - len(text)
	if s.flowDepth > 0 {
		s.flowDepth = max(0, s.flowDepth+bracketDelta(text))
		return
	}
	if s.skipInd >= 0 {
		if strings.TrimSpace(text) == "" || ind > s.skipInd {
			return
		}
		s.skipInd = -1
	}
	text = strings.TrimRight(stripComment(text), " \t")
	if text == "" || text == "---" || text == "..." || text[0] == '%' {
		return
	}
	if !s.hasContent {
		s.hasContent = true
		s.root.line = no
		s.stack = []yframe{{ind: ind, n: s.root, seq: isDash(text)}}
	}
	if s.pending != nil {
		switch {
		case isDash(text) && (ind > s.pendInd || ind == s.pendInd && s.pendKey):
			s.stack = append(s.stack, yframe{ind, s.pending, true})
		case ind > s.pendInd:
			s.stack = append(s.stack, yframe{ind, s.pending, false})
		}
		s.pending = nil
	}
	for len(s.stack) > 1 {
		top := s.stack[len(s.stack)-1]
		if top.ind > ind || top.ind == ind && top.seq && !isDash(text) {
			s.stack = s.stack[:len(s.stack)-1]
			continue
		}
		break
	}
	s.content(no, ind, text)
}

// content handles one line at the current container; "- key: v" and "- - v" loop.
func (s *yscanner) content(no, ind int, text string) {
	for {
		top := s.stack[len(s.stack)-1]
		if top.seq {
			if !isDash(text) || ind != top.ind {
				return
			}
			item := &ynode{line: no}
			top.n.items = append(top.n.items, item)
			rest := strings.TrimLeft(text[1:], " ")
			newInd := ind + len(text) - len(rest)
			switch {
			case rest == "":
				s.pending, s.pendInd, s.pendKey = item, ind, false
				return
			case isDash(rest):
				s.stack = append(s.stack, yframe{newInd, item, true})
			default:
				if _, _, ok := splitKey(rest); !ok {
					s.scalar(ind, rest)
					return
				}
				s.stack = append(s.stack, yframe{newInd, item, false})
			}
			ind, text = newInd, rest
			continue
		}
		if ind != top.ind {
			return // continuation of a multi-line plain scalar, or something we do not follow
		}
		key, val, ok := splitKey(text)
		if !ok {
			return
		}
		child := &ynode{line: no}
		if top.n.keys == nil {
			top.n.keys = map[string]*ynode{}
		}
		top.n.keys[key] = child
		// Anchors and tags before a nested block: "key: &a" or "key: !!map".
		for val != "" && (val[0] == '&' || val[0] == '!') {
			_, val, _ = strings.Cut(val, " ")
			val = strings.TrimLeft(val, " ")
		}
		if val == "" {
			s.pending, s.pendInd, s.pendKey = child, ind, true
			return
		}
		s.scalar(ind, val)
		return
	}
}

// scalar notes a value that may continue on the following lines.
func (s *yscanner) scalar(ind int, val string) {
	switch val[0] {
	case '|', '>':
		s.skipInd = ind
	case '{', '[':
		s.flowDepth = max(0, bracketDelta(val))
	}
}

func isDash(t string) bool { return t == "-" || strings.HasPrefix(t, "- ") }

// splitKey splits "key: value" (key plain or quoted). ok is false when the line is not a key.
func splitKey(t string) (key, val string, ok bool) {
	var rest string
	switch {
	case t == "" || t[0] == '{' || t[0] == '[' || t[0] == '?':
		return "", "", false
	case t[0] == '"' || t[0] == '\'':
		end := closingQuote(t)
		if end < 0 {
			return "", "", false
		}
		key, rest = t[:end+1], strings.TrimLeft(t[end+1:], " ")
		if t[0] == '"' {
			if k, err := strconv.Unquote(key); err == nil {
				key = k
			} else {
				key = key[1 : len(key)-1]
			}
		} else {
			key = strings.ReplaceAll(key[1:len(key)-1], "''", "'")
		}
		if !strings.HasPrefix(rest, ":") || len(rest) > 1 && rest[1] != ' ' {
			return "", "", false
		}
		return key, strings.TrimSpace(rest[1:]), true
	}
	for i := 0; i < len(t); i++ {
		if t[i] == ':' && (i+1 == len(t) || t[i+1] == ' ') {
			return strings.TrimSpace(t[:i]), strings.TrimSpace(t[i+1:]), true
		}
	}
	return "", "", false
}

// closingQuote returns the index of the quote closing the quoted scalar that starts t, or -1.
func closingQuote(t string) int {
	q := t[0]
	for i := 1; i < len(t); i++ {
		switch {
		case q == '"' && t[i] == '\\':
			i++
		case t[i] == q && q == '\'' && i+1 < len(t) && t[i+1] == '\'':
			i++
		case t[i] == q:
			return i
		}
	}
	return -1
}

// stripComment removes a trailing "# comment" that is outside quotes.
func stripComment(t string) string {
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case (c == '"' || c == '\'') && tokenStart(t, i):
			if end := closingQuote(t[i:]); end > 0 {
				i += end
			}
		case c == '#' && (i == 0 || t[i-1] == ' ' || t[i-1] == '\t'):
			return t[:i]
		}
	}
	return t
}

// bracketDelta counts opening minus closing brackets outside quotes.
func bracketDelta(t string) int {
	d := 0
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case (c == '"' || c == '\'') && tokenStart(t, i):
			if end := closingQuote(t[i:]); end > 0 {
				i += end
			}
		case c == '{' || c == '[':
			d++
		case c == '}' || c == ']':
			d--
		case c == '#' && (i == 0 || t[i-1] == ' '):
			return d
		}
	}
	return d
}

// tokenStart reports whether a quote at t[i] opens a quoted scalar rather than sitting inside a
// plain one (as in "don't").
func tokenStart(t string, i int) bool {
	return i == 0 || strings.IndexByte(" \t:[{,-", t[i-1]) >= 0
}

// locate returns the file and line of the deepest node of p found in srcs, merged the way
// proto MergeFrom merges them: repeated fields are the concatenation in source order, and for
// other fields the last source that has the field wins.
func locate(srcs []*source, p path) (string, int) {
	type cand struct {
		src *source
		n   *ynode
	}
	var cur []cand
	for _, s := range srcs {
		if s.root != nil {
			cur = append(cur, cand{s, s.root})
		}
	}
	file, line := "", 0
	if len(srcs) > 0 {
		file = srcs[0].name
	}
	for _, e := range p {
		var next []cand
		switch {
		case strings.HasPrefix(e, `["`):
			k, _ := strconv.Unquote(e[1 : len(e)-1])
			for _, c := range cur {
				if n := c.n.keys[k]; n != nil {
					next = append(next, cand{c.src, n})
				}
			}
		case strings.HasPrefix(e, "["):
			i, _ := strconv.Atoi(e[1 : len(e)-1])
			for _, c := range cur {
				if i < len(c.n.items) {
					next = append(next, cand{c.src, c.n.items[i]})
					break
				}
				i -= len(c.n.items)
			}
		default:
			for _, c := range cur {
				if n := lookupKey(c.n, e); n != nil {
					next = append(next, cand{c.src, n})
				}
			}
		}
		if len(next) == 0 {
			break
		}
		cur = next
		last := cur[len(cur)-1]
		file, line = last.src.name, last.n.line
	}
	return file, line
}

// lookupKey finds a mapping key by proto name, accepting the JSON (lowerCamel) spelling too.
func lookupKey(n *ynode, name string) *ynode {
	if c := n.keys[name]; c != nil {
		return c
	}
	for k, c := range n.keys {
		if snake(k) == name {
			return c
		}
	}
	return nil
}
