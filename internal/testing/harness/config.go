package harness

import (
	"fmt"
	"strings"
)

// Config describes the one-listener, one-cluster bootstrap most tests need. Extra YAML is
// spliced in at the places named; indent it as shown in the template (HCM fields at 10 spaces,
// route fields at 18, cluster fields at 4).
type Config struct {
	UpstreamPort int
	StatPrefix   string // default "ingress"
	HCM          string // extra HCM fields, e.g. "upgrade_configs:\n- upgrade_type: websocket"
	Routes       string // the routes list; default: prefix "/" to cluster "app" with RouteExtra
	RouteExtra   string // extra fields of the default route's action
	Filters      string // http_filters; default: router only
	Cluster      string // extra cluster fields
	BufferLimit  int    // listener per_connection_buffer_limit_bytes, 0 for the default
}

// YAML renders the bootstrap.
func (c Config) YAML() string {
	prefix := c.StatPrefix
	if prefix == "" {
		prefix = "ingress"
	}
	routes := c.Routes
	if routes == "" {
		routes = "- match: {prefix: \"/\"}\n  route:\n    cluster: app\n" + indent(c.RouteExtra, 4)
	}
	filters := c.Filters
	if filters == "" {
		filters = RouterFilter
	}
	limit := ""
	if c.BufferLimit > 0 {
		limit = fmt.Sprintf("    per_connection_buffer_limit_bytes: %d\n", c.BufferLimit)
	}
	return fmt.Sprintf(`admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
%s    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %s
%s          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
%s          http_filters:
%s
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 5s
%s    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
`, limit, prefix, indent(c.HCM, 10), indent(routes, 14), indent(filters, 10), indent(c.Cluster, 4), c.UpstreamPort)
}

// RouterFilter is the router entry of an http_filters list.
const RouterFilter = `- name: envoy.filters.http.router
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}`

// BufferFilter returns a buffer filter entry with the given max_request_bytes.
func BufferFilter(max int) string {
	return fmt.Sprintf(`- name: envoy.filters.http.buffer
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: %d}`, max)
}

func indent(s string, n int) string {
	if strings.TrimSpace(s) == "" {
		return ""
	}
	pad := strings.Repeat(" ", n)
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(pad + line + "\n")
	}
	return b.String()
}
