package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// Handshake tests: what the proxy does between forwarding the upgrade request and opening the
// tunnel. Client bytes sent early are held until a valid 101 and never sent otherwise.

// upgHCMfoo enables a WebSocket and a non-WebSocket type: every rule below holds for both.
const upgHCMfoo = "upgrade_configs:\n- upgrade_type: websocket\n- upgrade_type: foo"

// TestUpgradeEarlyDataHeldUntil101: bytes the client sends with or after the head reach the
// upstream only after its 101, in order; upstream bytes in the 101's segment reach the client
// right after the 101 head.
func TestUpgradeEarlyDataHeldUntil101(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{"websocket", "foo"} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			p, up := upgStart(t, harness.Config{HCM: upgHCMfoo})
			c := harness.Dial(t, p.Addr(""))
			req := upgReq("/early", "Upgrade", typ)
			c.Write(req + "early-1|")
			u := up.Accept(upgWait)
			head := u.WaitForHead(upgWait)
			c.Write("early-2|")
			time.Sleep(250 * time.Millisecond)
			if got := u.Received(); got != head {
				t.Fatalf("upstream got bytes before its 101: %q", got[len(head):])
			}
			u.Write(upgSwitching(typ) + "from-upstream")
			got := c.WaitForData("from-upstream", upgWait)
			h, rest, _ := strings.Cut(got, "\r\n\r\n")
			if upgStatus(t, h) != 101 || rest != "from-upstream" {
				t.Fatalf("client got %q, want 101 then exactly the upstream's bytes", got)
			}
			if v, _ := upgHeader(h, "upgrade"); v != typ {
				t.Errorf("101 Upgrade = %q, want %q", v, typ)
			}
			for _, f := range []string{"content-length", "transfer-encoding"} {
				if _, ok := upgHeader(h, f); ok {
					t.Errorf("101 carries %s: %q", f, h)
				}
			}
			u.WaitForData("early-1|early-2|", upgWait)
			c.Write("late")
			if got := u.WaitForData("late", upgWait); got != head+"early-1|early-2|late" {
				t.Fatalf("upstream tunnel bytes = %q", got[len(head):])
			}
			c.Close()
			u.WaitForEOF(upgWait)
			u.Close()
			upgEnd(t, p)
			for stat, want := range map[string]int64{
				"http.ingress.upgrades." + typ + ".accepted":            1,
				"http.ingress.upgrades." + typ + ".established":         1,
				"http.ingress.upgrades." + typ + ".active":              0,
				"http.ingress.upgrades." + typ + ".bytes_to_upstream":   int64(len("early-1|early-2|late")),
				"http.ingress.upgrades." + typ + ".bytes_to_downstream": int64(len("from-upstream")),
				"http.ingress.downstream_rq_1xx":                        1,
				"cluster.app.upstream_rq_101":                           1,
				"cluster.app.upstream_rq_total":                         1,
			} {
				if got := p.Stat(stat); got != want {
					t.Errorf("%s = %d, want %d", stat, got, want)
				}
			}
		})
	}
}

// TestUpgradeInvalid101: a 101 that does not answer the request exactly is a protocol error: 502
// to the client, no tunnel, and the held client bytes are never sent upstream.
func TestUpgradeInvalid101(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, typ, resp string
	}{
		{"websocket answered with h2c", "websocket", upgSwitching("h2c")},
		{"foo answered with websocket", "foo", upgSwitching("websocket")},
		{"101 with transfer-encoding", "websocket", upgSwitching("websocket", "Transfer-Encoding: chunked")},
		{"101 with content-length", "foo", upgSwitching("foo", "Content-Length: 5")},
		{"101 without upgrade", "websocket", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n"},
		{"101 without connection upgrade", "foo", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\n\r\n"},
	}
	p, up := upgStart(t, harness.Config{HCM: upgHCMfoo})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := harness.Dial(t, p.Addr(""))
			c.Write(upgReq("/bad101", "Upgrade", tc.typ) + "held")
			u := up.Accept(upgWait)
			head := u.WaitForHead(upgWait)
			u.Write(tc.resp + "tunnel?")
			got := c.WaitForEOF(upgWait)
			if upgStatus(t, got) != 502 || strings.Contains(got, "tunnel?") {
				t.Fatalf("client got %q, want a 502 and no tunnel bytes", got)
			}
			if rest := u.WaitForEOF(upgWait); rest != head {
				t.Fatalf("upstream got bytes after its bad 101: %q", rest[len(head):])
			}
			if got := p.Stat("http.ingress.upgrades." + tc.typ + ".established"); got != 0 {
				t.Errorf("established = %d, want 0", got)
			}
			upgEnd(t, p)
		})
	}
}

