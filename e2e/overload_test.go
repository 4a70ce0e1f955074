package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// Connection limits and the overload manager: envoy.filters.network.connection_limit,
// envoy.resource_monitors.global_downstream_max_connections and fixed_heap with
// envoy.overload_actions.stop_accepting_requests.

const wsUpgradeHCM = "upgrade_configs: [{upgrade_type: websocket}]"

// withConnLimit puts a connection_limit filter before the HCM of a harness bootstrap.
func withConnLimit(t *testing.T, yaml, fields string) string {
	t.Helper()
	const chain = "    - filters:\n      - name: envoy.filters.network.http_connection_manager\n"
	if strings.Count(yaml, chain) != 1 {
		t.Fatalf("withConnLimit: one filter chain expected in\n%s", yaml)
	}
	return strings.Replace(yaml, chain, "    - filters:\n      - name: envoy.filters.network.connection_limit\n"+
		"        typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit, "+
		fields+"}\n      - name: envoy.filters.network.http_connection_manager\n", 1)
}

// withOverload appends a bootstrap overload_manager (its fields indented two spaces).
func withOverload(yaml, block string) string { return yaml + "overload_manager:\n" + block }

// saturatedHeap is an overload_manager block whose fixed_heap monitor (a 1-byte limit) the heap
// always exceeds, triggering action at threshold.
func saturatedHeap(action string, threshold float64) string {
	return fmt.Sprintf(`  refresh_interval: 0.05s
  resource_monitors:
  - name: envoy.resource_monitors.fixed_heap
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig
      max_heap_size_bytes: 1
  actions:
  - name: %s
    triggers:
    - name: envoy.resource_monitors.fixed_heap
      threshold: {value: %g}
`, action, threshold)
}

// adminAnswers reports whether the admin endpoint at addr answers a request on a new connection
// (false while the global connection limit has it close connections at accept).
func adminAnswers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// adminOutsideConnLimit sets admin.ignore_global_conn_limit, so that the test's stats requests
// neither take one of the global connections it counts nor get refused.
func adminOutsideConnLimit(yaml string) string {
	return strings.Replace(yaml, "admin:\n", "admin:\n  ignore_global_conn_limit: true\n", 1)
}

