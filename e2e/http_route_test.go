package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// Routing, retries, timeouts and stats, end to end.

// firstFails answers the first request 503 and the others 200.
func firstFails(n int64) int {
	if n == 1 {
		return 503
	}
	return 200
}

func TestRetryOn5xx(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     func(n int64) int
		wantStatus int
		wantRetry  int64
		want503    int64
	}{
		{"second attempt succeeds", firstFails, 200, 1, 1},
		{"retries exhausted", func(int64) int { return 503 }, 503, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := newEchoApp(t, "app", tt.status)
			p := harness.Start(t, harness.Config{UpstreamPort: a.port(),
				RouteExtra: "retry_policy: {retry_on: 5xx, num_retries: 1}"}.YAML())
			r := getVia(t, p.Addr(""), "app", "/flaky")
			if r.status != tt.wantStatus || r.header.Get("x-app") != "app" {
				t.Fatalf("client got %d %v, want %d from the app", r.status, r.header, tt.wantStatus)
			}
			if n := a.reqs.Load(); n != 2 {
				t.Errorf("app served %d requests, want 2", n)
			}
			for stat, want := range map[string]int64{
				"cluster.app.upstream_rq_retry": tt.wantRetry,
				"cluster.app.upstream_rq_503":   tt.want503,
				"cluster.app.upstream_rq_total": 2,
			} {
				if v := p.Stat(stat); v != want {
					t.Errorf("%s = %d, want %d", stat, v, want)
				}
			}
		})
	}
}

func TestRetryOnConnectFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, retry string
		wantStatus  int
		wantRetry   int64
	}{
		{"retried to the next host", "retry_policy: {retry_on: connect-failure, num_retries: 1}", 200, 1},
		{"no retry policy", "", 503, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := newEchoApp(t, "app", nil)
			// Round robin starts with the first endpoint: the closed port.
			yaml := harness.Config{UpstreamPort: closedPort(t), RouteExtra: tt.retry}.YAML() +
				fmt.Sprintf("        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}\n", a.port())
			p := harness.Start(t, yaml)
			r := getVia(t, p.Addr(""), "app", "/")
			if r.status != tt.wantStatus {
				t.Fatalf("status %d %q, want %d", r.status, r.body, tt.wantStatus)
			}
			if tt.wantStatus == 503 && !strings.Contains(r.body, "reset reason: connection failure") {
				t.Errorf("503 body %q", r.body)
			}
			if v := p.Stat("cluster.app.upstream_cx_connect_fail"); v != 1 {
				t.Errorf("upstream_cx_connect_fail = %d, want 1", v)
			}
			if v := p.Stat("cluster.app.upstream_rq_retry"); v != tt.wantRetry {
				t.Errorf("upstream_rq_retry = %d, want %d", v, tt.wantRetry)
			}
		})
	}
}

func TestRouteTimeout(t *testing.T) {
	t.Parallel()
	u := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: u.Port(), RouteExtra: "timeout: 0.3s"}.YAML())
	c := harness.Dial(t, p.Addr(""))
	start := time.Now()
	c.Write("GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
	uc := u.Accept(ioWait)
	readRequests(t, uc, 1) // and never answer
	r := readResponses(t, c, 1)[0]
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("answered after %v, want about 0.3s", d)
	}
	if r.status != 504 || r.body != "upstream request timeout" {
		t.Errorf("got %d %q, want 504 \"upstream request timeout\"", r.status, r.body)
	}
	uc.WaitForEOF(ioWait) // the abandoned upstream request's connection is closed
	if v := p.Stat("cluster.app.upstream_rq_timeout"); v != 1 {
		t.Errorf("upstream_rq_timeout = %d, want 1", v)
	}
}