// TestUpgradeUnsolicited101: a 101 to a request that asked for no upgrade is a 502 (RFC 9110
// §7.8: a server must not switch to a protocol the client did not offer); the connection that
// sent it is closed and never carries another request.
func TestUpgradeUnsolicited101(t *testing.T) {
	t.Parallel()
	p, up := upgStart(t, harness.Config{HCM: upgHCMws})
	c := harness.Dial(t, p.Addr(""))
	c.Write("GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")
	u := up.Accept(upgWait)
	head := u.WaitForHead(upgWait)
	u.Write(upgSwitching("websocket") + "tunnel?")
	got := c.WaitForData("\r\n\r\n", upgWait)
	if upgStatus(t, got) != 502 {
		t.Fatalf("client got %q, want 502", got)
	}
	if rest := u.WaitForEOF(upgWait); rest != head {
		t.Fatalf("upstream that sent the 101 got more bytes: %q", rest[len(head):])
	}
	// Whatever the client sends next is a new request, on a new upstream connection.
	c.Write("GET /after HTTP/1.1\r\nHost: t\r\n\r\n")
	if c.Closed() {
		t.Log("proxy closed the connection after the 502")
	} else if u2 := up.Accept(upgWait); !strings.HasPrefix(u2.WaitForHead(upgWait), "GET /after HTTP/1.1\r\n") {
		t.Fatalf("next request arrived as %q", u2.Received())
	}
	if strings.Contains(c.Received(), "tunnel?") || strings.Contains(c.Received(), " 101 ") {
		t.Fatalf("client saw a tunnel: %q", c.Received())
	}
	if got := p.Stat("cluster.app.upstream_cx_protocol_error"); got != 1 {
		t.Errorf("upstream_cx_protocol_error = %d, want 1", got)
	}
	c.Close()
	upgEnd(t, p)
}

// TestUpgradeNon101Relayed: any non-101 answer to an upgrade is relayed as an ordinary response,
// no tunnel opens, and the client connection closes, so a raw request sent after it never reaches
// an upstream (CVE-2024-23326 for 2xx; websocket-smuggle §2.1 for 426).
func TestUpgradeNon101Relayed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, typ, resp string
		status          int
		body            string
	}{
		{"200 with upgrade headers", "websocket", "HTTP/1.1 200 OK\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n", 200, ""},
		{"426", "websocket", "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nContent-Length: 4\r\n\r\nnope", 426, "nope"},
		{"404 to foo", "foo", "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnah", 404, "nah"},
		{"302 chunked", "foo", "HTTP/1.1 302 Found\r\nLocation: /x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 302, "abc"},
		{"500 without retry", "websocket", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops", 500, "oops"},
	}
	p, up := upgStart(t, harness.Config{HCM: upgHCMfoo})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := harness.Dial(t, p.Addr(""))
			c.Write(upgReq("/no", "Upgrade", tc.typ) + "held")
			u := up.Accept(upgWait)
			head := u.WaitForHead(upgWait)
			u.Write(tc.resp)
			h := c.WaitForHead(upgWait)
			got := c.WaitForData(tc.body, upgWait)
			if upgStatus(t, h) != tc.status {
				t.Fatalf("client got %q, want %d", got, tc.status)
			}
			if v, _ := upgHeader(h, "connection"); !strings.EqualFold(v, "close") {
				t.Errorf("response Connection = %q, want close", v)
			}
			if tc.status == 200 {
				if _, ok := upgHeader(h, "upgrade"); ok {
					t.Errorf("a 200 went out with an Upgrade field: %q", h)
				}
			}
			// The connection is not a tunnel: a raw request written now must reach no upstream.
			smuggled := "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
			if _, err := c.Conn().Write([]byte(smuggled)); err != nil {
				t.Logf("write after response: %v (connection already closed)", err)
			}
			c.WaitForEOF(upgWait)
			time.Sleep(300 * time.Millisecond)
			if got := u.Received(); got != head {
				t.Fatalf("upstream got bytes after the head: %q", got[len(head):])
			}
			up.NoConnection(100 * time.Millisecond)
			if got := p.Stat("http.ingress.upgrades." + tc.typ + ".established"); got != 0 {
				t.Errorf("established = %d, want 0", got)
			}
			if got := p.Stat("cluster.app.upstream_rq_101"); got != 0 {
				t.Errorf("upstream_rq_101 = %d, want 0", got)
			}
			upgEnd(t, p)
		})
	}
}

