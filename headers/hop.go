package headers

import "strings"

// hopByHop are the fields RFC 9110 §7.6.1 and RFC 9112 define as meaningful for one connection
// only. "upgrade" and "connection" are listed too: callers that keep an upgrade put them back.
var hopByHop = []string{
	"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
	"upgrade", "http2-settings",
}

// IsUpgrade reports whether a request or response asks for a protocol switch: an Upgrade field
// is present and Connection holds the token "upgrade", both case-insensitive. This is the one
// definition the whole proxy uses.
func IsUpgrade(m *Map) bool {
	return m.Has("upgrade") && m.HasToken("connection", "upgrade")
}

// UpgradeToken returns the request's Upgrade value as the client wrote it, trimmed. A
// multi-valued Upgrade ("websocket, foo") is returned whole: upgrade_type matches the whole value,
// as in Envoy.
func UpgradeToken(m *Map) string {
	var buf [2]string
	return strings.TrimSpace(strings.Join(m.appendValues(buf[:0], "upgrade"), ", "))
}

// StripH2C removes an "Upgrade: h2c" offer and its HTTP2-Settings, with their Connection tokens,
// so the request goes on as plain HTTP/1.1: the proxy never forwards an h2c upgrade (h2c smuggling).
// It reports whether it removed anything.
func StripH2C(m *Map) bool {
	if !strings.EqualFold(UpgradeToken(m), "h2c") {
		return false
	}
	m.Del("upgrade")
	m.Del("http2-settings")
	m.RemoveToken("connection", "upgrade")
	m.RemoveToken("connection", "http2-settings")
	return true
}

// StripUpgrade removes Upgrade and the Connection token that asks for it, turning an upgrade
// request into a plain one.
func StripUpgrade(m *Map) {
	m.Del("upgrade")
	m.RemoveToken("connection", "upgrade")
}

// RemoveHopByHop deletes hop-by-hop fields and every field nominated by Connection. When
// keepUpgrade is true, Upgrade and a Connection of just "upgrade" survive so an upgrade can be
// forwarded; other nominated fields are still removed (Envoy forwards them: PR #44525).
func RemoveHopByHop(m *Map, keepUpgrade bool) {
	var ubuf [2]string
	var upgrade []string
	if keepUpgrade {
		upgrade = m.appendValues(ubuf[:0], "upgrade")
	}
	var cbuf [8]string
	for _, t := range m.appendTokens(cbuf[:0], "connection") {
		lt := strings.ToLower(t)
		if strings.HasPrefix(lt, ":") {
			continue // never let a client nominate a pseudo-header away
		}
		m.Del(lt)
	}
	for _, h := range hopByHop {
		m.Del(h)
	}
	if keepUpgrade && len(upgrade) > 0 {
		m.Set("connection", "upgrade")
		for _, u := range upgrade {
			m.Add("upgrade", u)
		}
	}
}

// ValidName reports whether s is a token (RFC 9110 §5.1: field-name = token).
func ValidName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !IsTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// ValidValue reports whether s may be sent as a field value: no CR, LF or NUL, and no other
// control character except HTAB (RFC 9110 §5.5).
func ValidValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// IsTokenChar reports whether c is a tchar (RFC 9110 §5.6.2).
func IsTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
