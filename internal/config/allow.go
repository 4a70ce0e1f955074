package config

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// allowList names, per message type, the fields switchyard implements. Any other field that is set
// changes behaviour we do not have, so it is an error naming the field: silently ignoring it would
// make the proxy behave unlike Envoy. "*" allows everything below (only for things that do not
// change traffic). Well-known google.protobuf types are always allowed; any other message type not
// listed here is rejected.
var allowList = map[protoreflect.FullName]string{
	"envoy.config.bootstrap.v3.Bootstrap":                 "node static_resources admin",
	"envoy.config.bootstrap.v3.Bootstrap.StaticResources": "listeners clusters",
	"envoy.config.bootstrap.v3.Admin":                     "address access_log access_log_path", // logs: ignored with a warning
	"envoy.config.core.v3.Node":                           "*",                                  // identity only: no effect on traffic
	"envoy.config.accesslog.v3.AccessLog":                 "*",                                  // reachable only from admin; ignored
	"envoy.config.core.v3.Address":                        "socket_address",
	"envoy.config.core.v3.SocketAddress":                  "address port_value",

	"envoy.config.listener.v3.Listener":    "name address filter_chains per_connection_buffer_limit_bytes",
	"envoy.config.listener.v3.FilterChain": "name filters",
	"envoy.config.listener.v3.Filter":      "name typed_config",

	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": "stat_prefix codec_type route_config http_filters " +
		"upgrade_configs stream_idle_timeout request_timeout request_headers_timeout common_http_protocol_options " +
		"http_protocol_options http2_protocol_options use_remote_address xff_num_trusted_hops generate_request_id " +
		"server_name max_request_headers_kb drain_timeout",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig": "upgrade_type filters enabled",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter":                          "name typed_config",
	"envoy.config.core.v3.HttpProtocolOptions":                                                        "idle_timeout max_stream_duration max_requests_per_connection",
	"envoy.config.core.v3.Http1ProtocolOptions":                                                       "accept_http_10 default_host_for_http_10 ignore_http_11_upgrade",
	"envoy.config.core.v3.Http2ProtocolOptions":                                                       "", // allowed on the HCM only when empty
	"envoy.extensions.filters.http.router.v3.Router":                                                  "",
	"envoy.extensions.filters.http.buffer.v3.Buffer":                                                  "max_request_bytes",

	"envoy.config.route.v3.RouteConfiguration": "name virtual_hosts request_headers_to_add request_headers_to_remove " +
		"response_headers_to_add response_headers_to_remove",
	"envoy.config.route.v3.VirtualHost": "name domains routes request_headers_to_add request_headers_to_remove " +
		"response_headers_to_add response_headers_to_remove",
	"envoy.config.route.v3.Route": "name match route direct_response request_headers_to_add request_headers_to_remove " +
		"response_headers_to_add response_headers_to_remove typed_per_filter_config",
	"envoy.config.route.v3.RouteMatch": "prefix path safe_regex headers case_sensitive",
	"envoy.config.route.v3.HeaderMatcher": "name exact_match safe_regex_match present_match prefix_match suffix_match " +
		"contains_match string_match invert_match",
	"envoy.config.route.v3.RouteAction": "cluster weighted_clusters prefix_rewrite host_rewrite_literal timeout " +
		"idle_timeout upgrade_configs retry_policy",
	"envoy.config.route.v3.RouteAction.UpgradeConfig":     "upgrade_type enabled",
	"envoy.config.route.v3.RetryPolicy":                   "retry_on num_retries per_try_timeout",
	"envoy.config.route.v3.WeightedCluster":               "clusters",
	"envoy.config.route.v3.WeightedCluster.ClusterWeight": "name weight",
	"envoy.config.route.v3.DirectResponseAction":          "status body",
	"envoy.config.route.v3.FilterConfig":                  "disabled",
	"envoy.config.core.v3.DataSource":                     "inline_string",
	"envoy.config.core.v3.HeaderValueOption":              "header append append_action",
	"envoy.config.core.v3.HeaderValue":                    "key value",
	"envoy.type.matcher.v3.StringMatcher":                 "exact prefix suffix contains safe_regex ignore_case",
	"envoy.type.matcher.v3.RegexMatcher":                  "google_re2 regex",
	"envoy.type.matcher.v3.RegexMatcher.GoogleRE2":        "",

	"envoy.config.cluster.v3.Cluster": "name type connect_timeout lb_policy load_assignment circuit_breakers " +
		"per_connection_buffer_limit_bytes dns_refresh_rate dns_lookup_family", // dns_lookup_family: we use Go's resolver
	"envoy.config.cluster.v3.CircuitBreakers":            "thresholds",
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds": "max_connections max_pending_requests max_requests",
	"envoy.config.endpoint.v3.ClusterLoadAssignment":     "cluster_name endpoints",
	"envoy.config.endpoint.v3.LocalityLbEndpoints":       "lb_endpoints",
	"envoy.config.endpoint.v3.LbEndpoint":                "endpoint load_balancing_weight",
	"envoy.config.endpoint.v3.Endpoint":                  "address",
}

