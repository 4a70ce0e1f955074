package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
)

const (
	hcmPath   = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
	vhostPath = hcmPath + ".route_config.virtual_hosts[0]"
	routePath = vhostPath + ".routes[0]"
)

func TestParseErrors(t *testing.T) {
	const routerTC = `typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}`
	tests := []parseErrorCase{
		{
			name: "unsupported HCM field tracing",
			doc:  conf(t, "#HCM", "tracing: {}"),
			path: hcmPath + ".tracing", msg: `field "tracing" is not supported by switchyard`, lineAt: "tracing:",
		},
		{
			name: "unsupported route action field cors",
			doc:  conf(t, "#ACTION", "cors: {}"),
			path: routePath + ".route.cors", msg: `field "cors" is not supported by switchyard`, lineAt: "cors:",
		},
		{
			name: "cluster transport_socket without typed_config",
			doc:  conf(t, "#CLUSTER", "transport_socket:\n  name: envoy.transport_sockets.tls"),
			path: "static_resources.clusters[0].transport_socket", msg: `transport socket "envoy.transport_sockets.tls" has no typed_config`, lineAt: "transport_socket:",
		},
		{
			name: "unsupported Http2ProtocolOptions field",
			doc:  conf(t, "#HCM", "http2_protocol_options:\n  allow_connect: true\n  hpack_table_size: 0"),
			path: hcmPath + ".http2_protocol_options.hpack_table_size", msg: `field "hpack_table_size" is not supported by switchyard; the HPACK table size is fixed`, lineAt: "hpack_table_size:",
		},
		{
			name: "Http2ProtocolOptions field without an explanation of its own",
			doc:  conf(t, "#HCM", "http2_protocol_options:\n  max_metadata_size: 1"),
			path: hcmPath + ".http2_protocol_options.max_metadata_size", msg: "switchyard implements allow_connect", lineAt: "max_metadata_size:",
		},
		{
			name: "Http2ProtocolOptions out of range fails ValidateAll",
			doc:  conf(t, "#HCM", "http2_protocol_options:\n  initial_stream_window_size: 100"),
			path: hcmPath + ".http2_protocol_options.initial_stream_window_size", msg: "value must be inside range", lineAt: "initial_stream_window_size:",
		},
		{
			name: "rds",
			doc: `static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          rds:
            route_config_name: local
            config_source: {ads: {}}
          http_filters:
          - name: envoy.filters.http.router
            ` + routerTC + "\n",
			path: hcmPath + ".rds", msg: `field "rds" is not supported by switchyard; use an inline route_config`, lineAt: "rds:",
		},
		{
			name: "unknown field",
			doc:  conf(t, "#HCM", "stat_prefx: typo"),
			path: hcmPath + ".stat_prefx", msg: `unknown field "stat_prefx"`, lineAt: "stat_prefx",
		},
		{
			name: "unknown typed_config type",
			doc:  conf(t, "#FILTERS", "- name: cors\n  typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}"),
			path: hcmPath + ".http_filters[0].typed_config.@type", msg: "unknown or not supported", lineAt: "cors.v3.Cors",
		},
		{
			name: "empty route cluster fails ValidateAll",
			doc:  conf(t, "cluster: backend", `cluster: ""`),
			path: routePath + ".route.cluster", msg: "value length must be at least 1", lineAt: `cluster: ""`,
		},
		{
			name: "non-positive connect_timeout fails ValidateAll",
			doc:  conf(t, "#CLUSTER", "connect_timeout: -1s"),
			path: "static_resources.clusters[0].connect_timeout", msg: "value must be greater than 0s", lineAt: "connect_timeout",
		},
		{
			name: "negative route timeout",
			doc:  conf(t, "#ACTION", "timeout: -5s"),
			path: routePath + ".route.timeout", msg: "must not be negative", lineAt: "timeout: -5s",
		},
		{
			name: "protojson value error",
			doc:  conf(t, "#CLUSTER", "connect_timeout: soon"),
			path: "static_resources.clusters[0].connect_timeout", msg: "Duration", lineAt: "connect_timeout",
		},
		{
			name: "router not last in an upgrade chain",
			doc: conf(t, "#HCM", `upgrade_configs:
- upgrade_type: websocket
  filters:
  - name: envoy.filters.http.router
    `+routerTC+`
  - name: envoy.filters.http.buffer
    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 1024}`),
			path: hcmPath + ".upgrade_configs[0].filters[0]", msg: "router must be the last filter in a http upgrade filter chain", lineAt: "  - name: envoy.filters.http.router",
		},
		{
			name: "upgrade chain without router",
			doc: conf(t, "#HCM", `upgrade_configs:
- upgrade_type: websocket
  filters:
  - name: envoy.filters.http.buffer
    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 1024}`),
			path: hcmPath + ".upgrade_configs[0].filters", msg: "there is no router", lineAt: "  filters:",
		},
		{
			name: "router twice in http_filters",
			doc:  conf(t, "#FILTERS", "- name: envoy.filters.http.router\n  "+routerTC),
			path: hcmPath + ".http_filters[0]", msg: "router must be the last filter in http_filters", lineAt: "- name: envoy.filters.http.router",
		},
		{
			name: "duplicate HCM upgrade types differ only in case",
			doc:  conf(t, "#HCM", "upgrade_configs:\n- upgrade_type: websocket\n- upgrade_type: WebSocket"),
			path: hcmPath + ".upgrade_configs[1].upgrade_type", msg: "multiple upgrade configs with the same name: 'WebSocket'", lineAt: "upgrade_type: WebSocket",
		},
		{
			name: "empty HCM upgrade type",
			doc:  conf(t, "#HCM", "upgrade_configs:\n- upgrade_type: \"\""),
			path: hcmPath + ".upgrade_configs[0].upgrade_type", msg: "must not be empty", lineAt: "upgrade_type",
		},
		{
			name: "duplicate route upgrade types differ only in case",
			doc:  conf(t, "#ACTION", "upgrade_configs:\n- upgrade_type: websocket\n- upgrade_type: WEBSOCKET"),
			path: routePath + ".route.upgrade_configs[1].upgrade_type", msg: "Duplicate upgrade WEBSOCKET", lineAt: "upgrade_type: WEBSOCKET",
		},
		{
			name: "route connect_config",
			doc:  conf(t, "#ACTION", "upgrade_configs:\n- upgrade_type: CONNECT\n  connect_config: {}"),
			path: routePath + ".route.upgrade_configs[0].connect_config", msg: "CONNECT termination is not supported yet", lineAt: "connect_config",
		},
		{
			name: "unknown weighted cluster",
			doc:  conf(t, "cluster: backend", "weighted_clusters: {clusters: [{name: backend, weight: 1}, {name: other, weight: 1}]}"),
			path: routePath + ".route.weighted_clusters.clusters[1].name", msg: `unknown cluster "other"`, lineAt: "weighted_clusters",
		},
		{
			name: "duplicate cluster",
			doc:  base + "  - name: backend # again\n",
			path: "static_resources.clusters[1].name", msg: `duplicate cluster name "backend"`, lineAt: "# again",
		},
		{
			name: "duplicate domain across virtual hosts",
			doc: conf(t, "            - name: all\n", `            - name: first
              domains: [example.com]
              routes: [{match: {prefix: /}, route: {cluster: backend}}]
            - name: all
`, `domains: ["*"]`, `domains: ["*", Example.com]`),
			path: hcmPath + ".route_config.virtual_hosts[1].domains[1]", msg: "Only unique values for domains are permitted. Duplicate entry of domain example.com", lineAt: "Example.com",
		},
		{
			name: "two wildcard domains",
			doc: conf(t, `domains: ["*"]`, `domains: ["*"] # again`, "            - name: all\n", `            - name: first
              domains: ["*"]
              routes: [{match: {prefix: /}, route: {cluster: backend}}]
            - name: all
`),
			path: hcmPath + ".route_config.virtual_hosts[1].domains[0]", msg: "Only a single wildcard domain is permitted", lineAt: "# again",
		},
		{
			name: "HTTP3 codec",
			doc:  conf(t, "#HCM", "codec_type: http3"),
			path: hcmPath + ".codec_type", msg: "codec_type HTTP3 is not supported by switchyard", lineAt: "codec_type",
		},
		{
			name: "legacy buffer without typed_config",
			doc:  conf(t, "#FILTERS", "- name: envoy.buffer"),
			path: hcmPath + ".http_filters[0]", msg: "max_request_bytes is required", lineAt: "envoy.buffer",
		},
		{
			name: "unknown filter without typed_config",
			doc:  conf(t, "#FILTERS", "- name: acme.auth"),
			path: hcmPath + ".http_filters[0]", msg: `filter "acme.auth" has no typed_config`, lineAt: "acme.auth",
		},
		{
			name: "HttpFilter disabled",
			doc:  conf(t, "#FILTERS", "- name: buf\n  disabled: true\n  typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 1}"),
			path: hcmPath + ".http_filters[0].disabled", msg: `field "disabled" is not supported`, lineAt: "disabled: true",
		},
		{
			name: "per-filter config for a filter that does not exist",
			doc:  conf(t, "#RENTRY", "typed_per_filter_config:\n  envoy.filters.http.buffer:\n    \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n    disabled: true"),
			path: routePath + `.typed_per_filter_config["envoy.filters.http.buffer"]`, msg: `no http filter named "envoy.filters.http.buffer"`, lineAt: "  envoy.filters.http.buffer:",
		},
		{
			name: "per-filter config with a nested config",
			doc:  conf(t, "#RENTRY", "typed_per_filter_config:\n  envoy.filters.http.router:\n    \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n    config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}"),
			path: routePath + `.typed_per_filter_config["envoy.filters.http.router"].config`, msg: `field "config" is not supported`, lineAt: "    config:",
		},
		{
			name: "unsupported retry_on",
			doc:  conf(t, "#ACTION", "retry_policy: {retry_on: \"5xx,gateway-error\"}"),
			path: routePath + ".route.retry_policy.retry_on", msg: `retry_on "gateway-error" is not supported`, lineAt: "retry_policy",
		},
		{
			name: "regex Go cannot compile",
			doc:  conf(t, "#ROUTELIST", "- match: {safe_regex: {regex: \"a(b\"}}\n  route: {cluster: backend}"),
			path: routePath + ".match.safe_regex.regex", msg: "cannot compile regex", lineAt: "safe_regex",
		},
		{
			name: "non-HCM network filter",
			doc: `static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`,
			path: "static_resources.listeners[0].filter_chains[0].filters[0]", msg: `network filter "envoy.filters.network.http_connection_manager" of type "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" is not supported`, lineAt: "- name: envoy.filters.network",
		},
		{
			name: "STATIC cluster with a host name",
			doc:  conf(t, "address: 127.0.0.1, port_value: 8080", "address: backend.local, port_value: 8080"),
			path: "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address", msg: "must be IP addresses", lineAt: "backend.local",
		},
		{
			name: "ADD_IF_ABSENT",
			doc:  conf(t, "#RENTRY", "request_headers_to_add:\n- header: {key: x-a, value: b}\n  append_action: add_if_absent"),
			path: routePath + ".request_headers_to_add[0].append_action", msg: "ADD_IF_ABSENT is not supported", lineAt: "append_action",
		},
		{
			name: "YAML 1.1 boolean in a string field",
			doc:  conf(t, "stat_prefix: ingress", "stat_prefix: on"),
			path: hcmPath + ".stat_prefix", msg: "quote the value", lineAt: "stat_prefix: on",
		},
		{
			name: "invalid YAML",
			doc:  "static_resources:\n  listeners: [\n",
			path: "", msg: "invalid YAML", lineAt: "",
		},
	}
	runParseErrors(t, tests)
}

