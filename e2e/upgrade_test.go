package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// Shared helpers for the upgrade tests. The upstream is a harness.RawUpstream so every byte the
// proxy forwards is visible; the client is raw TCP unless a real WebSocket client is the point.

const (
	upgActiveStat = "http.ingress.downstream_cx_upgrades_active"
	upgWait       = 3 * time.Second
)

// upgEnd asserts that no upgrade stream is left open: every test ends with it.
func upgEnd(t *testing.T, p *harness.Proxy) {
	t.Helper()
	p.WaitStat(upgActiveStat, 0, 5*time.Second)
}

// upgHCMws enables WebSocket on the connection manager, the usual setup.
const upgHCMws = "upgrade_configs:\n- upgrade_type: websocket"

// upgStart runs a proxy in front of a fresh raw upstream.
func upgStart(t *testing.T, cfg harness.Config) (*harness.Proxy, *harness.RawUpstream) {
	t.Helper()
	up := harness.NewRawUpstream(t)
	cfg.UpstreamPort = up.Port()
	return harness.Start(t, cfg.YAML()), up
}

// upgReq is a GET upgrade request head for path with the given Connection and Upgrade values
// and extra header lines.
func upgReq(path, connection, upgrade string, extra ...string) string {
	var b strings.Builder
	b.WriteString("GET " + path + " HTTP/1.1\r\nHost: t\r\n")
	if connection != "" {
		b.WriteString("Connection: " + connection + "\r\n")
	}
	if upgrade != "" {
		b.WriteString("Upgrade: " + upgrade + "\r\n")
	}
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// upgWSReq is a WebSocket handshake for path.
func upgWSReq(path string) string {
	return upgReq(path, "Upgrade", "websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13")
}

// upgSwitching is an upstream's 101 for the given Upgrade token.
func upgSwitching(upgrade string, extra ...string) string {
	s := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + upgrade + "\r\n"
	for _, e := range extra {
		s += e + "\r\n"
	}
	return s + "\r\n"
}

// upgStatus returns the status code of a response head.
func upgStatus(t *testing.T, head string) int {
	t.Helper()
	f := strings.Fields(head)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		t.Fatalf("not a response head: %q", head)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("bad status in %q", head)
	}
	return n
}

// upgHeader returns the first value of the named field in a request or response head, and whether
// it is there.
func upgHeader(head, name string) (string, bool) {
	for _, line := range strings.Split(head, "\r\n")[1:] {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// upgOpenTunnel sends req (plus early bytes) from a new client, answers it with a 101 from the
// upstream and returns both ends with the client's received bytes up to the end of the 101 head
// consumed; the returned offset is where tunnel bytes start in client.Received().
func upgOpenTunnel(t *testing.T, p *harness.Proxy, up *harness.RawUpstream, req, upgrade string) (client, upc *harness.RawConn, off int) {
	t.Helper()
	client = harness.Dial(t, p.Addr(""))
	client.Write(req)
	upc = up.Accept(upgWait)
	upc.WaitForHead(upgWait)
	upc.Write(upgSwitching(upgrade))
	head := client.WaitForHead(upgWait)
	if upgStatus(t, head) != 101 {
		t.Fatalf("client got %q, want 101\n%s", head, p.Log())
	}
	return client, upc, len(head)
}

// TestUpgradeDetection: an upgrade is Connection holding the token "upgrade" plus an Upgrade field,
// both case-insensitive; anything less is a plain request with both fields removed.
func TestUpgradeDetection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		connection  string
		upgrade     string
		wantUpgrade bool
	}{
		{"canonical", "Upgrade", "websocket", true},
		{"firefox style token list", "keep-alive, Upgrade", "websocket", true},
		{"mixed case everywhere", "UPGRADE", "WebSocket", true},
		{"upgrade without connection token", "keep-alive", "websocket", false},
		{"connection token without upgrade", "Upgrade", "", false},
		{"no connection field", "", "websocket", false},
	}
	p, up := upgStart(t, harness.Config{HCM: upgHCMws})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := harness.Dial(t, p.Addr(""))
			c.Write(upgReq("/d", tc.connection, tc.upgrade))
			u := up.Accept(upgWait)
			head := u.WaitForHead(upgWait)
			gotUp, hasUp := upgHeader(head, "upgrade")
			conn, _ := upgHeader(head, "connection")
			if tc.wantUpgrade {
				if !hasUp || gotUp != tc.upgrade || !strings.Contains(strings.ToLower(conn), "upgrade") {
					t.Fatalf("upstream head lost the upgrade:\n%s", head)
				}
				u.Write(upgSwitching(tc.upgrade))
				if h := c.WaitForHead(upgWait); upgStatus(t, h) != 101 {
					t.Fatalf("client got %q, want 101", h)
				}
				c.Write("ping")
				u.WaitForData("ping", upgWait)
			} else {
				if hasUp || strings.Contains(strings.ToLower(conn), "upgrade") {
					t.Fatalf("plain request still carries upgrade fields upstream:\n%s", head)
				}
				u.Write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if h := c.WaitForHead(upgWait); upgStatus(t, h) != 200 {
					t.Fatalf("client got %q, want 200", h)
				}
			}
			c.Close()
			u.Close()
			upgEnd(t, p)
		})
	}
	if got := p.Stat("http.ingress.downstream_cx_upgrades_total"); got != 3 {
		t.Errorf("downstream_cx_upgrades_total = %d, want 3", got)
	}
	if got := p.Stat("http.ingress.upgrades.websocket.established"); got != 3 {
		t.Errorf("upgrades.websocket.established = %d, want 3", got)
	}
}