func TestRouteActions(t *testing.T) {
	t.Parallel()
	a := newEchoApp(t, "app", nil)
	p := harness.Start(t, harness.Config{UpstreamPort: a.port(), Routes: `- match: {prefix: "/direct"}
  direct_response: {status: 418, body: {inline_string: "short and stout"}}
- match: {prefix: "/api/"}
  route: {cluster: app, prefix_rewrite: "/v2/"}
- match: {prefix: "/rehost"}
  route: {cluster: app, host_rewrite_literal: backend.internal}
- match: {prefix: "/headers"}
  route: {cluster: app}
  request_headers_to_add:
  - header: {key: x-added, value: one}
  request_headers_to_remove: [x-drop]
  response_headers_to_add:
  - header: {key: x-resp, value: r}
  response_headers_to_remove: [x-app-secret]
- match: {prefix: "/"}
  route: {cluster: app}`}.YAML())
	addr := p.Addr("")

	t.Run("direct_response", func(t *testing.T) {
		r := getVia(t, addr, "app", "/direct")
		if r.status != 418 || r.body != "short and stout" {
			t.Errorf("got %d %q", r.status, r.body)
		}
		if n := a.reqs.Load(); n != 0 {
			t.Errorf("direct response reached the app (%d requests)", n)
		}
	})
	t.Run("prefix_rewrite", func(t *testing.T) {
		e := echoOf(t, getVia(t, addr, "app", "/api/users?id=7"))
		if e.URI != "/v2/users?id=7" {
			t.Errorf("upstream path %q, want /v2/users?id=7", e.URI)
		}
		if got := e.Header.Get("X-Envoy-Original-Path"); got != "/api/users?id=7" {
			t.Errorf("x-envoy-original-path = %q", got)
		}
	})
	t.Run("host_rewrite_literal", func(t *testing.T) {
		if e := echoOf(t, getVia(t, addr, "front.example", "/rehost")); e.Host != "backend.internal" {
			t.Errorf("upstream host %q", e.Host)
		}
	})
	t.Run("header mutations", func(t *testing.T) {
		r := getVia(t, addr, "app", "/headers", "X-Drop: gone", "X-Stay: here")
		e := echoOf(t, r)
		if e.Header.Get("X-Added") != "one" || e.Header.Get("X-Drop") != "" || e.Header.Get("X-Stay") != "here" {
			t.Errorf("upstream headers %v", e.Header)
		}
		if r.header.Get("X-Resp") != "r" || r.header.Get("X-App-Secret") != "" || r.header.Get("X-App") != "app" {
			t.Errorf("response headers %v", r.header)
		}
	})
	t.Run("no mutations elsewhere", func(t *testing.T) {
		r := getVia(t, addr, "app", "/plain", "X-Drop: kept")
		if e := echoOf(t, r); e.Header.Get("X-Drop") != "kept" || e.Header.Get("X-Added") != "" {
			t.Errorf("upstream headers %v", e.Header)
		}
		if r.header.Get("X-App-Secret") != "s3cret" {
			t.Errorf("response headers %v", r.header)
		}
	})
}

func TestWeightedClustersZeroWeightGetsNothing(t *testing.T) {
	t.Parallel()
	a, o := newEchoApp(t, "app", nil), newEchoApp(t, "other", nil)
	yaml := withCluster(harness.Config{UpstreamPort: a.port(), Routes: `- match: {prefix: "/"}
  route:
    weighted_clusters:
      clusters:
      - {name: app, weight: 1}
      - {name: other, weight: 0}`}.YAML(), "other", o.port())
	p := harness.Start(t, yaml)
	for i := range 10 {
		if got := getVia(t, p.Addr(""), "app", fmt.Sprintf("/%d", i)).header.Get("x-app"); got != "app" {
			t.Fatalf("request %d went to %q", i, got)
		}
	}
	if n := o.reqs.Load(); n != 0 {
		t.Errorf("weight 0 cluster got %d requests", n)
	}
}

func TestRouteMatchers(t *testing.T) {
	t.Parallel()
	a, o := newEchoApp(t, "app", nil), newEchoApp(t, "other", nil)
	yaml := withCluster(harness.Config{UpstreamPort: a.port(), Routes: `- match:
    prefix: "/"
    headers: [{name: x-tenant, string_match: {exact: blue}}]
  route: {cluster: other}
- match: {safe_regex: {regex: "/items/[0-9]+"}}
  route: {cluster: other}
- match: {prefix: "/"}
  route: {cluster: app}`}.YAML(), "other", o.port())
	p := harness.Start(t, yaml)
	tests := []struct {
		path string
		hdrs []string
		want string
	}{
		{"/items/42", nil, "other"},
		{"/items/42?x=1", nil, "other"}, // the query is not part of a safe_regex match
		{"/items/abc", nil, "app"},
		{"/items/42/more", nil, "app"}, // safe_regex matches the whole path
		{"/x", []string{"X-Tenant: blue"}, "other"},
		{"/x", []string{"X-Tenant: red"}, "app"},
		{"/x", nil, "app"},
	}
	for _, tt := range tests {
		if got := getVia(t, p.Addr(""), "app", tt.path, tt.hdrs...).header.Get("x-app"); got != tt.want {
			t.Errorf("%s %v went to %q, want %q", tt.path, tt.hdrs, got, tt.want)
		}
	}
}