// openTunnel opens a WebSocket tunnel through the listener at addr to up and checks that it
// carries bytes both ways.
func openTunnel(t *testing.T, addr string, up *harness.RawUpstream) (client, upstream *harness.RawConn) {
	t.Helper()
	c := harness.Dial(t, addr)
	c.Write("GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	u := up.Accept(ioWait)
	u.WaitForHead(ioWait)
	u.Write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	c.WaitForHead(ioWait)
	tunnelFlows(t, c, u, "hello")
	return c, u
}

// tunnelFlows sends a distinct message each way through a tunnel.
func tunnelFlows(t *testing.T, c, u *harness.RawConn, tag string) {
	t.Helper()
	c.Write("up:" + tag)
	u.WaitForData("up:"+tag, ioWait)
	u.Write("down:" + tag)
	c.WaitForData("down:"+tag, ioWait)
}

// plainExchange sends request n on a keep-alive connection and answers it from u (nil: accept
// the upstream connection first); it returns the upstream connection.
func plainExchange(t *testing.T, c *harness.RawConn, up *harness.RawUpstream, u *harness.RawConn, n int) *harness.RawConn {
	t.Helper()
	c.Write(fmt.Sprintf("GET /plain/%d HTTP/1.1\r\nHost: t\r\n\r\n", n))
	if u == nil {
		u = up.Accept(ioWait)
	}
	if rs := readRequests(t, u, n); rs[n-1].target != fmt.Sprintf("/plain/%d", n) {
		t.Fatalf("upstream got %q", rs[n-1].target)
	}
	u.Write(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok-%d", n))
	if r := readResponses(t, c, n)[n-1]; r.status != 200 || r.body != fmt.Sprintf("ok-%d", n) {
		t.Fatalf("response %d: %d %q", n, r.status, r.body)
	}
	return u
}

// refusedWithoutResponse checks that a new connection to addr is closed, no sooner than
// minWait, without a byte of response, and reports how long that took.
func refusedWithoutResponse(t *testing.T, addr string, minWait time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c := harness.Dial(t, addr)
	// The proxy may have closed already: a failed write is fine, the EOF is what counts.
	c.Conn().Write([]byte("GET /refused HTTP/1.1\r\nHost: t\r\n\r\n"))
	got := c.WaitForEOF(ioWait)
	took := time.Since(start)
	if got != "" {
		t.Errorf("refused connection received %q", got)
	}
	if took < minWait {
		t.Errorf("refused connection closed after %v, before the delay %v", took, minWait)
	}
	return took
}

// ovlStats asserts exact values of proxy stats.
func ovlStats(t *testing.T, p *harness.Proxy, want map[string]int64) {
	t.Helper()
	st := p.Stats()
	for name, v := range want {
		if st[name] != v {
			t.Errorf("%s = %d, want %d", name, st[name], v)
		}
	}
}

// TestConnectionLimit: with max_connections 2, a WebSocket tunnel and a keep-alive connection
// are open; the third connection is accepted and closed (after delay) without a response and
// never reaches the upstream, while the first two keep flowing. Closing one frees its place.
func TestConnectionLimit(t *testing.T) {
	t.Parallel()
	for _, delay := range []time.Duration{0, 400 * time.Millisecond} {
		t.Run(fmt.Sprint("delay ", delay), func(t *testing.T) {
			t.Parallel()
			up := harness.NewRawUpstream(t)
			yaml := harness.Config{UpstreamPort: up.Port(), HCM: wsUpgradeHCM}.YAML()
			yaml = withConnLimit(t, yaml, fmt.Sprintf("stat_prefix: cl, max_connections: 2, delay: %gs", delay.Seconds()))
			p := harness.Start(t, yaml)

			wc, wu := openTunnel(t, p.Addr(""), up)
			plain := harness.Dial(t, p.Addr(""))
			pu := plainExchange(t, plain, up, nil, 1)

			took := refusedWithoutResponse(t, p.Addr(""), delay)
			if delay == 0 && took > 2*time.Second {
				t.Errorf("without a delay the refused connection took %v to close", took)
			}
			up.NoConnection(100 * time.Millisecond)

			tunnelFlows(t, wc, wu, "after the refusal")
			plainExchange(t, plain, up, pu, 2)
			ovlStats(t, p, map[string]int64{
				"connection_limit.cl.limited_connections":  1,
				"connection_limit.cl.active_connections":   2,
				"listener.127.0.0.1_0.downstream_cx_total": 3, // the refused one was accepted
				"http.ingress.downstream_cx_total":         3, // as in Envoy, the HCM saw it too
				"http.ingress.downstream_rq_total":         3,
			})

			plain.Close()
			pu.Close()
			p.WaitStat("connection_limit.cl.active_connections", 1, ioWait)
			again := harness.Dial(t, p.Addr(""))
			au := plainExchange(t, again, up, nil, 1)
			tunnelFlows(t, wc, wu, "at the end")
			again.Close()
			au.Close()
			wc.Close()
			wu.Close()
			p.WaitStat("connection_limit.cl.active_connections", 0, ioWait)
			p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0, ioWait)
			if v := p.Stat("connection_limit.cl.limited_connections"); v != 1 {
				t.Errorf("limited_connections = %d at the end, want 1", v)
			}
		})
	}
}

// TestGlobalConnectionLimit: global_downstream_max_connections 2 counts the connections of every
// listener: with a tunnel open on one and a keep-alive connection on the other, new connections
// to either are closed at accept and counted in that listener's downstream_global_cx_overflow
// (and not in its downstream_cx_total), while the open two keep flowing.
func TestGlobalConnectionLimit(t *testing.T) {
	t.Parallel()
	up := harness.NewRawUpstream(t)
	yaml := harness.Config{UpstreamPort: up.Port(), HCM: wsUpgradeHCM}.YAML()
	i, j := strings.Index(yaml, "  - name: ingress\n"), strings.Index(yaml, "  clusters:\n")
	port := closedPort(t)
	second := strings.Replace(yaml[i:j], "- name: ingress", "- name: second", 1)
	second = strings.Replace(second, "port_value: 0}}", fmt.Sprintf("port_value: %d}}", port), 1)
	second = strings.Replace(second, "stat_prefix: ingress", "stat_prefix: second", 1)
	yaml = withOverload(adminOutsideConnLimit(yaml[:j]+second+yaml[j:]), `  refresh_interval: 0.05s
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 2
`)
	p := harness.Start(t, yaml)
	first, other := "listener.127.0.0.1_0.", fmt.Sprintf("listener.127.0.0.1_%d.", port)

	wc, wu := openTunnel(t, p.Addr("ingress"), up)
	plain := harness.Dial(t, p.Addr("second"))
	pu := plainExchange(t, plain, up, nil, 1)
	p.WaitStat("overload.envoy.resource_monitors.global_downstream_max_connections.pressure", 100, ioWait)

	refusedWithoutResponse(t, p.Addr("ingress"), 0)
	refusedWithoutResponse(t, p.Addr("second"), 0)
	refusedWithoutResponse(t, p.Addr("second"), 0)
	up.NoConnection(100 * time.Millisecond)
	tunnelFlows(t, wc, wu, "after the refusals")
	plainExchange(t, plain, up, pu, 2)
	ovlStats(t, p, map[string]int64{
		first + "downstream_global_cx_overflow": 1,
		other + "downstream_global_cx_overflow": 2,
		first + "downstream_cx_total":           1,
		other + "downstream_cx_total":           1,
		"http.ingress.downstream_cx_total":      1,
		"http.second.downstream_cx_total":       1,
	})

	// A closed connection gives its place back.
	plain.Close()
	pu.Close()
	p.WaitStat(other+"downstream_cx_active", 0, ioWait)
	again := harness.Dial(t, p.Addr("ingress"))
	au := plainExchange(t, again, up, nil, 1)
	p.WaitStat("overload.envoy.resource_monitors.global_downstream_max_connections.pressure", 100, ioWait)
	again.Close()
	au.Close()
	wc.Close()
	wu.Close()
	p.WaitStat("overload.envoy.resource_monitors.global_downstream_max_connections.pressure", 0, ioWait)
	if v := p.Stat(first + "downstream_global_cx_overflow"); v != 1 {
		t.Errorf("downstream_global_cx_overflow = %d at the end, want 1", v)
	}
}

// TestGlobalConnectionLimitCountsAdmin: as in Envoy, an admin connection takes one of the
// global_downstream_max_connections (a connection past the limit to the admin endpoint is closed
// at accept and counted in listener.admin.downstream_global_cx_overflow), unless
// admin.ignore_global_conn_limit is set.
func TestGlobalConnectionLimitCountsAdmin(t *testing.T) {
	t.Parallel()
	limit := func(max int) string {
		return fmt.Sprintf(`  refresh_interval: 0.05s
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: %d
`, max)
	}
	t.Run("counted", func(t *testing.T) {
		t.Parallel()
		up := harness.NewRawUpstream(t)
		p := harness.Start(t, withOverload(harness.Config{UpstreamPort: up.Port(), HCM: wsUpgradeHCM}.YAML(), limit(2)))
		// One admin keep-alive connection and one client connection take both places.
		admin := harness.Dial(t, p.Admin)
		admin.Write("GET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
		if r := readResponses(t, admin, 1)[0]; r.status != 200 {
			t.Fatalf("/ready: %d %q", r.status, r.body)
		}
		plain := harness.Dial(t, p.Addr("ingress"))
		pu := plainExchange(t, plain, up, nil, 1)

		refusedWithoutResponse(t, p.Addr("ingress"), 0)
		refusedWithoutResponse(t, p.Admin, 0)
		// Read the counters over the admitted admin connection: a new one would be refused.
		admin.Write("GET /stats?filter=downstream_global_cx_overflow HTTP/1.1\r\nHost: a\r\n\r\n")
		body := readResponses(t, admin, 2)[1].body
		for _, want := range []string{"listener.admin.downstream_global_cx_overflow: 1", "listener.127.0.0.1_0.downstream_global_cx_overflow: 1"} {
			if !strings.Contains(body, want) {
				t.Errorf("/stats lacks %q:\n%s", want, body)
			}
		}
		up.NoConnection(100 * time.Millisecond)
		plainExchange(t, plain, up, pu, 2) // the admitted ones keep working
		admin.Close()
		plain.Close()
		pu.Close()
		// The places come back once the proxy has seen the closes; until then the admin endpoint
		// refuses the harness's own stats requests.
		if !pollUntil(func() bool { return adminAnswers(p.Admin) }) {
			t.Fatal("the admin endpoint still refuses connections after every connection closed")
		}
	})
	t.Run("ignore_global_conn_limit", func(t *testing.T) {
		t.Parallel()
		up := harness.NewRawUpstream(t)
		yaml := adminOutsideConnLimit(harness.Config{UpstreamPort: up.Port(), HCM: wsUpgradeHCM}.YAML())
		p := harness.Start(t, withOverload(yaml, limit(1)))
		plain := harness.Dial(t, p.Addr("ingress"))
		pu := plainExchange(t, plain, up, nil, 1)
		// The one place is taken, and the admin endpoint still answers (p.Stat is an admin request).
		p.WaitStat("overload.envoy.resource_monitors.global_downstream_max_connections.pressure", 100, ioWait)
		refusedWithoutResponse(t, p.Addr("ingress"), 0)
		if v := p.Stat("listener.admin.downstream_global_cx_overflow"); v != 0 {
			t.Errorf("listener.admin.downstream_global_cx_overflow = %d, want 0", v)
		}
		plain.Close()
		pu.Close()
	})
}

// TestStopAcceptingRequests: a fixed_heap monitor whose limit the heap always exceeds saturates
// stop_accepting_requests; every new request — plain, with a body, or an upgrade — is answered
// 503 "envoy overloaded" without reaching the upstream, and counted in downstream_rq_5xx and
// downstream_rq_overload_close. A bodyless request keeps its connection.
func TestStopAcceptingRequests(t *testing.T) {
	t.Parallel()
	up := harness.NewRawUpstream(t)
	yaml := withOverload(harness.Config{UpstreamPort: up.Port(), HCM: wsUpgradeHCM}.YAML(), saturatedHeap("envoy.overload_actions.stop_accepting_requests", 0.5))
	p := harness.Start(t, yaml)
	p.WaitStat("overload.envoy.overload_actions.stop_accepting_requests.active", 1, ioWait)

	overloaded := func(r clientResp) {
		t.Helper()
		if r.status != 503 || r.body != "envoy overloaded" || r.header.Get("Content-Type") != "text/plain" {
			t.Errorf("got %d %q (content-type %q), want 503 \"envoy overloaded\"", r.status, r.body, r.header.Get("Content-Type"))
		}
	}
	keep := harness.Dial(t, p.Addr(""))
	keep.Write("GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
	overloaded(readResponses(t, keep, 1)[0])
	keep.Write("GET /b HTTP/1.1\r\nHost: t\r\n\r\n")
	keep.Write("GET /c HTTP/1.1\r\nHost: t\r\n\r\n")
	rs := readResponses(t, keep, 3)
	overloaded(rs[1])
	overloaded(rs[2])
	if keep.Closed() {
		t.Error("a bodyless request lost its connection")
	}

	withBody := harness.Dial(t, p.Addr(""))
	withBody.Write("POST /d HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
	overloaded(readResponses(t, withBody, 1)[0])
	withBody.WaitForEOF(ioWait)

	ws := harness.Dial(t, p.Addr(""))
	ws.Write("GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	overloaded(readResponses(t, ws, 1)[0])
	ws.WaitForEOF(ioWait)

	up.NoConnection(100 * time.Millisecond)
	ovlStats(t, p, map[string]int64{
		"http.ingress.downstream_rq_total":                                      5,
		"http.ingress.downstream_rq_5xx":                                        5,
		"http.ingress.downstream_rq_overload_close":                             5,
		"http.ingress.downstream_cx_total":                                      3,
		"http.ingress.downstream_cx_upgrades_total":                             0,
		"cluster.app.upstream_rq_total":                                         0,
		"overload.envoy.overload_actions.stop_accepting_requests.scale_percent": 100,
	})
	if v := p.Stat("overload.envoy.resource_monitors.fixed_heap.pressure"); v < 100 {
		t.Errorf("fixed_heap pressure %d%%, want over 100%% with a 1-byte limit", v)
	}
	keep.Close()
}

// TestShrinkHeap: with envoy.overload_actions.shrink_heap saturated (a fixed_heap limit the heap
// always exceeds), the proxy gives its free memory back every 10 s, as Envoy's HeapShrinker does,
// counted in overload.envoy.overload_actions.shrink_heap.shrink_count; a tunnel open across the
// shrink goes on echoing.
func TestShrinkHeap(t *testing.T) {
	t.Parallel()
	port, _ := upgEchoApp(t)
	yaml := withOverload(harness.Config{UpstreamPort: port, HCM: upgHCMws}.YAML(), saturatedHeap("envoy.overload_actions.shrink_heap", 0.95))
	p := harness.Start(t, yaml)
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+p.Addr("")+"/chat", nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	echo := func(msg string) {
		t.Helper()
		ws.SetReadDeadline(time.Now().Add(ioWait))
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, got, err := ws.ReadMessage(); err != nil || string(got) != "echo:"+msg {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
	}
	echo("before")
	p.WaitStat("overload.envoy.overload_actions.shrink_heap.active", 1, ioWait)
	// The first shrink comes 10 s after start (Envoy's fixed interval).
	p.WaitStat("overload.envoy.overload_actions.shrink_heap.shrink_count", 1, 30*time.Second)
	echo("after")
}