// notSupportedWhy explains the unsupported fields users are most likely to hit, keyed by full
// field name or by message name.
var notSupportedWhy = map[protoreflect.FullName]string{
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.rds":           "use an inline route_config",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.scoped_routes": "use an inline route_config",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter.disabled":                 "filters disabled by default and enabled per route are not supported",
	"envoy.config.core.v3.Http2ProtocolOptions":                                                       "HTTP/2 is not supported yet",
	"envoy.config.cluster.v3.Cluster.typed_extension_protocol_options":                                "HTTP/2 upstreams are not supported yet",
	"envoy.config.cluster.v3.Cluster.http2_protocol_options":                                          "HTTP/2 upstreams are not supported yet",
	"envoy.config.cluster.v3.Cluster.transport_socket":                                                "TLS is not supported yet",
	"envoy.config.listener.v3.FilterChain.transport_socket":                                           "TLS is not supported yet",
	"envoy.config.listener.v3.FilterChain.filter_chain_match":                                         "use exactly one filter chain",
	"envoy.config.route.v3.RouteAction.UpgradeConfig.connect_config":                                  "CONNECT termination is not supported yet",
	"envoy.config.route.v3.RouteMatch.connect_matcher":                                                "CONNECT is not supported yet",
	"envoy.config.core.v3.SocketAddress.protocol":                                                     "only TCP is supported",
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds.priority":                                     "only the DEFAULT priority is supported",
}

// allowed is allowList parsed; a nil set means everything is allowed.
var allowed = func() map[protoreflect.FullName]map[protoreflect.Name]bool {
	m := map[protoreflect.FullName]map[protoreflect.Name]bool{}
	for msg, fields := range allowList {
		if fields == "*" {
			m[msg] = nil
			continue
		}
		set := map[protoreflect.Name]bool{}
		for _, f := range strings.Fields(fields) {
			set[protoreflect.Name(f)] = true
		}
		m[msg] = set
	}
	return m
}()

// check walks every set field of m, unpacking (and validating) typed_config Anys on the way, and
// fails on the first field that is not in allowList.
func (c *compiler) check(m protoreflect.Message, p path) {
	md := m.Descriptor()
	if md.FullName() == "google.protobuf.Any" {
		if inner := c.unpack(m.Interface().(*anypb.Any), p); inner != nil {
			c.check(inner.ProtoReflect(), p)
		}
		return
	}
	set, known := allowed[md.FullName()]
	switch {
	case !known && md.FullName().Parent() == "google.protobuf":
		return
	case !known:
		c.fail(p, "%s is not supported by switchyard", md.FullName())
		return
	case set == nil:
		return
	}
	var fields []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		fields = append(fields, fd)
		return true
	})
	slices.SortFunc(fields, func(a, b protoreflect.FieldDescriptor) int { return int(a.Number() - b.Number()) })
	for _, fd := range fields {
		if c.err != nil {
			return
		}
		fp := p.field(string(fd.Name()))
		if !set[fd.Name()] {
			why := notSupportedWhy[fd.FullName()]
			if why == "" {
				why = notSupportedWhy[md.FullName()]
			}
			if why != "" {
				why = "; " + why
			}
			c.fail(fp, "field %q is not supported by switchyard%s", fd.Name(), why)
			return
		}
		v := m.Get(fd)
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				continue
			}
			var keys []protoreflect.MapKey
			v.Map().Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			slices.SortFunc(keys, func(a, b protoreflect.MapKey) int { return strings.Compare(a.String(), b.String()) })
			for _, k := range keys {
				c.check(v.Map().Get(k).Message(), fp.key(k.String()))
			}
		case fd.Message() == nil:
		case fd.IsList():
			for i := 0; i < v.List().Len(); i++ {
				c.check(v.List().Get(i).Message(), fp.index(i))
			}
		default:
			c.check(v.Message(), fp)
		}
	}
}

// unpack decodes a typed_config once (cached for compile) and runs its generated validation.
func (c *compiler) unpack(a *anypb.Any, p path) proto.Message {
	if a == nil {
		return nil
	}
	if m, ok := c.unpacked[a]; ok {
		return m
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		c.fail(p, "cannot decode typed_config %q: %v", a.GetTypeUrl(), err)
		return nil
	}
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			c.failValidation(err, p)
			return nil
		}
	}
	c.unpacked[a] = m
	return m
}
