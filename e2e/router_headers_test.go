package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// TestRouterEnvoyHeaders: the router's x-envoy-* headers as Envoy adds them — the expected
// timeout and the original path toward the upstream, the upstream service time on a response to
// a complete request but never on a 101 (an upgrade's request does not end) — and none of them
// with the Router's suppress_envoy_headers.
func TestRouterEnvoyHeaders(t *testing.T) {
	t.Parallel()
	routes := "- match: {prefix: \"/api/\"}\n  route: {cluster: app, prefix_rewrite: \"/v2/\", timeout: 5s}\n" +
		"- match: {prefix: \"/\"}\n  route: {cluster: app}\n"
	for _, suppress := range []bool{false, true} {
		name, filters := "default", ""
		if suppress {
			name = "suppress_envoy_headers"
			filters = "- name: envoy.filters.http.router\n  typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router, suppress_envoy_headers: true}"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, up := upgStart(t, harness.Config{HCM: upgHCMws, Routes: routes, Filters: filters})

			c := harness.Dial(t, p.Addr(""))
			c.Write("GET /api/users HTTP/1.1\r\nHost: t\r\n\r\n")
			u := up.Accept(upgWait)
			head := strings.ToLower(u.WaitForHead(upgWait))
			const slow = 40 * time.Millisecond
			time.Sleep(slow) // the upstream's own time, which the service time must include
			u.Write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			r := readResponses(t, c, 1)[0]
			if r.status != 200 || r.body != "ok" {
				t.Fatalf("response %d %q", r.status, r.body)
			}
			st := r.header.Get("X-Envoy-Upstream-Service-Time")
			if suppress {
				for _, h := range []string{"x-envoy-expected-rq-timeout-ms", "x-envoy-original-path"} {
					if strings.Contains(head, h) {
						t.Errorf("upstream request carries %s despite suppress_envoy_headers:\n%s", h, head)
					}
				}
				if st != "" {
					t.Errorf("x-envoy-upstream-service-time %q despite suppress_envoy_headers", st)
				}
			} else {
				for _, h := range []string{"x-envoy-expected-rq-timeout-ms: 5000", "x-envoy-original-path: /api/users"} {
					if !strings.Contains(head, h) {
						t.Errorf("upstream request lacks %q:\n%s", h, head)
					}
				}
				if ms, err := strconv.Atoi(st); err != nil || ms < int(slow.Milliseconds()) || ms > 10000 {
					t.Errorf("x-envoy-upstream-service-time %q, want the ms from the request's end (at least %d)", st, slow.Milliseconds())
				}
			}
			c.Close()
			u.Close()

			wc, wu, _ := upgOpenTunnel(t, p, up, upgWSReq("/ws"), "websocket")
			if got := strings.ToLower(wc.Received()); strings.Contains(got, "x-envoy-upstream-service-time") {
				t.Errorf("101 carries x-envoy-upstream-service-time:\n%s", got)
			}
			wc.Close()
			wu.WaitForEOF(upgWait)
			wu.Close()
			upgEnd(t, p)
		})
	}
}
