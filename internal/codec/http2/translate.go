// Package http2 is the proxy's HTTP/2 codec (RFC 9113) on golang.org/x/net/http2's Framer and
// HPACK. This file holds the translation at the wire edge between HTTP/2 and the proxy's one
// internal shape for upgrades — an HTTP/1.1-style request (GET + Upgrade + Connection: upgrade)
// answered by 101 — so that filters, routes and stats never see the wire protocol.
//
//	server side  CONNECT + :protocol X   →  GET + upgrade: X + connection: upgrade   (RFC 8441 §4)
//	             101                     →  :status 200, no Upgrade/Connection/Sec-WebSocket-Accept
//	client side  GET/POST + Upgrade: X   →  CONNECT + :protocol X   (the method is lost: the seed's
//	                                          documented flaw; it arrives as GET after the next hop)
//	             200                     →  101 + upgrade: X + connection: upgrade
package http2

import (
	"errors"
	"fmt"
	"strings"

	"github.com/switchyard-proxy/switchyard/headers"
)

// Protocol is the RFC 8441 pseudo-header.
const Protocol = ":protocol"

// MalformedError is a request or response that RFC 9113 §8.1.1 calls malformed. It is a stream
// error (PROTOCOL_ERROR) or a connection error depending on configuration, and it counts in
// http2.rx_messaging_error.
type MalformedError struct{ Reason string }

func (e *MalformedError) Error() string { return "malformed HTTP/2 message: " + e.Reason }

func malformed(format string, args ...any) error {
	return &MalformedError{Reason: fmt.Sprintf(format, args...)}
}

// connectionSpecific are the fields RFC 9113 §8.2.2 forbids in HTTP/2.
var connectionSpecific = []string{"connection", "upgrade", "keep-alive", "proxy-connection", "transfer-encoding"}

// CheckFields applies RFC 9113 §8.2 to a decoded header block: lower-case names, no
// connection-specific fields, TE only "trailers", pseudo-headers first and known, no CR/LF/NUL in
// values. isRequest selects the allowed pseudo-headers. A headers.Map lower-cases names and keeps
// pseudo-headers first, so on a Map the case and order checks here cannot fail: a decoder applies
// those two rules with AddWireField while it builds the Map.
func CheckFields(h *headers.Map, isRequest bool) error {
	regular := false
	seen := map[string]bool{}
	for _, f := range h.Fields() {
		if f.Name == "" {
			return malformed("empty field name")
		}
		if strings.HasPrefix(f.Name, ":") {
			if regular {
				return malformed("pseudo-header %s after a regular field", f.Name)
			}
			if seen[f.Name] {
				return malformed("duplicate %s", f.Name)
			}
			seen[f.Name] = true
			switch f.Name {
			case headers.Method, headers.Path, headers.Authority, headers.Scheme, Protocol:
				if !isRequest {
					return malformed("request pseudo-header %s in a response", f.Name)
				}
			case headers.Status:
				if isRequest {
					return malformed(":status in a request")
				}
			default:
				return malformed("unknown pseudo-header %s", f.Name)
			}
		} else {
			regular = true
			if !headers.ValidName(f.Name) || f.Name != strings.ToLower(f.Name) {
				return malformed("invalid field name %q", f.Name)
			}
			for _, c := range connectionSpecific {
				if f.Name == c {
					return malformed("connection-specific field %s", f.Name)
				}
			}
			if f.Name == "te" && !strings.EqualFold(strings.TrimSpace(f.Value), "trailers") {
				return malformed("te other than trailers")
			}
		}
		if !validFieldValue(f.Value) {
			return malformed("invalid value for %s", f.Name)
		}
	}
	return nil
}

// validFieldValue applies RFC 9113 §8.2.1: no CR, LF, NUL (nor other controls, RFC 9110 §5.5),
// and no SP or HTAB at either end. Only ASCII whitespace counts: strings.TrimSpace would also
// trim Unicode spaces such as U+0085 and reject a valid obs-text value.
func validFieldValue(v string) bool {
	if !headers.ValidValue(v) {
		return false
	}
	return v == "" || (v[0] != ' ' && v[0] != '\t' && v[len(v)-1] != ' ' && v[len(v)-1] != '\t')
}

// AddWireField appends one decoded HPACK field to h. It applies the two RFC 9113 rules that
// CheckFields cannot see once a block is in a headers.Map, because the Map lower-cases names and
// keeps pseudo-headers first: a field name with an upper-case letter is malformed (§8.2.1), and
// so is a pseudo-header after a regular field (§8.3). sawRegular carries the order across the
// fields of one block (start it false). Run CheckFields on the finished Map for the other rules.
func AddWireField(h *headers.Map, name, value string, sawRegular *bool) error {
	if strings.HasPrefix(name, ":") {
		if *sawRegular {
			return malformed("pseudo-header %s after a regular field", name)
		}
	} else {
		*sawRegular = true
		for i := 0; i < len(name); i++ {
			if c := name[i]; 'A' <= c && c <= 'Z' {
				return malformed("upper-case field name %q", name)
			}
		}
	}
	h.Add(name, value)
	return nil
}

// ErrConnectNotAllowed is a :protocol request on a listener without allow_connect: RFC 8441 §3
// makes it malformed when SETTINGS_ENABLE_CONNECT_PROTOCOL was not sent.
var ErrConnectNotAllowed = &MalformedError{Reason: ":protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL"}

