// Package http1 is the proxy's HTTP/1.1 wire codec (RFC 9112), used on both sides: it parses
// downstream requests and upstream responses into a headers.Map, frames bodies, and writes heads
// back out. It is deliberately strict, because an HTTP/1 intermediary that is more lenient than
// the servers behind it is a request-smuggling tool: anything ambiguous is a *ParseError.
//
// Parsing works from the bufio.Reader's own buffer: the head is located with Peek, copied into
// one string, and every name and value is a substring of it, so a typical request costs a
// handful of allocations. The reader is never advanced past the head or body it returns, so
// bytes that follow (a pipelined request, an upgrade's early data) stay in the bufio.Reader.
//
// Deliberate strictness worth knowing about:
//   - Lines must end in CRLF. A bare LF (which RFC 9112 §2.2 lets a recipient accept) is a 400:
//     a front end that accepts it while a back end does not is a classic smuggling vector.
//   - obs-fold continuation lines are a 400 (RFC 9112 §5.2 allows rejecting them).
//   - Empty list elements in Transfer-Encoding are a 400.
package http1

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"strings"

	"github.com/switchyard-proxy/switchyard/headers"
)

// Limits bounds what a peer can make us hold. The zero value uses the defaults.
type Limits struct {
	// MaxHeaderBytes caps the request/status line, all header lines and their CRLFs, including
	// the blank line that ends the head; 0 means DefaultMaxHeaderBytes. The same cap applies to
	// the trailer section of a chunked body.
	MaxHeaderBytes int
}

// DefaultMaxHeaderBytes is the head size limit when Limits.MaxHeaderBytes is 0: Envoy's default
// max_request_headers_kb of 60.
const DefaultMaxHeaderBytes = 60 << 10

// MaxHeaderFields caps the number of field lines in a head or trailer section (Envoy's
// max_headers_count default is 100), so a peer cannot make us build huge maps of tiny fields.
const MaxHeaderFields = 100

// maxLeadingEmptyLines is how many CRLFs we skip before a request line (RFC 9112 §2.2 says a
// server SHOULD ignore "at least one"); more than that is a 400 rather than an unbounded loop.
const maxLeadingEmptyLines = 4

func (l Limits) maxHeaderBytes() int {
	if l.MaxHeaderBytes <= 0 {
		return DefaultMaxHeaderBytes
	}
	return l.MaxHeaderBytes
}

// ParseError is a malformed message. It is a type, not a string, because it decides behaviour:
// Status is the response the proxy sends downstream (400, 431, 501, 505; for an upstream
// response the proxy turns any ParseError into a 502) and Details is the Envoy response code
// details string that goes into access logs ("http1.codec_error", "http1.invalid_characters", ...).
type ParseError struct {
	Status  int
	Details string
}

// Error implements error.
func (e *ParseError) Error() string {
	return "http1: malformed message: " + e.Details + " (" + strconv.Itoa(e.Status) + ")"
}

// Envoy's response code details (source/common/http/http1/codec_impl.cc; missing_host_header is
// the HCM's).
const (
	detailCodecError        = "http1.codec_error"
	detailInvalidCharacters = "http1.invalid_characters"
	detailInvalidURL        = "http1.invalid_url"
	detailHeadersTooLarge   = "http1.headers_too_large"
	detailTooManyHeaders    = "http1.too_many_headers"
	detailInvalidTE         = "http1.invalid_transfer_encoding"
	detailChunkedAndCL      = "http1.content_length_and_chunked_not_allowed"
	detailMissingHost       = "missing_host_header"
)

func badRequest(details string) *ParseError { return &ParseError{Status: 400, Details: details} }

func headersTooLarge() *ParseError { return &ParseError{Status: 431, Details: detailHeadersTooLarge} }

// bareLF is a line ending in LF without CR. RFC 9112 §2.2 lets a recipient accept it; we do
// not, because a front end that does while a back end does not is a smuggling vector.
func bareLF() *ParseError { return badRequest(detailCodecError) }

// Byte classes, as tables so the hot loops are one load per byte.
var (
	tokenChar   [256]bool // RFC 9110 §5.6.2 tchar
	valueChar   [256]bool // field-vchar / SP / HTAB (RFC 9110 §5.5), obs-text included
	targetChar  [256]bool // visible ASCII, minus '#' (a fragment is never part of a request-target)
	regNameChar [256]bool // RFC 3986 unreserved / sub-delims (no pct-encoding: we never need it in a host)
	hexVal      [256]int8 // hex digit value, -1 otherwise
)