// TestUpgradeH2CStripped: an h2c offer is never forwarded (h2c smuggling); the request goes on as
// plain HTTP/1.1, even when h2c is enabled as an upgrade type.
func TestUpgradeH2CStripped(t *testing.T) {
	t.Parallel()
	p, up := upgStart(t, harness.Config{HCM: "upgrade_configs:\n- upgrade_type: websocket\n- upgrade_type: h2c"})
	for _, token := range []string{"h2c", "H2C"} {
		c := harness.Dial(t, p.Addr(""))
		c.Write(upgReq("/h", "Upgrade, HTTP2-Settings", token, "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"))
		u := up.Accept(upgWait)
		head := u.WaitForHead(upgWait)
		lower := strings.ToLower(head)
		if strings.Contains(lower, "upgrade") || strings.Contains(lower, "http2-settings") {
			t.Fatalf("upstream got h2c upgrade fields:\n%s", head)
		}
		u.Write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		got := c.WaitForData("\r\n\r\nok", upgWait)
		if upgStatus(t, got) != 200 || strings.Contains(got, " 101 ") {
			t.Fatalf("client got %q, want a plain 200", got)
		}
		c.Close()
		u.Close()
	}
	if got := p.Stat("http.ingress.downstream_cx_upgrades_total"); got != 0 {
		t.Errorf("downstream_cx_upgrades_total = %d, want 0", got)
	}
	upgEnd(t, p)
}