func TestVirtualHostDomains(t *testing.T) {
	t.Parallel()
	a, o := newEchoApp(t, "app", nil), newEchoApp(t, "other", nil)
	yaml := withCluster(harness.Config{UpstreamPort: a.port()}.YAML(), "other", o.port())
	yaml = strings.Replace(yaml, "            - name: all\n", `            - name: special
              domains: ["a.example", "*.b.example"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: other}
            - name: all
`, 1)
	p := harness.Start(t, yaml)
	for host, want := range map[string]string{
		"a.example":      "other",
		"A.Example":      "other",
		"a.example:8080": "app", // Envoy matches the port too unless told to strip it
		"x.b.example":    "other",
		"y.x.b.example":  "other",
		"b.example":      "app", // the wildcard needs at least one character
		"c.example":      "app",
		"aa.example":     "app",
	} {
		if got := getVia(t, p.Addr(""), host, "/").header.Get("x-app"); got != want {
			t.Errorf("Host %s went to %q, want %q", host, got, want)
		}
	}
}

func TestNoRouteIs404WithoutUpstream(t *testing.T) {
	t.Parallel()
	u := harness.NewRawUpstream(t)
	yaml := harness.Config{UpstreamPort: u.Port(), Routes: "- match: {prefix: \"/only\"}\n  route: {cluster: app}"}.YAML()
	yaml = strings.Replace(yaml, `domains: ["*"]`, `domains: ["a.example"]`, 1)
	p := harness.Start(t, yaml)
	tests := []struct{ name, host, path string }{
		{"no matching route", "a.example", "/elsewhere"},
		{"no matching virtual host", "z.example", "/only"},
		// Envoy compares the Host with its port (ignore_port_in_host_matching defaults to false).
		{"host with a port the domain lacks", "a.example:8080", "/only"},
	}
	for _, tt := range tests {
		c := harness.Dial(t, p.Addr(""))
		c.Write(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", tt.path, tt.host))
		if r := readResponses(t, c, 1)[0]; r.status != 404 {
			t.Errorf("%s: status %d, want 404", tt.name, r.status)
		}
		c.Close()
	}
	u.NoConnection(150 * time.Millisecond)
	if v := p.Stat("http.ingress.downstream_rq_4xx"); v != int64(len(tests)) {
		t.Errorf("downstream_rq_4xx = %d, want %d", v, len(tests))
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	a := newEchoApp(t, "app", nil)
	port := closedPort(t)
	yaml := strings.Replace(harness.Config{UpstreamPort: a.port(), Routes: "- match: {prefix: \"/ok\"}\n  route: {cluster: app}"}.YAML(),
		"    address: {socket_address: {address: 127.0.0.1, port_value: 0}}",
		fmt.Sprintf("    address: {socket_address: {address: 127.0.0.1, port_value: %d}}", port), 1)
	p := harness.Start(t, yaml)

	c1 := harness.Dial(t, p.Addr(""))
	c1.Write("GET /ok HTTP/1.1\r\nHost: app\r\n\r\n")
	readResponses(t, c1, 1)
	c1.Write("GET /ok HTTP/1.1\r\nHost: app\r\n\r\n")
	rs := readResponses(t, c1, 2)
	c2 := harness.Dial(t, p.Addr(""))
	c2.Write("GET /missing HTTP/1.1\r\nHost: app\r\n\r\n")
	r3 := readResponses(t, c2, 1)[0]
	if rs[0].status != 200 || rs[1].status != 200 || r3.status != 404 {
		t.Fatalf("statuses %d %d %d", rs[0].status, rs[1].status, r3.status)
	}

	want := map[string]int64{
		"http.ingress.downstream_rq_total":                             3,
		"http.ingress.downstream_rq_2xx":                               2,
		"http.ingress.downstream_rq_4xx":                               1,
		"http.ingress.downstream_rq_5xx":                               0,
		"http.ingress.downstream_cx_total":                             2,
		"http.ingress.downstream_cx_active":                            2,
		fmt.Sprintf("listener.127.0.0.1_%d.downstream_cx_total", port): 2,
		"cluster.app.upstream_rq_200":                                  2,
		"cluster.app.upstream_rq_2xx":                                  2,
		"cluster.app.upstream_rq_total":                                2,
	}
	got := p.Stats()
	for name, w := range want {
		if v, ok := got[name]; v != w {
			t.Errorf("%s = %d (present %v), want %d", name, v, ok, w)
		}
	}
	c1.Close()
	c2.Close()
	p.WaitStat("http.ingress.downstream_cx_active", 0, ioWait)
	p.WaitStat(fmt.Sprintf("listener.127.0.0.1_%d.downstream_cx_active", port), 0, ioWait)

	_, body := adminDo(t, "GET", "http://"+p.Admin+"/stats/prometheus")
	const line = `envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="app"} 2`
	if !strings.Contains(body, line+"\n") {
		t.Errorf("/stats/prometheus lacks %s:\n%s", line, grepLines(body, "envoy_cluster_upstream_rq"))
	}
}

// grepLines returns the lines of s that contain substr.
func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