func TestUnknownClusterMessage(t *testing.T) {
	doc := conf(t, "cluster: backend", "cluster: bakend")
	_, err := Parse("config.yaml", []byte(doc))
	want := "config.yaml:" + strconv.Itoa(lineOf(t, doc, "cluster: bakend")) + ": " + routePath + `.route.cluster: unknown cluster "bakend"`
	if err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
}

func TestLowerCaseEnums(t *testing.T) {
	s := parse(t, conf(t, "#HCM", "codec_type: http1", "#CLUSTER", "type: strict_dns\nlb_policy: least_request\ndns_lookup_family: v4_only",
		"#RENTRY", "request_headers_to_add: [{header: {key: X-A, value: b}, append_action: overwrite_if_exists_or_add}]"))
	c := s.ByName["backend"]
	if c.Type != StrictDNS || c.LBPolicy != LeastRequest {
		t.Errorf("cluster type %v lb %v, want StrictDNS LeastRequest", c.Type, c.LBPolicy)
	}
	if got := s.Listeners[0].HCM.Codec; got != CodecHTTP1 {
		t.Errorf("codec %v, want CodecHTTP1", got)
	}
}

func TestLegacyFilterWithoutTypedConfig(t *testing.T) {
	const line = `            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}` + "\n"
	for _, name := range []string{"envoy.filters.http.router", "envoy.router"} {
		t.Run(name, func(t *testing.T) {
			doc := conf(t, line, "", "- name: envoy.filters.http.router", "- name: "+name)
			s := parse(t, doc)
			if len(s.Warnings) != 1 {
				t.Fatalf("warnings %q, want one", s.Warnings)
			}
			want := "test.yaml:" + strconv.Itoa(lineOf(t, doc, "- name: "+name)) + ": " + hcmPath + `.http_filters[0]: filter "` + name +
				`" has no typed_config; add typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}`
			if !strings.HasPrefix(s.Warnings[0], want) {
				t.Errorf("warning\n%s\nwant prefix\n%s", s.Warnings[0], want)
			}
			f := s.Listeners[0].HCM.HTTPFilters[0]
			if _, ok := f.Config.(*routerv3.Router); !ok || f.Name != name {
				t.Errorf("filter %q config %T, want %q *Router", f.Name, f.Config, name)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	s := parse(t, base)
	l := s.Listeners[0]
	h := l.HCM
	r := h.Routes.VirtualHosts[0].Routes[0]
	c := s.Clusters[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"listener address", l.Address, "127.0.0.1:10000"},
		{"listener stat name", l.StatName, "127.0.0.1_10000"},
		{"listener buffer limit", l.BufferLimit, 1 << 20},
		{"stream idle timeout", h.StreamIdleTimeout, 300 * time.Second},
		{"request timeout", h.RequestTimeout, time.Duration(0)},
		{"connection idle timeout", h.IdleTimeout, time.Hour},
		{"drain timeout", h.DrainTimeout, 5 * time.Second},
		{"max request headers kb", h.MaxRequestHeadersKB, 60},
		{"generate request id", h.GenerateRequestID, true},
		{"server name", h.ServerName, "switchyard"},
		{"codec", h.Codec, CodecAuto},
		{"route timeout", r.Action.Timeout, 15 * time.Second},
		{"route idle timeout unset", r.Action.IdleTimeout == nil, true},
		{"route retry unset", r.Action.Retry == nil, true},
		{"route case sensitive", r.Match.CaseSensitive, true},
		{"route prefix", r.Match.HasPrefix && r.Match.Prefix == "/", true},
		{"cluster type", c.Type, Static},
		{"cluster connect timeout", c.ConnectTimeout, 5 * time.Second},
		{"cluster circuit breakers", [3]int{c.MaxConnections, c.MaxPending, c.MaxRequests}, [3]int{1024, 1024, 1024}},
		{"cluster buffer limit", c.BufferLimit, 1 << 20},
		{"endpoint", c.Endpoints[0], Endpoint{Host: "127.0.0.1", Port: 8080, Weight: 1}},
		{"hcm http2 options", *h.HTTP2, HTTP2Options{}},
		{"listener cleartext", l.TLS == nil, true},
		{"cluster protocol", c.Protocol, UpstreamHTTP1},
		{"cluster http2 options", *c.HTTP2, HTTP2Options{}},
		{"cluster cleartext", c.TLS == nil, true},
		{"admin", s.Admin == nil, true},
		{"warnings", len(s.Warnings), 0},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestZeroTimeoutsDisable(t *testing.T) {
	s := parse(t, conf(t, "#HCM", "stream_idle_timeout: 0s\ncommon_http_protocol_options: {idle_timeout: 0s}", "#ACTION", "timeout: 0s\nidle_timeout: 0s"))
	h := s.Listeners[0].HCM
	a := h.Routes.VirtualHosts[0].Routes[0].Action
	if h.StreamIdleTimeout != 0 || h.IdleTimeout != 0 || a.Timeout != 0 || a.IdleTimeout == nil || *a.IdleTimeout != 0 {
		t.Errorf("stream idle %v, conn idle %v, route timeout %v, route idle %v; want all 0", h.StreamIdleTimeout, h.IdleTimeout, a.Timeout, a.IdleTimeout)
	}
}

const jsonConfig = `{
  "static_resources": {
    "listeners": [{
      "address": {"socket_address": {"address": "::1", "port_value": 8080}},
      "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
          "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
          "statPrefix": "json",
          "codecType": "auto",
          "upgradeConfigs": [{"upgradeType": "WebSocket"}],
          "routeConfig": {"virtualHosts": [{"name": "v", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "CLUSTER"}}]}]},
          "httpFilters": [{"name": "envoy.filters.http.router",
            "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
        }
      }]}]
    }],
    "clusters": [{"name": "backend", "type": "logical_dns",
      "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "example.com", "port_value": 80}}}}]}]}}]
  }
}`

func TestJSONInput(t *testing.T) {
	s, err := Parse("test.json", []byte(strings.Replace(jsonConfig, "CLUSTER", "backend", 1)))
	if err != nil {
		t.Fatal(err)
	}
	l := s.Listeners[0]
	if l.Address != "[::1]:8080" || l.StatName != "[__1]_8080" || l.HCM.StatPrefix != "json" || l.HCM.Upgrades[0].Type != "websocket" || s.Clusters[0].Type != LogicalDNS {
		t.Errorf("got address %q stat %q prefix %q upgrade %q type %v", l.Address, l.StatName, l.HCM.StatPrefix, l.HCM.Upgrades[0].Type, s.Clusters[0].Type)
	}

	_, err = Parse("test.json", []byte(strings.Replace(jsonConfig, "CLUSTER", "nope", 1)))
	e := asError(t, err)
	if e.File != "test.json" || e.Line != 0 || e.Path != routePath+".route.cluster" {
		t.Errorf("got %q line %d path %q", e.File, e.Line, e.Path)
	}
}

func TestOverlay(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(file, []byte(base+"admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 9901}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const overlay = `admin:
  address: {socket_address: {address: 0.0.0.0, port_value: 9902}}
static_resources:
  clusters:
  - name: second
    type: STATIC
`
	s, err := Load(file, overlay)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Clusters) != 2 || s.Clusters[1].Name != "second" || s.ByName["second"] != s.Clusters[1] {
		t.Errorf("clusters %v, want backend then second", s.Clusters)
	}
	if s.Admin == nil || s.Admin.Address != "0.0.0.0:9902" {
		t.Errorf("admin %+v, want 0.0.0.0:9902", s.Admin)
	}
	if len(s.Bootstrap.GetStaticResources().GetClusters()) != 2 {
		t.Errorf("merged Bootstrap has %d clusters, want 2", len(s.Bootstrap.GetStaticResources().GetClusters()))
	}

	// An error in the overlay names the overlay and its line; repeated fields count across both.
	bad := overlay + "  - name: third\n    connect_timeout: -1s\n"
	_, err = Load(file, bad)
	e := asError(t, err)
	if e.File != "--config-yaml" || e.Line != lineOf(t, bad, "connect_timeout") || e.Path != "static_resources.clusters[2].connect_timeout" {
		t.Errorf("got %v", e)
	}

	if s, err := Load("", overlay); err != nil || s.Admin.Address != "0.0.0.0:9902" {
		t.Errorf("overlay only: %v %+v", err, s)
	}
	if _, err := Load("", ""); err == nil {
		t.Error("Load with nothing succeeded")
	}
}

func TestWebSocketExample(t *testing.T) {
	s, err := Load("testdata/websocket.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Admin.Address != "127.0.0.1:9901" || len(s.Listeners) != 1 || len(s.Clusters) != 2 || len(s.Warnings) != 0 {
		t.Fatalf("admin %+v, %d listeners, %d clusters, warnings %q", s.Admin, len(s.Listeners), len(s.Clusters), s.Warnings)
	}
	l := s.Listeners[0]
	h := l.HCM
	if l.Name != "listener_ws" || l.Address != "0.0.0.0:10000" || l.StatName != "0.0.0.0_10000" || l.BufferLimit != 32768 {
		t.Errorf("listener %+v", l)
	}
	if h.StatPrefix != "ingress_ws_to_ws" || h.StreamIdleTimeout != 600*time.Second || h.IdleTimeout != 120*time.Second {
		t.Errorf("hcm %+v", h)
	}
	if len(h.HTTPFilters) != 2 || h.HTTPFilters[0].Name != BufferFilter || h.HTTPFilters[1].Name != RouterFilter {
		t.Fatalf("http filters %v", h.HTTPFilters)
	}
	if b, ok := h.HTTPFilters[0].Config.(*bufferv3.Buffer); !ok || b.GetMaxRequestBytes().GetValue() != 65536 {
		t.Errorf("buffer config %v", h.HTTPFilters[0].Config)
	}
	if len(h.Upgrades) != 2 || h.Upgrades[0].Type != "websocket" || !h.Upgrades[0].Enabled || h.Upgrades[0].Filters != nil ||
		h.Upgrades[1].Type != "spdy/3.1" || h.Upgrades[1].Enabled || len(h.Upgrades[1].Filters) != 1 {
		t.Errorf("upgrades %+v %+v", h.Upgrades[0], h.Upgrades[1])
	}
	rt := h.Routes
	if rt.Name != "local_route" || len(rt.ResponseHeadersToAdd) != 1 || rt.ResponseHeadersToAdd[0] != (HeaderToAdd{Name: "x-proxy", Value: "switchyard", Append: false}) {
		t.Errorf("route table %+v", rt)
	}
	routes := rt.VirtualHosts[0].Routes
	if len(routes) != 3 {
		t.Fatalf("%d routes", len(routes))
	}
	if d := routes[0].DirectResponse; routes[0].Match.Path != "/healthz" || d == nil || *d != (DirectResponse{Status: 200, Body: "ok"}) {
		t.Errorf("healthz route %+v", routes[0])
	}
	ws := routes[1]
	hm := ws.Match.Headers[0]
	if ws.Match.Prefix != "/ws" || hm.Name != "upgrade" || hm.String.Kind != MatchExact || hm.String.Exact != "websocket" || !hm.String.IgnoreCase {
		t.Errorf("ws match %+v header %+v", ws.Match, hm)
	}
	a := ws.Action
	if a.Cluster != "service-ws" || a.Timeout != 0 || a.IdleTimeout == nil || *a.IdleTimeout != time.Hour || !a.Upgrades["websocket"] || len(a.Upgrades) != 1 {
		t.Errorf("ws action %+v", a)
	}
	if !ws.DisabledFilters[BufferFilter] || len(ws.DisabledFilters) != 1 {
		t.Errorf("ws disabled filters %v", ws.DisabledFilters)
	}
	def := routes[2].Action
	if len(def.WeightedClusters) != 2 || def.WeightedClusters[1] != (WeightedCluster{"service-static", 3}) || def.TotalWeight != 4 {
		t.Errorf("weighted %+v total %d", def.WeightedClusters, def.TotalWeight)
	}
	if r := def.Retry; r == nil || *r != (RetryPolicy{On5xx: true, OnConnectFailure: true, NumRetries: 2, PerTryTimeout: time.Second}) {
		t.Errorf("retry %+v", def.Retry)
	}
	if got := routes[2].RequestHeadersToAdd; len(got) != 1 || got[0] != (HeaderToAdd{Name: "x-route", Value: "default", Append: true}) {
		t.Errorf("request headers to add %+v", got)
	}
	wsc, st := s.ByName["service-ws"], s.ByName["service-static"]
	if wsc.Type != StrictDNS || wsc.ConnectTimeout != 250*time.Millisecond || wsc.Endpoints[0] != (Endpoint{"service-ws", 80, 1}) {
		t.Errorf("service-ws %+v", wsc)
	}
	if st.MaxConnections != 10 || st.MaxPending != 1024 || st.MaxRequests != 20 || len(st.Endpoints) != 2 || st.Endpoints[0].Weight != 2 {
		t.Errorf("service-static %+v", st)
	}
}
