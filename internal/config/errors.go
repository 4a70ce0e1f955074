package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Error is a configuration error. It exists so that a user can jump to the offending line: it names
// the field path in YAML terms and, when the source was YAML, the line, e.g.
//
//	config.yaml:23: static_resources.listeners[0]....routes[1].route.cluster: unknown cluster "bakend"
//
// Line is 0 when unknown (JSON input, or a path that is not written in the file).
type Error struct {
	File string // file name as given to Load or Parse; "--config-yaml" for the overlay
	Line int    // 1-based; 0 when unknown
	Path string // e.g. static_resources.clusters[0].connect_timeout; "" for whole-file errors
	Msg  string
}

// Error formats the error as "file:line: path: msg", leaving out the parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// path is a field path; each element is a proto field name, "[3]" (list index) or `["k"]` (map key).
type path []string

func (p path) field(name string) path { return append(p[:len(p):len(p)], name) }
func (p path) index(i int) path       { return append(p[:len(p):len(p)], "["+strconv.Itoa(i)+"]") }
func (p path) key(k string) path      { return append(p[:len(p):len(p)], "["+strconv.Quote(k)+"]") }

func (p path) String() string {
	var b strings.Builder
	for i, e := range p {
		if i > 0 && !strings.HasPrefix(e, "[") {
			b.WriteByte('.')
		}
		b.WriteString(e)
	}
	return b.String()
}

// pgvError is the shape of every protoc-gen-validate error type (e.g. RouteActionValidationError).
type pgvError interface {
	Field() string
	Reason() string
	Cause() error
}

// pgvMulti is the shape of every protoc-gen-validate MultiError (returned by ValidateAll).
type pgvMulti interface{ AllErrors() []error }

// validationPath follows the first error of a ValidateAll result down its cause chain and returns
// the field path (appended to p) and the innermost reason.
func validationPath(err error, p path) (path, string) {
	for {
		if multi, ok := err.(pgvMulti); ok && len(multi.AllErrors()) > 0 {
			err = multi.AllErrors()[0]
			continue
		}
		v, ok := err.(pgvError)
		if !ok {
			return p, err.Error()
		}
		p = appendGoField(p, v.Field())
		cause := v.Cause()
		if cause != nil {
			if _, ok := cause.(pgvError); ok {
				err = cause
				continue
			}
			if _, ok := cause.(pgvMulti); ok {
				err = cause
				continue
			}
			return p, v.Reason() + ": " + cause.Error()
		}
		return p, v.Reason()
	}
}

// appendGoField turns a PGV field such as "Listeners[0]" or "TypedPerFilterConfig[envoy.buffer]"
// into proto path elements.
func appendGoField(p path, f string) path {
	name, sub, hasSub := strings.Cut(f, "[")
	p = p.field(snake(name))
	if hasSub {
		sub = strings.TrimSuffix(sub, "]")
		if i, err := strconv.Atoi(sub); err == nil {
			return p.index(i)
		}
		return p.key(sub)
	}
	return p
}

// snake converts a Go or JSON field name to the proto name: "PortValue" → "port_value",
// "AcceptHttp_10" → "accept_http_10".
func snake(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			if i > 0 && s[i-1] != '_' {
				b.WriteByte('_')
			}
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}