func init() {
	for c := 0; c < 256; c++ {
		b := byte(c)
		tokenChar[c] = headers.IsTokenChar(b)
		valueChar[c] = b == '\t' || (b >= 0x20 && b != 0x7f)
		targetChar[c] = b > 0x20 && b < 0x7f && b != '#'
		regNameChar[c] = ('a' <= b && b <= 'z') || ('A' <= b && b <= 'Z') || ('0' <= b && b <= '9') ||
			strings.IndexByte("-._~!$&'()*+,;=", b) >= 0
		switch {
		case '0' <= b && b <= '9':
			hexVal[c] = int8(b - '0')
		case 'a' <= b && b <= 'f':
			hexVal[c] = int8(b - 'a' + 10)
		case 'A' <= b && b <= 'F':
			hexVal[c] = int8(b - 'A' + 10)
		default:
			hexVal[c] = -1
		}
	}
}

// readHead returns one head (start line and field lines, or a trailer section) including the
// blank line that ends it, and consumes exactly those bytes from br. Every line must end in
// CRLF. When skipEmpty is set, up to maxLeadingEmptyLines CRLFs before the head are dropped
// (RFC 9112 §2.2). It returns io.EOF when br ends before any byte of the head and
// io.ErrUnexpectedEOF when it ends inside it.
func readHead(br *bufio.Reader, limit int, skipEmpty bool) (string, error) {
	n := 0 // bytes of complete, checked lines at the front of br's buffer
	skipped := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		for {
			i := bytes.IndexByte(buf[n:], '\n')
			if i < 0 {
				break
			}
			if i == 0 || buf[n+i-1] != '\r' {
				return "", bareLF()
			}
			end := n + i + 1
			if i == 1 { // an empty line
				if n == 0 && skipEmpty {
					if skipped++; skipped > maxLeadingEmptyLines {
						return "", badRequest(detailCodecError)
					}
					br.Discard(2)
					buf = buf[2:]
					continue
				}
				if end > limit {
					return "", headersTooLarge()
				}
				head := string(buf[:end])
				br.Discard(end)
				return head, nil
			}
			n = end
		}
		if len(buf) > limit {
			return "", headersTooLarge()
		}
		if len(buf) == br.Size() {
			// The head does not fit in br's buffer: collect it line by line instead.
			return readHeadSlow(br, limit, n)
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if err == io.EOF && len(buf) > 0 {
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
	}
}

// readHeadSlow finishes readHead when the head is larger than br's buffer: the first n bytes
// are complete lines already checked.
func readHeadSlow(br *bufio.Reader, limit, n int) (string, error) {
	acc := make([]byte, 0, 2*br.Size())
	b, _ := br.Peek(n)
	acc = append(acc, b...)
	br.Discard(n)
	lineStart := len(acc)
	for {
		frag, err := br.ReadSlice('\n')
		acc = append(acc, frag...)
		if len(acc) > limit {
			return "", headersTooLarge()
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return "", io.ErrUnexpectedEOF
		}
		if err != nil {
			return "", err
		}
		ln := len(acc) - lineStart
		if ln < 2 || acc[len(acc)-2] != '\r' {
			return "", bareLF()
		}
		if ln == 2 {
			return string(acc), nil
		}
		lineStart = len(acc)
	}
}

// parseField splits one field line (RFC 9112 §5): name is a token immediately followed by ':',
// the value has its OWS trimmed and holds only field-vchar, SP and HTAB. The returned name is
// lower case.
func parseField(line string) (name, value string, err *ParseError) {
	if line[0] == ' ' || line[0] == '\t' {
		return "", "", badRequest(detailCodecError) // obs-fold, RFC 9112 §5.2
	}
	colon := strings.IndexByte(line, ':')
	if colon <= 0 {
		return "", "", badRequest(detailInvalidCharacters)
	}
	for i := 0; i < colon; i++ {
		if !tokenChar[line[i]] {
			return "", "", badRequest(detailInvalidCharacters)
		}
	}
	v := line[colon+1:]
	for i := 0; i < len(v); i++ {
		if !valueChar[v[i]] {
			return "", "", badRequest(detailInvalidCharacters)
		}
	}
	return lowerName(line[:colon]), trimOWS(v), nil
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// commonNames interns the lower-case form of names clients usually send capitalised, so that
// lower-casing them costs no allocation.
var commonNames = map[string]string{}

func init() {
	for _, n := range []string{
		"accept", "accept-encoding", "accept-language", "authorization", "cache-control",
		"connection", "content-length", "content-type", "cookie", "date", "etag", "expect",
		"host", "if-modified-since", "if-none-match", "keep-alive", "last-modified", "location",
		"origin", "pragma", "proxy-authorization", "proxy-connection", "referer", "server",
		"set-cookie", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary",
		"via", "x-forwarded-for", "x-forwarded-proto", "x-request-id", "sec-websocket-key",
		"sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol",
		"sec-websocket-accept", "http2-settings", "content-encoding", "accept-ranges", "age",
		"access-control-allow-origin", "strict-transport-security", "x-content-type-options",
	} {
		commonNames[n] = n
	}
}

// lowerName lower-cases a field name, returning s itself when it already is lower case.
func lowerName(s string) string {
	upper := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			upper = true
			break
		}
	}
	if !upper {
		return s
	}
	var buf [64]byte
	if len(s) > len(buf) {
		return strings.ToLower(s)
	}
	b := buf[:len(s)]
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	if n, ok := commonNames[string(b)]; ok {
		return n
	}
	return string(b)
}

