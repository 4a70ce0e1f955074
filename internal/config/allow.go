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
	"envoy.config.bootstrap.v3.Bootstrap":                 "node static_resources admin overload_manager",
	"envoy.config.bootstrap.v3.Bootstrap.StaticResources": "listeners clusters",
	"envoy.config.bootstrap.v3.Admin":                     "address access_log access_log_path ignore_global_conn_limit", // logs: ignored with a warning
	"envoy.config.core.v3.Node":                           "*",                                                           // identity only: no effect on traffic
	"envoy.config.accesslog.v3.AccessLog":                 "*",                                                           // reachable only from admin; ignored
	"envoy.config.core.v3.Address":                        "socket_address",
	"envoy.config.core.v3.SocketAddress":                  "address port_value",

	"envoy.config.listener.v3.Listener":    "name address filter_chains per_connection_buffer_limit_bytes",
	"envoy.config.listener.v3.FilterChain": "name filters transport_socket",
	"envoy.config.listener.v3.Filter":      "name typed_config",
	"envoy.config.core.v3.TransportSocket": "name typed_config",

	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": "stat_prefix codec_type route_config http_filters " +
		"upgrade_configs stream_idle_timeout request_timeout request_headers_timeout common_http_protocol_options " +
		"http_protocol_options http2_protocol_options use_remote_address xff_num_trusted_hops generate_request_id " +
		"server_name max_request_headers_kb drain_timeout stream_error_on_invalid_http_message",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig": "upgrade_type filters enabled",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter":                          "name typed_config",
	"envoy.config.core.v3.HttpProtocolOptions":                                                        "idle_timeout max_stream_duration max_requests_per_connection",
	"envoy.config.core.v3.Http1ProtocolOptions":                                                       "accept_http_10 default_host_for_http_10 ignore_http_11_upgrade",
	"envoy.config.core.v3.Http2ProtocolOptions": "allow_connect max_concurrent_streams initial_stream_window_size " +
		"initial_connection_window_size override_stream_error_on_invalid_http_message stream_error_on_invalid_http_messaging " +
		"max_outbound_frames max_outbound_control_frames max_consecutive_inbound_frames_with_empty_payload " +
		"max_inbound_priority_frames_per_stream max_inbound_window_update_frames_per_data_frame_sent connection_keepalive",
	"envoy.config.core.v3.KeepaliveSettings":         "interval timeout interval_jitter connection_idle_interval",
	"envoy.type.v3.Percent":                          "value",
	"envoy.extensions.filters.http.router.v3.Router": "suppress_envoy_headers",
	"envoy.extensions.filters.http.buffer.v3.Buffer": "max_request_bytes",

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
	"envoy.config.core.v3.DataSource":                     "filename inline_string",
	"envoy.config.core.v3.HeaderValueOption":              "header append append_action",
	"envoy.config.core.v3.HeaderValue":                    "key value",
	"envoy.type.matcher.v3.StringMatcher":                 "exact prefix suffix contains safe_regex ignore_case",
	"envoy.type.matcher.v3.RegexMatcher":                  "google_re2 regex",
	"envoy.type.matcher.v3.RegexMatcher.GoogleRE2":        "",

	"envoy.config.cluster.v3.Cluster": "name type connect_timeout lb_policy load_assignment circuit_breakers " +
		"per_connection_buffer_limit_bytes dns_refresh_rate dns_lookup_family " + // dns_lookup_family: we use Go's resolver
		"transport_socket typed_extension_protocol_options http2_protocol_options",
	"envoy.config.cluster.v3.CircuitBreakers":            "thresholds",
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds": "max_connections max_pending_requests max_requests",
	"envoy.config.endpoint.v3.ClusterLoadAssignment":     "cluster_name endpoints",
	"envoy.config.endpoint.v3.LocalityLbEndpoints":       "lb_endpoints",
	"envoy.config.endpoint.v3.LbEndpoint":                "endpoint load_balancing_weight",
	"envoy.config.endpoint.v3.Endpoint":                  "address",

	// Upstream protocol selection (typed_extension_protocol_options) and TLS. Which of the
	// TLS fields may appear in a downstream or an upstream context is checked in tls.go.
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions":                    "explicit_http_config auto_config",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig": "http_protocol_options http2_protocol_options",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig":     "http_protocol_options http2_protocol_options",
	"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext":            "common_tls_context",
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext":              "common_tls_context sni",
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext":                "tls_certificates validation_context alpn_protocols",
	"envoy.extensions.transport_sockets.tls.v3.TlsCertificate":                  "certificate_chain private_key",
	"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext":    "trusted_ca",

	// Connection limits and the overload manager (overload.go).
	"envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit":                     "stat_prefix max_connections delay",
	"envoy.config.overload.v3.OverloadManager":                                                 "refresh_interval resource_monitors actions buffer_factory_config",
	"envoy.config.overload.v3.BufferFactoryConfig":                                             "minimum_account_to_track_power_of_two",
	"envoy.config.overload.v3.ResourceMonitor":                                                 "name typed_config",
	"envoy.config.overload.v3.OverloadAction":                                                  "name triggers",
	"envoy.config.overload.v3.Trigger":                                                         "name threshold scaled",
	"envoy.config.overload.v3.ThresholdTrigger":                                                "value",
	"envoy.config.overload.v3.ScaledTrigger":                                                   "scaling_threshold saturation_threshold",
	"envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig":                         "max_heap_size_bytes",
	"envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig": "max_active_downstream_connections",
}

