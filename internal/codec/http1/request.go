package http1

import (
	"bufio"
	"net/netip"
	"strings"

	"github.com/switchyard-proxy/switchyard/headers"
)

// Request is a parsed request head, translated into the proxy's header map so that filters never
// see the HTTP/1 request line.
type Request struct {
	// Headers holds :method, :path (absent for CONNECT), :authority (from Host, or from the
	// target when it is in absolute- or authority-form), then the other fields in wire order.
	// Host is not kept as a regular field. Repeated identical Content-Length values are
	// collapsed into one field.
	Headers *headers.Map
	// Minor is the HTTP/1 minor version: 0 or 1.
	Minor int
	// ContentLength is the declared body length, -1 when absent.
	ContentLength int64
	// Chunked reports a Transfer-Encoding of exactly "chunked"; ContentLength is then -1.
	Chunked bool
	// KeepAlive reports whether the connection may carry another request after this one
	// (RFC 9112 §9.3).
	KeepAlive bool
}

// ReadRequest reads one request head from br, leaving br positioned at the first byte after it
// (the body, a pipelined request, or an upgrade's early data). It returns io.EOF when br ends
// cleanly before a request starts, io.ErrUnexpectedEOF when it ends inside the head, a
// *ParseError for a malformed or too large head, and other read errors as they are.
func ReadRequest(br *bufio.Reader, lim Limits) (*Request, error) {
	head, err := readHead(br, lim.maxHeaderBytes(), true)
	if err != nil {
		return nil, err
	}
	req, perr := parseRequest(head)
	if perr != nil {
		return nil, perr
	}
	return req, nil
}

func parseRequest(head string) (*Request, *ParseError) {
	fl := fieldLines{head: head}
	method, target, minor, err := parseRequestLine(fl.line())
	if err != nil {
		return nil, err
	}
	path, authority, hasPath, fromTarget, err := parseTarget(method, target)
	if err != nil {
		return nil, err
	}

	// The pairs live on the stack and headers.New sizes the map from them in one allocation.
	var arr [2 * 24]string
	pairs := append(arr[:0], headers.Method, method)
	if hasPath {
		pairs = append(pairs, headers.Path, path)
	}
	pairs = append(pairs, headers.Authority, "")
	authIdx := len(pairs) - 1

	f := framing{contentLength: -1}
	hosts := 0
	host := ""
	for {
		name, value, done, err := fl.next()
		if err != nil {
			return nil, err
		}
		if done {
			break
		}
		if name == "host" {
			hosts++
			host = value
			continue
		}
		value, keep, err := f.field(name, value)
		if err != nil {
			return nil, err
		}
		if keep {
			pairs = append(pairs, name, value)
		}
	}

	// RFC 9112 §3.2: exactly one Host in HTTP/1.1, and a valid one.
	switch {
	case hosts > 1:
		return nil, badRequest(detailCodecError)
	case hosts == 0 && minor == 1:
		return nil, badRequest(detailMissingHost)
	case hosts == 1 && !validHost(host, false):
		return nil, badRequest(detailInvalidCharacters)
	}
	if !fromTarget {
		authority = host
	}
	pairs[authIdx] = authority

	req := &Request{Minor: minor, ContentLength: f.contentLength, KeepAlive: f.keepAlive(minor)}
	if f.te {
		switch {
		case f.clValue != "":
			// RFC 9112 §6.3 rule 3: ought to be handled as an error (smuggling).
			return nil, badRequest(detailChunkedAndCL)
		case minor == 0:
			// RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
			return nil, badRequest(detailInvalidTE)
		case f.teEmpty || !f.teLastChunked:
			// RFC 9112 §6.3 rule 4: chunked must be the final coding of a request.
			return nil, badRequest(detailInvalidTE)
		case f.teChunked > 1:
			return nil, badRequest(detailInvalidTE) // RFC 9112 §7: chunked at most once
		case f.teOther:
			// RFC 9112 §6.1: a coding we do not implement.
			return nil, &ParseError{Status: 501, Details: detailInvalidTE}
		}
		req.Chunked = true
	}
	req.Headers = headers.New(pairs...)
	return req, nil
}

