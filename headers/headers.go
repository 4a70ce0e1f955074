// Package headers is the header map every part of the proxy shares: an ordered list of fields with
// lower-case names, where HTTP/2-style pseudo-headers (":method", ":path", ":authority", ":scheme",
// ":status") carry the request line and status line so that filters never see the wire protocol.
package headers

import (
	"strings"
)

// Pseudo-header names used on every request and response inside the proxy.
const (
	Method    = ":method"
	Path      = ":path"
	Authority = ":authority"
	Scheme    = ":scheme"
	Status    = ":status"
)

// Field is one header line. Name is always lower case.
type Field struct {
	Name  string
	Value string
}

// Map is an ordered multimap of header fields. Order is kept because some peers care about it and
// because tests compare bytes on the wire. The zero value is an empty map ready to use.
type Map struct {
	fields []Field
}

// New returns a map holding the given name/value pairs, names lower-cased.
func New(pairs ...string) *Map {
	m := &Map{fields: make([]Field, 0, len(pairs)/2+4)}
	for i := 0; i+1 < len(pairs); i += 2 {
		m.Add(pairs[i], pairs[i+1])
	}
	return m
}

// Len is the number of fields, pseudo-headers included.
func (m *Map) Len() int { return len(m.fields) }

// Fields returns the fields in order. The slice is the map's own: do not modify it.
func (m *Map) Fields() []Field { return m.fields }

// Get returns the first value of name, or "" when absent.
func (m *Map) Get(name string) string {
	name = lower(name)
	for _, f := range m.fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// Lookup returns the first value of name and whether it is present at all.
func (m *Map) Lookup(name string) (string, bool) {
	name = lower(name)
	for _, f := range m.fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// Has reports whether name is present.
func (m *Map) Has(name string) bool {
	_, ok := m.Lookup(name)
	return ok
}

// Values returns every value of name in order.
func (m *Map) Values(name string) []string { return m.appendValues(nil, name) }

// appendValues appends the values of name to dst: a caller with a small array on its stack
// reads them without an allocation.
func (m *Map) appendValues(dst []string, name string) []string {
	name = lower(name)
	for _, f := range m.fields {
		if f.Name == name {
			dst = append(dst, f.Value)
		}
	}
	return dst
}

// Count returns how many fields are called name.
func (m *Map) Count(name string) int {
	name = lower(name)
	n := 0
	for _, f := range m.fields {
		if f.Name == name {
			n++
		}
	}
	return n
}

// Add appends a field; pseudo-headers are kept ahead of regular fields.
func (m *Map) Add(name, value string) {
	name = lower(name)
	if strings.HasPrefix(name, ":") {
		i := 0
		for i < len(m.fields) && strings.HasPrefix(m.fields[i].Name, ":") {
			i++
		}
		m.fields = append(m.fields, Field{})
		copy(m.fields[i+1:], m.fields[i:])
		m.fields[i] = Field{Name: name, Value: value}
		return
	}
	m.fields = append(m.fields, Field{Name: name, Value: value})
}

// Set replaces every value of name with one value, keeping the position of the first one.
func (m *Map) Set(name, value string) {
	name = lower(name)
	for i, f := range m.fields {
		if f.Name == name {
			m.fields[i].Value = value
			m.delFrom(name, i+1)
			return
		}
	}
	m.Add(name, value)
}

// Del removes every field called name.
func (m *Map) Del(name string) {
	m.delFrom(lower(name), 0)
}

func (m *Map) delFrom(name string, from int) {
	out := m.fields[:from]
	for _, f := range m.fields[from:] {
		if f.Name != name {
			out = append(out, f)
		}
	}
	for i := len(out); i < len(m.fields); i++ {
		m.fields[i] = Field{}
	}
	m.fields = out
}

// Clone returns a deep copy.
func (m *Map) Clone() *Map {
	c := &Map{fields: make([]Field, len(m.fields), len(m.fields)+4)}
	copy(c.fields, m.fields)
	return c
}

// Tokens splits every value of a comma-separated list header into trimmed, non-empty tokens,
// keeping their case.
func (m *Map) Tokens(name string) []string { return m.appendTokens(nil, name) }

// appendTokens appends the tokens of the list header name to dst (see appendValues).
func (m *Map) appendTokens(dst []string, name string) []string {
	name = lower(name)
	for _, f := range m.fields {
		if f.Name != name {
			continue
		}
		for v := f.Value; v != ""; {
			t, rest, _ := strings.Cut(v, ",")
			if t = strings.TrimSpace(t); t != "" {
				dst = append(dst, t)
			}
			v = rest
		}
	}
	return dst
}

// HasToken reports whether the comma-separated list header name holds token, compared
// case-insensitively (RFC 9110 §7.6.1: connection options are case-insensitive).
func (m *Map) HasToken(name, token string) bool {
	var buf [8]string
	for _, t := range m.appendTokens(buf[:0], name) {
		if strings.EqualFold(t, token) {
			return true
		}
	}
	return false
}

// RemoveToken drops token (case-insensitive) from the list header name, removing the header when
// nothing is left.
func (m *Map) RemoveToken(name, token string) {
	toks := m.Tokens(name)
	keep := toks[:0]
	for _, t := range toks {
		if !strings.EqualFold(t, token) {
			keep = append(keep, t)
		}
	}
	if len(keep) == 0 {
		m.Del(name)
		return
	}
	m.Set(name, strings.Join(keep, ", "))
}

// Each calls fn for every field in order.
func (m *Map) Each(fn func(name, value string)) {
	for _, f := range m.fields {
		fn(f.Name, f.Value)
	}
}

// lower returns s lower-cased without allocating when it already is.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}