// notSupportedWhy explains the unsupported fields users are most likely to hit, keyed by full
// field name or by message name.
var notSupportedWhy = map[protoreflect.FullName]string{
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.rds":                    "use an inline route_config",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.scoped_routes":          "use an inline route_config",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.http3_protocol_options": "HTTP/3 (QUIC) is not supported",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter.disabled":                          "filters disabled by default and enabled per route are not supported",
	"envoy.config.listener.v3.FilterChain.filter_chain_match":                                                  "use exactly one filter chain",
	"envoy.config.listener.v3.Listener.udp_listener_config":                                                    "HTTP/3 (QUIC) is not supported",
	"envoy.config.route.v3.RouteAction.UpgradeConfig.connect_config":                                           "CONNECT termination is not supported yet",
	"envoy.config.route.v3.RouteMatch.connect_matcher":                                                         "CONNECT is not supported yet",
	"envoy.config.core.v3.SocketAddress.protocol":                                                              "only TCP is supported",
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds.priority":                                              "only the DEFAULT priority is supported",
	"envoy.config.core.v3.DataSource":                                                                          "use filename or inline_string",

	"envoy.config.core.v3.Http2ProtocolOptions.hpack_table_size":           "the HPACK table size is fixed at the RFC 9113 default of 4096",
	"envoy.config.core.v3.Http2ProtocolOptions.allow_metadata":             "METADATA frames are not supported",
	"envoy.config.core.v3.Http2ProtocolOptions.custom_settings_parameters": "custom SETTINGS are not supported",
	"envoy.config.core.v3.Http2ProtocolOptions":                            "switchyard implements allow_connect, max_concurrent_streams, the window sizes, override_stream_error_on_invalid_http_message, connection_keepalive and the flood limits (max_outbound_frames ...)",

	"envoy.config.cluster.v3.Cluster.upstream_http_protocol_options":                                          "auto_sni and auto_san_validation are not supported; set sni in the UpstreamTlsContext",
	"envoy.config.cluster.v3.Cluster.common_http_protocol_options":                                            "upstream connection idle timeouts and limits are not supported yet",
	"envoy.config.cluster.v3.Cluster.transport_socket_matches":                                                "use a single transport_socket",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.common_http_protocol_options":                     "upstream connection idle timeouts and limits are not supported yet",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.upstream_http_protocol_options":                   "auto_sni and auto_san_validation are not supported; set sni in the UpstreamTlsContext",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.use_downstream_protocol_config":                   "use explicit_http_config or auto_config",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig.http3_protocol_options":        "HTTP/3 (QUIC) is not supported",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig.http3_protocol_options":            "HTTP/3 (QUIC) is not supported",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig.alternate_protocols_cache_options": "HTTP/3 (QUIC) is not supported",

	"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext.require_client_certificate":       "client certificates (mutual TLS) are not supported yet",
	"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext.require_sni":                      "Go's crypto/tls picks the certificate by SNI but accepts clients that send none",
	"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext":                                  "session resumption, tickets and OCSP use Go's crypto/tls defaults",
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext":                                    "switchyard implements sni and common_tls_context (validation_context.trusted_ca, alpn_protocols)",
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.tls_params":                           "TLS versions and cipher suites are Go's crypto/tls defaults (TLS 1.2 and 1.3)",
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.tls_certificate_sds_secret_configs":   "SDS is not supported; use tls_certificates with filename or inline_string",
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.validation_context_sds_secret_config": "SDS is not supported; use validation_context with trusted_ca",
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.combined_validation_context":          "SDS is not supported; use validation_context with trusted_ca",
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext":                                      "switchyard implements tls_certificates, validation_context.trusted_ca and alpn_protocols",
	"envoy.extensions.transport_sockets.tls.v3.TlsCertificate":                                        "use certificate_chain and private_key (PEM)",
	"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext":                          "only trusted_ca is supported: the chain is verified, subject alt names are not matched",

	"envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit.runtime_enabled":         "runtime is not supported",
	"envoy.config.overload.v3.OverloadManager.loadshed_points":                                     "load shed points are not supported yet; use the stop_accepting_requests action",
	"envoy.config.overload.v3.OverloadAction.typed_config":                                         "stop_accepting_requests, reset_high_memory_stream and shrink_heap take no typed_config",
	"envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig.max_heap_size_bytes_runtime": "runtime is not supported; use max_heap_size_bytes",
	"envoy.config.listener.v3.Listener.ignore_global_conn_limit":                                   "every listener counts toward global_downstream_max_connections",
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