// parseRequestLine splits "method SP request-target SP HTTP-version" (RFC 9112 §3).
func parseRequestLine(line string) (method, target string, minor int, err *ParseError) {
	sp := strings.IndexByte(line, ' ')
	if sp <= 0 {
		return "", "", 0, badRequest(detailCodecError)
	}
	method = line[:sp]
	for i := 0; i < len(method); i++ {
		if !tokenChar[method[i]] {
			return "", "", 0, badRequest(detailCodecError)
		}
	}
	rest := line[sp+1:]
	sp = strings.IndexByte(rest, ' ')
	if sp <= 0 {
		return "", "", 0, badRequest(detailCodecError)
	}
	target = rest[:sp]
	minor, err = parseVersion(rest[sp+1:])
	return method, target, minor, err
}

// parseTarget interprets the request-target (RFC 9112 §3.2): origin-form, absolute-form with an
// http or https URI, asterisk-form for OPTIONS, authority-form for CONNECT (and nothing else for
// CONNECT). fromTarget reports that authority comes from the target and Host is to be ignored
// (RFC 9112 §3.2.2).
func parseTarget(method, target string) (path, authority string, hasPath, fromTarget bool, err *ParseError) {
	if !validTarget(target) {
		return "", "", false, false, badRequest(detailInvalidURL)
	}
	switch {
	case method == "CONNECT":
		if !validHost(target, true) {
			return "", "", false, false, badRequest(detailInvalidURL)
		}
		return "", target, false, true, nil
	case target[0] == '/':
		if !validPath(target) {
			return "", "", false, false, badRequest(detailInvalidURL)
		}
		return target, "", true, false, nil
	case target == "*":
		if method != "OPTIONS" {
			return "", "", false, false, badRequest(detailInvalidURL)
		}
		return target, "", true, false, nil
	}
	var rest string
	switch {
	case len(target) > 7 && strings.EqualFold(target[:7], "http://"):
		rest = target[7:]
	case len(target) > 8 && strings.EqualFold(target[:8], "https://"):
		rest = target[8:]
	default:
		return "", "", false, false, badRequest(detailInvalidURL)
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	authority, path = rest[:end], rest[end:]
	if authority == "" || !validHost(authority, false) || !validPath(path) {
		return "", "", false, false, badRequest(detailInvalidURL)
	}
	switch {
	case path == "":
		path = "/"
	case path[0] == '?':
		path = "/" + path
	}
	return path, authority, true, true, nil
}

// validPath checks the percent-encoding of the path part of a target (the query is passed
// through as is): a '%' must introduce two hex digits.
func validPath(target string) bool {
	for i := 0; i < len(target); i++ {
		switch target[i] {
		case '?':
			return true
		case '%':
			if i+2 >= len(target) || hexVal[target[i+1]] < 0 || hexVal[target[i+2]] < 0 {
				return false
			}
		}
	}
	return true
}

// validHost checks uri-host [":" port] (RFC 9110 §7.2, RFC 3986 §3.2.2): an IPv6 literal in
// brackets or a reg-name/IPv4 address of unreserved and sub-delim characters. Percent-encoding,
// userinfo and IPvFuture are refused; no real client needs them. An empty string is valid
// (an empty Host is allowed, RFC 9112 §3.2). requirePort is for CONNECT's authority-form.
func validHost(s string, requirePort bool) bool {
	if s == "" {
		return !requirePort
	}
	host, port, hasPort := s, "", false
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		addr, err := netip.ParseAddr(s[1:end])
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return false
		}
		switch rest := s[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			port, hasPort = rest[1:], true
		default:
			return false
		}
	} else {
		if i := strings.IndexByte(s, ':'); i >= 0 {
			host, port, hasPort = s[:i], s[i+1:], true
		}
		if host == "" {
			return false
		}
		for i := 0; i < len(host); i++ {
			if !regNameChar[host[i]] {
				return false
			}
		}
	}
	if requirePort && port == "" {
		return false
	}
	if hasPort {
		for i := 0; i < len(port); i++ {
			if !isDigit(port[i]) {
				return false
			}
		}
	}
	return true
}

// fieldLines walks the lines of a head returned by readHead.
type fieldLines struct {
	head  string
	pos   int
	count int
}

// line returns the next line without its CRLF.
func (l *fieldLines) line() string {
	rest := l.head[l.pos:]
	i := strings.IndexByte(rest, '\n') // readHead guarantees it is there, after a CR
	l.pos += i + 1
	return rest[:i-1]
}

// next parses the next field line; done is set at the blank line that ends the section.
func (l *fieldLines) next() (name, value string, done bool, err *ParseError) {
	line := l.line()
	if line == "" {
		return "", "", true, nil
	}
	if l.count++; l.count > MaxHeaderFields {
		return "", "", false, &ParseError{Status: 431, Details: detailTooManyHeaders}
	}
	name, value, err = parseField(line)
	return name, value, false, err
}