// TestUpgradeTruthTable runs the seed's table (HCM entry × route entry) plus the rows for types
// the HCM does not list, through the built proxy: one proxy per HCM setting, one route per route
// setting. A rejection is a bare 403 that closes the connection, so pipelined bytes are never
// parsed, and the upstream is never contacted.
func TestUpgradeTruthTable(t *testing.T) {
	t.Parallel()
	routes := `- match: {prefix: "/on"}
  route: {cluster: app, upgrade_configs: [{upgrade_type: websocket}]}
- match: {prefix: "/off"}
  route: {cluster: app, upgrade_configs: [{upgrade_type: websocket, enabled: false}]}
- match: {prefix: "/upper"}
  route: {cluster: app, upgrade_configs: [{upgrade_type: WEBSOCKET}]}
- match: {prefix: "/"}
  route: {cluster: app}`
	type row struct {
		name, path, token string
		accept            bool
	}
	groups := []struct {
		name, hcm string
		rows      []row
	}{
		{"hcm on", "upgrade_configs:\n- upgrade_type: websocket", []row{
			{"route absent", "/", "websocket", true},
			{"route off", "/off", "websocket", false},
			{"type in neither", "/", "foo", false},
			{"token case", "/", "WebSocket", true},
		}},
		{"hcm off", "upgrade_configs:\n- upgrade_type: websocket\n  enabled: false", []row{
			{"route on", "/on", "websocket", true},
			{"route off", "/off", "websocket", false},
			{"route absent", "/", "websocket", false},
			{"route type in upper case", "/upper", "websocket", true},
		}},
		{"hcm absent", "", []row{
			{"route on", "/on", "websocket", true},
			{"route absent", "/", "websocket", false},
		}},
		{"hcm type in mixed case", "upgrade_configs:\n- upgrade_type: WebSocket", []row{
			{"route absent", "/", "WEBSOCKET", true},
		}},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			p, up := upgStart(t, harness.Config{HCM: g.hcm, Routes: routes})
			for _, tc := range g.rows {
				t.Run(tc.name, func(t *testing.T) {
					before := p.Stats()
					delta := func(stat string) int64 { return p.Stat(stat) - before[stat] }
					c := harness.Dial(t, p.Addr(""))
					smuggled := "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
					if tc.accept {
						c.Write(upgReq(tc.path, "Upgrade", tc.token))
						u := up.Accept(upgWait)
						if v, _ := upgHeader(u.WaitForHead(upgWait), "upgrade"); v != tc.token {
							t.Fatalf("upstream Upgrade = %q, want the client's %q", v, tc.token)
						}
						u.Write(upgSwitching(tc.token))
						if h := c.WaitForHead(upgWait); upgStatus(t, h) != 101 {
							t.Fatalf("client got %q, want 101", h)
						}
						c.Write(smuggled) // tunnel payload now: forwarded verbatim
						u.WaitForData(smuggled, upgWait)
						c.Close()
						u.WaitForEOF(upgWait)
						u.Close()
						upgEnd(t, p)
						for stat, want := range map[string]int64{
							"http.ingress.upgrades.websocket.accepted":      1,
							"http.ingress.upgrades.websocket.established":   1,
							"http.ingress.downstream_cx_upgrades_total":     1,
							"http.ingress.downstream_rq_ws_on_non_ws_route": 0,
						} {
							if got := delta(stat); got != want {
								t.Errorf("%s went up by %d, want %d", stat, got, want)
							}
						}
						return
					}
					c.Write(upgReq(tc.path, "Upgrade", tc.token) + smuggled)
					got := c.WaitForEOF(upgWait)
					head, body, _ := strings.Cut(got, "\r\n\r\n")
					if upgStatus(t, head) != 403 || body != "" {
						t.Fatalf("client got %q, want exactly one empty 403 then close", got)
					}
					if cl, _ := upgHeader(head, "content-length"); cl != "0" {
						t.Errorf("403 content-length = %q, want 0", cl)
					}
					if strings.Count(got, "HTTP/1.1") != 1 {
						t.Errorf("pipelined request was answered: %q", got)
					}
					up.NoConnection(200 * time.Millisecond)
					// Types no config names share one stats bucket, so clients cannot mint stat names.
					bucket := "websocket"
					if tc.token == "foo" {
						bucket = "unconfigured"
					}
					for stat, want := range map[string]int64{
						"http.ingress.upgrades." + bucket + ".rejected": 1,
						"http.ingress.downstream_rq_ws_on_non_ws_route": 1,
						"http.ingress.downstream_rq_4xx":                1,
						"http.ingress.downstream_rq_total":              1,
						"http.ingress.downstream_cx_upgrades_total":     0,
						"cluster.app.upstream_cx_total":                 0,
					} {
						if got := delta(stat); got != want {
							t.Errorf("%s went up by %d, want %d", stat, got, want)
						}
					}
					upgEnd(t, p)
				})
			}
		})
	}
}
