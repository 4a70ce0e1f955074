package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// Upstream-side limits, end to end: retries with per_try_timeout and retry_on reset, circuit
// breakers (max_connections with no pending queue, max_requests), a STRICT_DNS cluster, and the
// RANDOM and LEAST_REQUEST load balancers.

// limCluster renders one more cluster for a harness.Config bootstrap (clusters come last): extra
// holds cluster fields at 4 spaces (type defaults to STATIC), hosts are endpoint addresses.
func limCluster(name, extra string, hosts ...string) string {
	if !strings.Contains(extra, "type:") {
		extra = "type: STATIC\n" + extra
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  - name: %s\n    connect_timeout: 1s\n", name)
	for _, l := range strings.Split(strings.TrimSpace(extra), "\n") {
		b.WriteString("    " + l + "\n")
	}
	fmt.Fprintf(&b, "    load_assignment:\n      cluster_name: %s\n      endpoints:\n      - lb_endpoints:\n", name)
	for _, h := range hosts {
		host, port, _ := strings.Cut(h, ":")
		fmt.Fprintf(&b, "        - endpoint: {address: {socket_address: {address: %s, port_value: %s}}}\n", host, port)
	}
	return b.String()
}

// limLocal is the endpoint address of a local port.
func limLocal(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

func TestLimitsRetries(t *testing.T) {
	t.Parallel()
	u := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: u.Port(), Routes: `- match: {prefix: "/pertry"}
  route:
    cluster: app
    timeout: 10s
    retry_policy: {retry_on: 5xx, num_retries: 1, per_try_timeout: 0.4s}
- match: {prefix: "/reset"}
  route:
    cluster: app
    retry_policy: {retry_on: reset, num_retries: 1}`}.YAML())
	addr := p.Addr("")

	t.Run("per_try_timeout then 200", func(t *testing.T) {
		c := harness.Dial(t, addr)
		defer c.Close()
		start := time.Now()
		c.Write("GET /pertry HTTP/1.1\r\nHost: app\r\n\r\n")
		first := u.Accept(ioWait)
		readRequests(t, first, 1) // and hang
		first.WaitForEOF(ioWait)  // the proxy gives up on it
		if d := limSince(start); d < 300*time.Millisecond {
			t.Errorf("first attempt abandoned after %v, before the 0.4s per-try timeout", d)
		}
		second := u.Accept(ioWait)
		if r := readRequests(t, second, 1)[0]; r.target != "/pertry" {
			t.Errorf("retry for %q", r.target)
		}
		second.Write(closeResponse)
		if r := readResponses(t, c, 1)[0]; r.status != 200 || r.body != "ok" {
			t.Errorf("client got %d %q, want the retry's 200", r.status, r.body)
		}
		limStats(t, p, map[string]int64{
			"cluster.app.upstream_rq_per_try_timeout": 1,
			"cluster.app.upstream_rq_retry":           1,
			"cluster.app.upstream_rq_retry_success":   1,
			"http.ingress.downstream_rq_2xx":          1,
		})
	})
	t.Run("reset then 200", func(t *testing.T) {
		c := harness.Dial(t, addr)
		defer c.Close()
		c.Write("GET /reset HTTP/1.1\r\nHost: app\r\n\r\n")
		first := u.Accept(ioWait)
		readRequests(t, first, 1)
		first.Close() // without answering
		second := u.Accept(ioWait)
		if r := readRequests(t, second, 1)[0]; r.target != "/reset" {
			t.Errorf("retry for %q", r.target)
		}
		second.Write(closeResponse)
		if r := readResponses(t, c, 1)[0]; r.status != 200 || r.body != "ok" {
			t.Errorf("client got %d %q, want the retry's 200", r.status, r.body)
		}
		limStats(t, p, map[string]int64{
			"cluster.app.upstream_rq_per_try_timeout": 1,
			"cluster.app.upstream_rq_retry":           2,
			"cluster.app.upstream_rq_rx_reset":        1,
			"http.ingress.downstream_rq_2xx":          2,
			"http.ingress.downstream_rq_5xx":          0,
		})
	})
}

