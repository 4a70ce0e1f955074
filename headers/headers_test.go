package headers

import (
	"strings"
	"testing"
)

func fieldsOf(m *Map) string {
	var b []string
	m.Each(func(n, v string) { b = append(b, n+"="+v) })
	return strings.Join(b, "|")
}

func TestIsUpgrade(t *testing.T) {
	tests := []struct {
		pairs []string
		want  bool
	}{
		{[]string{"Connection", "Upgrade", "Upgrade", "websocket"}, true},
		{[]string{"connection", "keep-alive, Upgrade", "upgrade", "WebSocket"}, true},
		{[]string{"connection", "keep-alive", "connection", "upgrade", "upgrade", "foo"}, true},
		{[]string{"upgrade", "websocket"}, false},
		{[]string{"connection", "upgrade"}, false},
		{[]string{"connection", "close", "upgrade", "websocket"}, false},
		{[]string{"connection", "IsNotAnUpgrade", "upgrade", "websocket"}, false},
	}
	for _, tc := range tests {
		if got := IsUpgrade(New(tc.pairs...)); got != tc.want {
			t.Errorf("IsUpgrade(%v) = %v, want %v", tc.pairs, got, tc.want)
		}
	}
}

func TestStripH2C(t *testing.T) {
	tests := []struct {
		in, want string
		stripped bool
	}{
		{"connection=Upgrade, HTTP2-Settings|upgrade=h2c|http2-settings=AAMA", "", true},
		{"connection=Upgrade, Close, HTTP2-Settings|upgrade=H2C|http2-settings=x", "connection=Close", true},
		{"connection=upgrade|upgrade=h2c, foo", "connection=upgrade|upgrade=h2c, foo", false},
		{"connection=upgrade|upgrade=websocket", "connection=upgrade|upgrade=websocket", false},
	}
	for _, tc := range tests {
		m := New()
		for _, f := range strings.Split(tc.in, "|") {
			kv := strings.SplitN(f, "=", 2)
			m.Add(kv[0], kv[1])
		}
		if got := StripH2C(m); got != tc.stripped {
			t.Errorf("StripH2C(%s) = %v", tc.in, got)
		}
		if got := fieldsOf(m); got != tc.want {
			t.Errorf("after StripH2C(%s): %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestRemoveHopByHop(t *testing.T) {
	tests := []struct {
		name        string
		pairs       []string
		keepUpgrade bool
		want        string
	}{
		{"plain request", []string{":method", "GET", "connection", "close, X-Secret", "x-secret", "1", "keep-alive", "5", "te", "trailers", "transfer-encoding", "chunked", "proxy-connection", "x", "trailer", "y", "x-ok", "1"}, false,
			":method=GET|x-ok=1"},
		{"upgrade kept", []string{"connection", "keep-alive, Upgrade, X-Auth-User", "upgrade", "websocket", "x-auth-user", "admin", "sec-websocket-key", "k"}, true,
			"sec-websocket-key=k|connection=upgrade|upgrade=websocket"},
		{"upgrade dropped", []string{"connection", "Upgrade", "upgrade", "websocket", "x", "1"}, false, "x=1"},
		{"pseudo-header cannot be nominated", []string{":path", "/", "connection", ":path, upgrade", "upgrade", "foo"}, true, ":path=/|connection=upgrade|upgrade=foo"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := New(tc.pairs...)
			RemoveHopByHop(m, tc.keepUpgrade)
			if got := fieldsOf(m); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestMapOrderAndPseudoHeaders(t *testing.T) {
	m := New("b", "1", "A", "2")
	m.Add(":path", "/")
	m.Add(":method", "GET")
	m.Set("B", "3")
	m.Add("b", "4")
	if got := fieldsOf(m); got != ":path=/|:method=GET|b=3|a=2|b=4" {
		t.Fatalf("got %s", got)
	}
	m.RemoveToken("b", "3")
	if got := m.Values("b"); len(got) != 1 || got[0] != "4" {
		t.Fatalf("RemoveToken left %v", got)
	}
	c := m.Clone()
	c.Set("a", "x")
	if m.Get("a") != "2" {
		t.Fatal("Clone shares storage")
	}
}

func TestValidValue(t *testing.T) {
	for _, v := range []string{"a\r\nb", "a\nb", "a\x00b", "\x7f"} {
		if ValidValue(v) {
			t.Errorf("ValidValue(%q) = true", v)
		}
	}
	for _, v := range []string{"", "a b\tc", "caf\xc3\xa9"} {
		if !ValidValue(v) {
			t.Errorf("ValidValue(%q) = false", v)
		}
	}
}

// TestTokens: list headers split on commas across every field of the name, empty elements and
// the whitespace around them dropped (RFC 9110 §5.6.1), matched case-insensitively; more tokens
// than HasToken keeps on its stack still count; the check and UpgradeToken allocate nothing.
func TestTokens(t *testing.T) {
	many := strings.Repeat("x, ", 12) + "Upgrade"
	m := New("connection", " keep-alive ,, Upgrade ,", "Connection", "close", "upgrade", "websocket",
		"x-many", many, "x-two", "a", "x-two", "b")
	if got := strings.Join(m.Tokens("connection"), "|"); got != "keep-alive|Upgrade|close" {
		t.Errorf("Tokens = %s", got)
	}
	for _, tc := range []struct {
		name, token string
		want        bool
	}{
		{"connection", "upgrade", true}, {"Connection", "CLOSE", true}, {"connection", "", false},
		{"connection", "keep", false}, {"x-many", "upgrade", true}, {"x-none", "a", false},
	} {
		if got := m.HasToken(tc.name, tc.token); got != tc.want {
			t.Errorf("HasToken(%q, %q) = %v", tc.name, tc.token, got)
		}
	}
	if got := UpgradeToken(m); got != "websocket" {
		t.Errorf("UpgradeToken = %q", got)
	}
	if got := UpgradeToken(New("upgrade", "a", "upgrade", "b ")); got != "a, b" {
		t.Errorf("UpgradeToken of two fields = %q", got)
	}
	if n := testing.AllocsPerRun(100, func() {
		_ = m.HasToken("connection", "upgrade")
		_ = UpgradeToken(m)
	}); n != 0 {
		t.Errorf("HasToken and UpgradeToken: %v allocations, want 0", n)
	}
}
