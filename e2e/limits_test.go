package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// Connection-manager limits and timeouts, end to end: request_timeout, request_headers_timeout,
// the connection idle timeout, max_requests_per_connection, max_stream_duration, server_name,
// ignore_http_11_upgrade and HEAD framing. Upstream-side limits (retries, circuit breakers, DNS
// and load balancing) are in limits_upstream_test.go.

// limSince returns how long ago start was, for timing assertions.
func limSince(start time.Time) time.Duration { return time.Since(start).Round(time.Millisecond) }

// limWaitClosed waits for the proxy to close c and fails unless that happened between lo and hi
// after start. It returns everything received.
func limWaitClosed(t *testing.T, c *harness.RawConn, start time.Time, lo, hi time.Duration) string {
	t.Helper()
	got := c.WaitForEOF(hi + time.Second)
	if d := limSince(start); d < lo || d > hi {
		t.Errorf("connection closed after %v, want between %v and %v", d, lo, hi)
	}
	return got
}

// limStats asserts exact values of proxy stats.
func limStats(t *testing.T, p *harness.Proxy, want map[string]int64) {
	t.Helper()
	st := p.Stats()
	for name, v := range want {
		if st[name] != v {
			t.Errorf("%s = %d, want %d", name, st[name], v)
		}
	}
}

func TestLimitsHCMTimeouts(t *testing.T) {
	t.Parallel()
	a := newEchoApp(t, "app", nil)
	p := harness.Start(t, harness.Config{UpstreamPort: a.port(), HCM: `request_timeout: 0.5s
request_headers_timeout: 0.5s
common_http_protocol_options: {idle_timeout: 1s}`}.YAML())
	addr := p.Addr("")

	// The cases share the proxy and run at once; the stats are checked when all are done.
	t.Run("cases", func(t *testing.T) {
		t.Run("request_timeout with a stalled body", func(t *testing.T) {
			t.Parallel()
			c := harness.Dial(t, addr)
			defer c.Close()
			start := time.Now()
			c.Write("POST /slow HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nabc")
			r := readResponses(t, c, 1)[0]
			if r.status != 408 || r.body != "request timeout" {
				t.Errorf("got %d %q, want 408 \"request timeout\"", r.status, r.body)
			}
			if d := limSince(start); d < 400*time.Millisecond || d > 3*time.Second {
				t.Errorf("408 after %v, want about 0.5s", d)
			}
			c.WaitForEOF(ioWait)
		})
		t.Run("request_headers_timeout with a partial request line", func(t *testing.T) {
			t.Parallel()
			c := harness.Dial(t, addr)
			defer c.Close()
			start := time.Now()
			c.Write("GET /partial HT")
			got := limWaitClosed(t, c, start, 400*time.Millisecond, 2*time.Second)
			if got != "" && !strings.HasPrefix(got, "HTTP/1.1 408 ") {
				t.Errorf("client got %q, want nothing or a 408", got)
			}
		})
		t.Run("a silent client is governed by the idle timeout", func(t *testing.T) {
			t.Parallel()
			c := harness.Dial(t, addr)
			defer c.Close()
			start := time.Now()
			// Past the headers timeout, which only starts with the first byte.
			time.Sleep(800 * time.Millisecond)
			if c.Closed() {
				t.Fatalf("closed after %v: request_headers_timeout applied before any byte", limSince(start))
			}
			// The upper bound catches a close after two idle periods: one spent sniffing for the
			// HTTP/2 preface, one waiting for the first request.
			if got := limWaitClosed(t, c, start, 900*time.Millisecond, 1900*time.Millisecond); got != "" {
				t.Errorf("idle close wrote %q", got)
			}
		})
		t.Run("idle keep-alive connection after a request", func(t *testing.T) {
			t.Parallel()
			c := harness.Dial(t, addr)
			defer c.Close()
			c.Write("GET /once HTTP/1.1\r\nHost: app\r\n\r\n")
			r := readResponses(t, c, 1)[0]
			if e := echoOf(t, r); e.URI != "/once" {
				t.Errorf("upstream saw %q", e.URI)
			}
			before, start := c.Received(), time.Now()
			if got := limWaitClosed(t, c, start, 500*time.Millisecond, 2500*time.Millisecond); got != before {
				t.Errorf("bytes after the response: %q", got[len(before):])
			}
		})
	})
	limStats(t, p, map[string]int64{
		"http.ingress.downstream_rq_timeout":        1,
		"http.ingress.downstream_rq_header_timeout": 1,
		"http.ingress.downstream_cx_idle_timeout":   2,
		"http.ingress.downstream_rq_4xx":            2, // request_timeout and the headers timeout
	})
}

