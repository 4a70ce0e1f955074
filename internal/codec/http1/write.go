package http1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/switchyard-proxy/switchyard/headers"
)

// ErrInvalidHead is wrapped by the errors of WriteRequestHead, WriteResponseHead and
// ChunkedWriter.Close when a field or pseudo-header could not be written without changing the
// message's meaning (header splitting): nothing is written in that case.
var ErrInvalidHead = errors.New("http1: invalid head")

// WriteRequestHead writes an HTTP/1.1 request head for h to w:
// "<:method> <:path> HTTP/1.1", "host: <:authority>", the regular fields in order, and the blank
// line. A CONNECT without :path uses :authority as its target (authority-form). Pseudo-headers
// and any regular "host" field are not written as fields (Host comes from :authority, exactly
// once). Names are written as stored (lower case), which HTTP/1.1 allows. Everything is
// validated before the first byte is written; the caller flushes w.
func WriteRequestHead(w *bufio.Writer, h *headers.Map) error {
	method := h.Get(headers.Method)
	if !headers.ValidName(method) {
		return fmt.Errorf("%w: method %q", ErrInvalidHead, method)
	}
	authority := h.Get(headers.Authority)
	target, hasPath := h.Lookup(headers.Path)
	if !hasPath && method == "CONNECT" {
		target = authority
		if !validHost(authority, true) {
			return fmt.Errorf("%w: CONNECT authority %q", ErrInvalidHead, authority)
		}
	}
	if !validTarget(target) {
		return fmt.Errorf("%w: request target %q", ErrInvalidHead, target)
	}
	if !validHost(authority, false) {
		return fmt.Errorf("%w: authority %q", ErrInvalidHead, authority)
	}
	if err := checkFields(h, true); err != nil {
		return err
	}
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(target)
	w.WriteString(" HTTP/1.1\r\nhost: ")
	w.WriteString(authority)
	w.WriteString("\r\n")
	return writeFields(w, h, true)
}

// WriteResponseHead writes an HTTP/1.1 response head for h to w: "HTTP/1.1 <:status> <reason>"
// with the standard reason phrase (http.StatusText, or "Unknown"), the regular fields in order,
// and the blank line. A 101 is therefore exactly "HTTP/1.1 101 Switching Protocols". Everything
// is validated before the first byte is written; the caller flushes w.
func WriteResponseHead(w *bufio.Writer, h *headers.Map) error {
	status := h.Get(headers.Status)
	code, err := strconv.Atoi(status)
	if err != nil || len(status) != 3 || code < 100 || code > 599 {
		return fmt.Errorf("%w: status %q", ErrInvalidHead, status)
	}
	if err := checkFields(h, false); err != nil {
		return err
	}
	reason := http.StatusText(code)
	if reason == "" {
		reason = "Unknown"
	}
	w.WriteString("HTTP/1.1 ")
	w.WriteString(status)
	w.WriteByte(' ')
	w.WriteString(reason)
	w.WriteString("\r\n")
	return writeFields(w, h, false)
}

// validTarget reports whether target is non-empty visible ASCII without '#', so that it can
// sit between the two spaces of a request line.
func validTarget(target string) bool {
	for i := 0; i < len(target); i++ {
		if !targetChar[target[i]] {
			return false
		}
	}
	return target != ""
}

// checkFields refuses any regular field that would not survive the trip: a name that is not a
// token or a value with CR, LF, NUL or another control character.
func checkFields(h *headers.Map, skipHost bool) error {
	for _, f := range h.Fields() {
		if strings.HasPrefix(f.Name, ":") || skipHost && f.Name == "host" {
			continue
		}
		if !headers.ValidName(f.Name) || !headers.ValidValue(f.Value) {
			return fmt.Errorf("%w: field %q: %q", ErrInvalidHead, f.Name, f.Value)
		}
	}
	return nil
}

// writeFields writes the regular fields checked by checkFields and the blank line.
func writeFields(w *bufio.Writer, h *headers.Map, skipHost bool) error {
	for _, f := range h.Fields() {
		if strings.HasPrefix(f.Name, ":") || skipHost && f.Name == "host" {
			continue
		}
		w.WriteString(f.Name)
		w.WriteString(": ")
		w.WriteString(f.Value)
		w.WriteString("\r\n")
	}
	_, err := w.WriteString("\r\n")
	return err
}

// ChunkedWriter writes a body with chunked framing (RFC 9112 §7.1), one chunk per Write, for
// bodies whose length is not known when the head is sent.
type ChunkedWriter struct {
	w      io.Writer
	closed bool
	buf    []byte
}

// NewChunkedWriter returns a ChunkedWriter on w. Wrap a connection in a bufio.Writer first:
// each chunk is written as three small writes.
func NewChunkedWriter(w io.Writer) *ChunkedWriter {
	return &ChunkedWriter{w: w}
}

// Write writes p as one chunk. An empty p writes nothing, because a zero-size chunk would end
// the body.
func (c *ChunkedWriter) Write(p []byte) (int, error) {
	if c.closed {
		return 0, errors.New("http1: write after close of chunked body")
	}
	if len(p) == 0 {
		return 0, nil
	}
	c.buf = strconv.AppendUint(c.buf[:0], uint64(len(p)), 16)
	c.buf = append(c.buf, '\r', '\n')
	if _, err := c.w.Write(c.buf); err != nil {
		return 0, err
	}
	n, err := c.w.Write(p)
	if err != nil {
		return n, err
	}
	if _, err := io.WriteString(c.w, "\r\n"); err != nil {
		return n, err
	}
	return n, nil
}

// Close writes the last chunk, then trailers (nil for none; pseudo-headers are skipped) and the
// blank line that ends the body. Invalid trailers make it fail before writing anything.
func (c *ChunkedWriter) Close(trailers *headers.Map) error {
	if c.closed {
		return errors.New("http1: chunked body already closed")
	}
	var b strings.Builder
	b.WriteString("0\r\n")
	if trailers != nil {
		for _, f := range trailers.Fields() {
			if strings.HasPrefix(f.Name, ":") {
				continue
			}
			if !headers.ValidName(f.Name) || !headers.ValidValue(f.Value) {
				return fmt.Errorf("%w: trailer %q: %q", ErrInvalidHead, f.Name, f.Value)
			}
			b.WriteString(f.Name)
			b.WriteString(": ")
			b.WriteString(f.Value)
			b.WriteString("\r\n")
		}
	}
	b.WriteString("\r\n")
	c.closed = true
	_, err := io.WriteString(c.w, b.String())
	return err
}