// framing accumulates the fields that decide message framing and persistence while the field
// lines are read (RFC 9112 §6 and §9.3).
type framing struct {
	contentLength int64  // -1 when absent
	clValue       string // the first Content-Length value, as sent
	te            bool   // a Transfer-Encoding field was present
	teEmpty       bool   // it had an empty list element
	teChunked     int    // how many "chunked" codings
	teLastChunked bool   // the final coding is chunked
	teOther       bool   // some coding other than chunked
	connClose     bool
	connKeepAlive bool
}

// field looks at one field line; keep reports whether it should be added to the map (only the
// first Content-Length is kept, normalised to its single value).
func (f *framing) field(name, value string) (keep string, ok bool, err *ParseError) {
	switch name {
	case "content-length":
		// RFC 9110 §8.6 / RFC 9112 §6.3: several identical values may be collapsed to one;
		// anything else is unrecoverable framing.
		first := f.clValue == ""
		for rest := value; ; {
			el, tail, more := strings.Cut(rest, ",")
			el = trimOWS(el)
			if f.clValue == "" {
				n, valid := parseDecimal(el)
				if !valid {
					return "", false, badRequest(detailCodecError)
				}
				f.clValue, f.contentLength = el, n
			} else if el != f.clValue {
				return "", false, badRequest(detailCodecError)
			}
			if !more {
				break
			}
			rest = tail
		}
		return f.clValue, first, nil
	case "transfer-encoding":
		f.te = true
		for rest := value; ; {
			el, tail, more := strings.Cut(rest, ",")
			el = trimOWS(el)
			switch {
			case el == "":
				f.teEmpty = true
				f.teLastChunked = false
			case strings.EqualFold(el, "chunked"):
				f.teChunked++
				f.teLastChunked = true
			default:
				f.teOther = true
				f.teLastChunked = false
			}
			if !more {
				break
			}
			rest = tail
		}
	case "connection":
		for elems := value; elems != ""; {
			var el string
			el, elems, _ = strings.Cut(elems, ",")
			el = trimOWS(el)
			if strings.EqualFold(el, "close") {
				f.connClose = true
			} else if strings.EqualFold(el, "keep-alive") {
				f.connKeepAlive = true
			}
		}
	}
	return value, true, nil
}

// keepAlive applies RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with
// "keep-alive".
func (f *framing) keepAlive(minor int) bool {
	if f.connClose {
		return false
	}
	return minor == 1 || f.connKeepAlive
}

// parseDecimal parses 1*DIGIT into a non-negative int64.
func parseDecimal(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (1<<63-1-int64(c-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseVersion parses "HTTP/1.0" or "HTTP/1.1"; another well-formed HTTP-version is a 505.
func parseVersion(v string) (minor int, err *ParseError) {
	switch v {
	case "HTTP/1.1":
		return 1, nil
	case "HTTP/1.0":
		return 0, nil
	}
	if len(v) == 8 && v[:5] == "HTTP/" && isDigit(v[5]) && v[6] == '.' && isDigit(v[7]) {
		return 0, &ParseError{Status: 505, Details: detailCodecError}
	}
	return 0, badRequest(detailCodecError)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