// RequestFromH2 turns a checked HTTP/2 request header block into the proxy's internal shape, in
// place. It reports whether the request was an extended CONNECT (now an upgrade).
func RequestFromH2(h *headers.Map, allowConnect bool) (extended bool, err error) {
	method := h.Get(headers.Method)
	proto, hasProto := h.Lookup(Protocol)
	switch {
	case hasProto && !allowConnect:
		return false, ErrConnectNotAllowed
	case hasProto && method != "CONNECT":
		return false, malformed(":protocol on %s", method)
	case hasProto:
		// RFC 8441 §4: :scheme and :path are required; the upgrade token is :protocol.
		if h.Get(headers.Path) == "" || h.Get(headers.Scheme) == "" || h.Get(headers.Authority) == "" {
			return false, malformed("extended CONNECT without :scheme, :path or :authority")
		}
		if proto == "" || !headers.ValidName(proto) {
			return false, malformed("invalid :protocol %q", proto)
		}
		h.Del(Protocol)
		h.Set(headers.Method, "GET")
		h.Set("upgrade", proto)
		h.Set("connection", "upgrade")
		extended = true
	case method == "CONNECT":
		// RFC 9113 §8.5: plain CONNECT has only :method and :authority.
		if h.Has(headers.Path) || h.Has(headers.Scheme) || h.Get(headers.Authority) == "" {
			return false, malformed("CONNECT with :path or :scheme, or without :authority")
		}
	default:
		if method == "" || h.Get(headers.Path) == "" || h.Get(headers.Scheme) == "" {
			return false, malformed("missing :method, :path or :scheme")
		}
	}
	if !h.Has(headers.Authority) {
		if host := h.Get("host"); host != "" {
			h.Set(headers.Authority, host)
		}
	}
	h.Del("host")
	if err := checkRequestLine(h); err != nil {
		return false, err
	}
	if extended || method == "CONNECT" {
		// RFC 9110 §9.3.6: a CONNECT has no content; the stream's bytes are tunnel payload. A
		// Content-Length here would frame them as a body on the next HTTP/1.1 hop (security
		// catalog #25c), so it is dropped rather than forwarded.
		h.Del("content-length")
	}
	// RFC 9113 §8.2.3: cookie crumbs are joined with "; " for an HTTP/1.1 hop.
	if cs := h.Values("cookie"); len(cs) > 1 {
		h.Set("cookie", strings.Join(cs, "; "))
	}
	return extended, nil
}

// checkRequestLine keeps the pseudo-headers that become an HTTP/1.1 request line safe to write
// there: :method is a token (RFC 9110 §9.1; "GET /admin" must not split a request line), :path
// has no space and is origin-form ("/...") or "*" for OPTIONS when the scheme is http(s) (RFC 9113
// §8.3.1), :scheme is a URI scheme and :authority has no space. CheckFields has already refused
// control characters.
func checkRequestLine(h *headers.Map) error {
	method := h.Get(headers.Method)
	if !headers.ValidName(method) {
		return malformed("invalid :method %q", method)
	}
	if path, ok := h.Lookup(headers.Path); ok {
		if strings.ContainsAny(path, " ") {
			return malformed("space in :path")
		}
		scheme := h.Get(headers.Scheme)
		if (scheme == "http" || scheme == "https") && !strings.HasPrefix(path, "/") &&
			(path != "*" || method != "OPTIONS") {
			return malformed("invalid :path %q", path)
		}
	}
	if scheme, ok := h.Lookup(headers.Scheme); ok && !validScheme(scheme) {
		return malformed("invalid :scheme %q", scheme)
	}
	if strings.ContainsAny(h.Get(headers.Authority), " ") {
		return malformed("space in :authority")
	}
	return nil
}

// validScheme reports whether s is an RFC 3986 §3.1 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func validScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// ResponseToH2 turns an internal response into the header block sent to an HTTP/2 client, in place.
// extended says the request was an extended CONNECT: its 101 becomes a 200 (RFC 8441 §5), without
// Upgrade, Connection or a zero Content-Length. A Sec-WebSocket-Accept stays: it answers a key the
// client sent (an HTTP/1.1 client behind an earlier hop needs it); when the proxy made the key up,
// the HTTP/1.1 upstream side has already removed it.
func ResponseToH2(h *headers.Map, extended bool) error {
	if extended && h.Get(headers.Status) == "101" {
		h.Set(headers.Status, "200")
		if h.Get("content-length") == "0" {
			h.Del("content-length")
		}
	} else if st := h.Get(headers.Status); st == "101" {
		return errors.New("101 on an HTTP/2 stream that did not ask for an upgrade")
	}
	headers.RemoveHopByHop(h, false)
	return nil
}

// RequestToH2 turns an internal request into the header block sent to an HTTP/2 upstream, in
// place. An upgrade becomes an extended CONNECT whose :protocol is the Upgrade token (the
// original method is dropped, as the seed documents). It returns the upgrade token, or "".
func RequestToH2(h *headers.Map) (upgrade string) {
	if headers.IsUpgrade(h) {
		upgrade = headers.UpgradeToken(h)
		h.Set(headers.Method, "CONNECT")
		h.Set(Protocol, upgrade)
		if h.Get(headers.Scheme) == "" {
			h.Set(headers.Scheme, "http")
		}
		if h.Get("content-length") == "0" {
			h.Del("content-length")
		}
	}
	te := h.Get("te")
	headers.RemoveHopByHop(h, false)
	if strings.EqualFold(strings.TrimSpace(te), "trailers") {
		h.Set("te", "trailers")
	}
	h.Del("host")
	return upgrade
}

// ResponseFromH2 turns an HTTP/2 upstream's response into the internal shape, in place. For an
// extended CONNECT whose upgrade token was upgrade, a 200 becomes a 101 with Upgrade and
// Connection; every other status passes through.
func ResponseFromH2(h *headers.Map, upgrade string) {
	if upgrade != "" && h.Get(headers.Status) == "200" {
		h.Set(headers.Status, "101")
		h.Set("upgrade", upgrade)
		h.Set("connection", "upgrade")
	}
}