func TestLimitsMaxRequestsPerConnection(t *testing.T) {
	t.Parallel()
	a := newEchoApp(t, "app", nil)
	p := harness.Start(t, harness.Config{UpstreamPort: a.port(),
		HCM: "common_http_protocol_options: {max_requests_per_connection: 2}"}.YAML())
	c := harness.Dial(t, p.Addr(""))
	defer c.Close()

	c.Write("GET /1 HTTP/1.1\r\nHost: app\r\n\r\n")
	r1 := readResponses(t, c, 1)[0]
	if e := echoOf(t, r1); e.URI != "/1" {
		t.Fatalf("first response answers %s", e.URI)
	}
	if v, ok := headerLine(c.Received(), "connection"); ok {
		t.Errorf("first response connection: %q", v)
	}
	if c.Closed() {
		t.Fatal("closed after the first of two allowed requests")
	}
	c.Write("GET /2 HTTP/1.1\r\nHost: app\r\n\r\n")
	r2 := readResponses(t, c, 2)[1]
	if e := echoOf(t, r2); e.URI != "/2" {
		t.Errorf("second response answers %s", e.URI)
	}
	// net/http drops Connection: close from a parsed header; look at the raw second head.
	raw := c.Received()
	if i := strings.LastIndex(raw, "HTTP/1.1 "); i <= 0 {
		t.Errorf("not two responses: %q", raw)
	} else if v, _ := headerLine(raw[i:strings.Index(raw[i:], "\r\n\r\n")+i], "connection"); v != "close" {
		t.Errorf("second response connection: %q, want close: %q", v, raw[i:])
	}
	c.WaitForEOF(ioWait)
	limStats(t, p, map[string]int64{
		"http.ingress.downstream_cx_max_requests_reached": 1,
		"http.ingress.downstream_rq_2xx":                  2,
	})
	if n := a.reqs.Load(); n != 2 {
		t.Errorf("upstream served %d requests, want 2", n)
	}
}

func TestLimitsMaxStreamDuration(t *testing.T) {
	t.Parallel()
	u := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: u.Port(), RouteExtra: "timeout: 30s",
		HCM: "common_http_protocol_options: {max_stream_duration: 0.5s}"}.YAML())
	c := harness.Dial(t, p.Addr(""))
	defer c.Close()
	start := time.Now()
	c.Write("GET /hang HTTP/1.1\r\nHost: app\r\n\r\n")
	uc := u.Accept(ioWait)
	readRequests(t, uc, 1) // and never answer
	r := readResponses(t, c, 1)[0]
	if r.status != 408 || r.body != "downstream duration timeout" {
		t.Errorf("got %d %q, want 408 \"downstream duration timeout\"", r.status, r.body)
	}
	if d := limSince(start); d < 400*time.Millisecond || d > 3*time.Second {
		t.Errorf("408 after %v, want about 0.5s", d)
	}
	uc.WaitForEOF(ioWait) // the upstream request is abandoned
	c.WaitForEOF(ioWait)
	limStats(t, p, map[string]int64{
		"http.ingress.downstream_rq_max_duration_reached": 1,
		"http.ingress.downstream_rq_4xx":                  1,
		"cluster.app.upstream_rq_timeout":                 0, // the route timeout did not fire
	})
}