// TestUpgradeRetryOn5xx: retry_on 5xx applies to upgrades; the 500 is never shown to the client,
// the held bytes go only to the attempt that switched.
func TestUpgradeRetryOn5xx(t *testing.T) {
	t.Parallel()
	p, up := upgStart(t, harness.Config{HCM: upgHCMws, RouteExtra: "retry_policy: {retry_on: 5xx, num_retries: 1}"})
	c := harness.Dial(t, p.Addr(""))
	c.Write(upgWSReq("/retry") + "held")
	u1 := up.Accept(upgWait)
	h1 := u1.WaitForHead(upgWait)
	u1.Write("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
	if got := u1.WaitForEOF(upgWait); got != h1 {
		t.Fatalf("first attempt got bytes after its head: %q", got[len(h1):])
	}
	u2 := up.Accept(upgWait)
	h2 := u2.WaitForHead(upgWait)
	if h2 != h1 {
		t.Errorf("retry head differs:\n%s\nvs\n%s", h1, h2)
	}
	time.Sleep(100 * time.Millisecond)
	if got := u2.Received(); got != h2 {
		t.Fatalf("second attempt got bytes before its 101: %q", got[len(h2):])
	}
	u2.Write(upgSwitching("websocket") + "hi")
	got := c.WaitForData("hi", upgWait)
	if upgStatus(t, got) != 101 || strings.Count(got, "HTTP/1.1") != 1 {
		t.Fatalf("client got %q, want only the 101", got)
	}
	u2.WaitForData("held", upgWait)
	c.Close()
	u2.WaitForEOF(upgWait)
	u2.Close()
	upgEnd(t, p)
	for stat, want := range map[string]int64{
		"cluster.app.upstream_rq_retry":               1,
		"cluster.app.upstream_rq_total":               2,
		"cluster.app.upstream_rq_101":                 1,
		"cluster.app.upstream_rq_500":                 1,
		"http.ingress.downstream_rq_5xx":              0,
		"http.ingress.upgrades.websocket.established": 1,
	} {
		if got := p.Stat(stat); got != want {
			t.Errorf("%s = %d, want %d", stat, got, want)
		}
	}
}

// TestUpgradeRouteTimeout: the route timeout covers only the upgWait for the 101. No 101 in time is a
// 504; a tunnel that outlives the timeout keeps working.
func TestUpgradeRouteTimeout(t *testing.T) {
	t.Parallel()
	t.Run("no 101", func(t *testing.T) {
		t.Parallel()
		p, up := upgStart(t, harness.Config{HCM: upgHCMws, RouteExtra: "timeout: 0.3s"})
		c := harness.Dial(t, p.Addr(""))
		start := time.Now()
		c.Write(upgWSReq("/slow") + "held")
		u := up.Accept(upgWait)
		head := u.WaitForHead(upgWait)
		got := c.WaitForEOF(upgWait)
		if upgStatus(t, got) != 504 {
			t.Fatalf("client got %q, want 504", got)
		}
		if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
			t.Errorf("504 after %v, want about 0.3s", d)
		}
		if rest := u.WaitForEOF(upgWait); rest != head {
			t.Fatalf("upstream got held bytes: %q", rest[len(head):])
		}
		if got := p.Stat("cluster.app.upstream_rq_timeout"); got != 1 {
			t.Errorf("upstream_rq_timeout = %d, want 1", got)
		}
		upgEnd(t, p)
	})
	t.Run("tunnel outlives it", func(t *testing.T) {
		t.Parallel()
		p, up := upgStart(t, harness.Config{HCM: upgHCMws, RouteExtra: "timeout: 0.3s"})
		c, u, off := upgOpenTunnel(t, p, up, upgWSReq("/long"), "websocket")
		time.Sleep(700 * time.Millisecond)
		c.Write("still")
		u.WaitForData("still", upgWait)
		u.Write("here")
		if got := c.WaitForData("here", upgWait)[off:]; got != "here" {
			t.Fatalf("client tunnel bytes = %q", got)
		}
		if got := p.Stat("cluster.app.upstream_rq_timeout"); got != 0 {
			t.Errorf("upstream_rq_timeout = %d, want 0", got)
		}
		c.Close()
		u.WaitForEOF(upgWait)
		u.Close()
		upgEnd(t, p)
	})
}