func TestLimitsCircuitBreakers(t *testing.T) {
	t.Parallel()
	cxUp := harness.NewRawUpstream(t)
	rqUp := harness.NewRawUpstream(t)
	yaml := harness.Config{UpstreamPort: cxUp.Port(),
		Cluster: "circuit_breakers: {thresholds: [{max_connections: 1, max_pending_requests: 0}]}",
		Routes: `- match: {prefix: "/cx"}
  route: {cluster: app, timeout: 10s}
- match: {prefix: "/rq"}
  route: {cluster: rq, timeout: 10s}`}.YAML()
	yaml += limCluster("rq", "circuit_breakers: {thresholds: [{max_requests: 1}]}", limLocal(rqUp.Port()))
	p := harness.Start(t, yaml)
	addr := p.Addr("")

	tests := []struct {
		name, path, cluster string
		up                  *harness.RawUpstream
	}{
		{"max_connections 1, max_pending_requests 0", "/cx", "app", cxUp},
		{"max_requests 1", "/rq", "rq", rqUp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hold := harness.Dial(t, addr)
			defer hold.Close()
			hold.Write("GET " + tt.path + "/hold HTTP/1.1\r\nHost: app\r\n\r\n")
			uc := tt.up.Accept(ioWait)
			readRequests(t, uc, 1) // the only connection (request) is now busy

			r := roundTrip(t, addr, "GET "+tt.path+"/second HTTP/1.1\r\nHost: app\r\n\r\n")
			const want = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
			if r.status != 503 || r.body != want || r.header.Get("x-envoy-overloaded") != "true" {
				t.Errorf("concurrent request: %d %q x-envoy-overloaded %q, want 503 %q true", r.status, r.body,
					r.header.Get("x-envoy-overloaded"), want)
			}
			tt.up.NoConnection(100 * time.Millisecond)
			if v := p.Stat("cluster." + tt.cluster + ".upstream_rq_pending_overflow"); v < 1 {
				t.Errorf("%s upstream_rq_pending_overflow = %d, want ≥ 1", tt.cluster, v)
			}

			// The held request still completes, and the breaker closes again after it.
			uc.Write(okResponse)
			if r := readResponses(t, hold, 1)[0]; r.status != 200 {
				t.Errorf("held request: %d", r.status)
			}
			p.WaitStat("cluster."+tt.cluster+".upstream_rq_active", 0, ioWait)
			hold.Write("GET " + tt.path + "/again HTTP/1.1\r\nHost: app\r\n\r\n")
			pollUntil(func() bool { return len(parseRequests(uc.Received())) == 2 || uc.Closed() })
			again := uc
			if len(parseRequests(uc.Received())) < 2 {
				again = tt.up.Accept(ioWait)
			}
			again.Write(closeResponse)
			if r := readResponses(t, hold, 2)[1]; r.status != 200 {
				t.Errorf("request after the breaker closed: %d", r.status)
			}
		})
	}
	if v := p.Stat("http.ingress.downstream_rq_5xx"); v != 2 {
		t.Errorf("downstream_rq_5xx = %d, want 2", v)
	}
}

func TestLimitsDNSAndLoadBalancers(t *testing.T) {
	t.Parallel()
	dnsApp := newEchoApp(t, "dns", nil)
	lrA, lrB := newEchoApp(t, "lr-a", nil), newEchoApp(t, "lr-b", nil)
	rndA, rndB := newEchoApp(t, "rnd-a", nil), newEchoApp(t, "rnd-b", nil)
	yaml := harness.Config{UpstreamPort: closedPort(t), Routes: `- match: {prefix: "/dns"}
  route: {cluster: dns}
- match: {prefix: "/lr"}
  route: {cluster: lr}
- match: {prefix: "/rnd"}
  route: {cluster: rnd}`}.YAML()
	yaml += limCluster("dns", "type: STRICT_DNS\ndns_lookup_family: V4_ONLY", fmt.Sprintf("localhost:%d", dnsApp.port()))
	yaml += limCluster("lr", "lb_policy: LEAST_REQUEST", limLocal(lrA.port()), limLocal(lrB.port()))
	yaml += limCluster("rnd", "lb_policy: RANDOM", limLocal(rndA.port()), limLocal(rndB.port()))
	p := harness.Start(t, yaml)
	addr := p.Addr("")

	t.Run("STRICT_DNS localhost", func(t *testing.T) {
		r := roundTrip(t, addr, "GET /dns HTTP/1.1\r\nHost: app\r\n\r\n")
		if e := echoOf(t, r); e.App != "dns" || e.URI != "/dns" {
			t.Errorf("answered by %s for %s", e.App, e.URI)
		}
	})
	const n = 20
	for _, tt := range []struct {
		name, path string
		a, b       *echoApp
	}{
		{"LEAST_REQUEST", "/lr", lrA, lrB},
		{"RANDOM", "/rnd", rndA, rndB},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := harness.Dial(t, addr)
			defer c.Close()
			var raw strings.Builder
			for i := range n {
				fmt.Fprintf(&raw, "GET %s/%d HTTP/1.1\r\nHost: app\r\n\r\n", tt.path, i)
			}
			c.Write(raw.String()) // pipelined: answered one at a time, in order
			for i, r := range readResponses(t, c, n) {
				if e := echoOf(t, r); e.URI != fmt.Sprintf("%s/%d", tt.path, i) {
					t.Errorf("response %d answers %s", i, e.URI)
				}
			}
			a, b := tt.a.reqs.Load(), tt.b.reqs.Load()
			if a+b != n || a == 0 || b == 0 {
				t.Errorf("hosts served %d and %d of %d requests; want both some", a, b, n)
			}
		})
	}
	if v := p.Stat("http.ingress.downstream_rq_2xx"); v != 2*n+1 {
		t.Errorf("downstream_rq_2xx = %d, want %d", v, 2*n+1)
	}
}