func TestLimitsServerNameAndHead(t *testing.T) {
	t.Parallel()
	u := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: u.Port(), HCM: "server_name: my-proxy",
		Routes: "- match: {prefix: \"/app\"}\n  route: {cluster: app}"}.YAML())
	addr := p.Addr("")

	t.Run("local 404", func(t *testing.T) {
		r := roundTrip(t, addr, "GET /nowhere HTTP/1.1\r\nHost: app\r\n\r\n")
		if r.status != 404 || r.header.Get("server") != "my-proxy" {
			t.Errorf("got %d, server %q", r.status, r.header.Values("server"))
		}
	})
	t.Run("proxied 200 replaces the upstream's server", func(t *testing.T) {
		c := harness.Dial(t, addr)
		defer c.Close()
		c.Write("GET /app/x HTTP/1.1\r\nHost: app\r\n\r\n")
		uc := u.Accept(ioWait)
		readRequests(t, uc, 1)
		uc.Write("HTTP/1.1 200 OK\r\nserver: upstream-srv\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
		r := readResponses(t, c, 1)[0]
		if v := r.header.Values("server"); r.status != 200 || r.body != "ok" || len(v) != 1 || v[0] != "my-proxy" {
			t.Errorf("got %d %q, server %q", r.status, r.body, v)
		}
	})
	t.Run("HEAD keeps content-length and has no body", func(t *testing.T) {
		c := harness.Dial(t, addr)
		defer c.Close()
		c.Write("HEAD /app/head HTTP/1.1\r\nHost: app\r\n\r\n")
		uc := u.Accept(ioWait)
		if r := readRequests(t, uc, 1)[0]; r.method != "HEAD" {
			t.Fatalf("upstream saw %s", r.method)
		}
		uc.Write("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n\r\n") // keep-alive
		head := c.WaitForHead(ioWait)
		if !strings.HasPrefix(head, "HTTP/1.1 200 ") {
			t.Fatalf("HEAD response %q", head)
		}
		if v, _ := headerLine(head, "content-length"); v != "5" {
			t.Errorf("HEAD content-length %q, want the upstream's 5: %q", v, head)
		}
		if v, _ := headerLine(head, "server"); v != "my-proxy" {
			t.Errorf("HEAD server %q", v)
		}
		if _, ok := headerLine(head, "transfer-encoding"); ok {
			t.Errorf("HEAD response is chunked: %q", head)
		}
		time.Sleep(100 * time.Millisecond)
		if got := c.Received(); got != head || c.Closed() {
			t.Fatalf("after the HEAD head: %q (closed %v)", got[len(head):], c.Closed())
		}

		// The connection carries the next request.
		c.Write("GET /app/next HTTP/1.1\r\nHost: app\r\n\r\n")
		// On the pooled upstream connection, or a new one if the proxy closed it.
		next, n := uc, 2
		pollUntil(func() bool { return uc.Closed() || len(parseRequests(uc.Received())) == 2 })
		if len(parseRequests(uc.Received())) < 2 {
			next, n = u.Accept(ioWait), 1
		}
		if r := readRequests(t, next, n)[n-1]; r.method != "GET" || r.target != "/app/next" {
			t.Fatalf("upstream saw %s %s", r.method, r.target)
		}
		next.Write("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc")
		got := c.WaitForData("abc", ioWait)
		r, ok := parseResponses(got[len(head):], 1)
		if !ok || r[0].status != 200 || r[0].body != "abc" {
			t.Errorf("GET after HEAD: %q", got[len(head):])
		}
	})
	limStats(t, p, map[string]int64{"http.ingress.downstream_rq_4xx": 1, "http.ingress.downstream_rq_2xx": 3})
}

func TestLimitsIgnoreHTTP11Upgrade(t *testing.T) {
	t.Parallel()
	u := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: u.Port(), HCM: `upgrade_configs:
- upgrade_type: websocket
http_protocol_options:
  ignore_http_11_upgrade: [{prefix: "TLS/"}]`}.YAML())
	addr := p.Addr("")

	// Ignored: proxied as a plain GET.
	c := harness.Dial(t, addr)
	c.Write("GET /tls HTTP/1.1\r\nHost: app\r\nUpgrade: TLS/1.3\r\nConnection: upgrade\r\n\r\n")
	uc := u.Accept(ioWait)
	req := readRequests(t, uc, 1)[0]
	for _, h := range []string{"upgrade", "connection"} {
		if v, ok := headerLine(req.head, h); ok {
			t.Errorf("upstream got %s: %q", h, v)
		}
	}
	uc.Write(closeResponse)
	if r := readResponses(t, c, 1)[0]; r.status != 200 || r.body != "ok" {
		t.Errorf("ignored upgrade: %d %q", r.status, r.body)
	}
	if c.Closed() {
		t.Error("client connection closed after a plain response to an ignored upgrade")
	}
	c.Close()

	// Not ignored: a WebSocket still upgrades.
	ws := harness.Dial(t, addr)
	defer ws.Close()
	ws.Write("GET /ws HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	wu := u.Accept(ioWait)
	head := wu.WaitForHead(ioWait)
	if v, _ := headerLine(head, "upgrade"); v != "websocket" {
		t.Fatalf("websocket upgrade not forwarded: %q", head)
	}
	wu.Write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	if got := ws.WaitForHead(ioWait); !strings.HasPrefix(got, "HTTP/1.1 101 ") {
		t.Fatalf("client got %q", got)
	}
	ws.Write("ping")
	wu.WaitForData("ping", ioWait)
	wu.Write("pong")
	ws.WaitForData("pong", ioWait)
	// The upstream's close reaches the client as a half-close; the tunnel ends when both did.
	wu.Close()
	ws.WaitForEOF(ioWait)
	ws.Close()
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0, ioWait)
	if v := p.Stat("http.ingress.downstream_cx_upgrades_total"); v != 1 {
		t.Errorf("downstream_cx_upgrades_total = %d, want 1 (the ignored upgrade is not one)", v)
	}
}
