//lint:file-ignore SA1019 real Envoy configs still use the deprecated fields (Cluster.http2_protocol_options, stream_error_on_invalid_http_messaging); reading them is the point.

package config

import (
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// httpOptionsKey is the typed_extension_protocol_options key (and the type) that selects a
// cluster's HTTP protocol.
const (
	httpOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	httpOptionsURL = "type.googleapis.com/" + httpOptionsKey
)

// http2Options compiles an Http2ProtocolOptions (nil: all defaults). hcmStreamError is the HCM's
// stream_error_on_invalid_http_message, nil when unset or for a cluster. Envoy's precedence
// (Http2::Utility::initializeAndValidateOptions): override_stream_error_on_invalid_http_message,
// then the HCM field, then the deprecated stream_error_on_invalid_http_messaging.
func http2Options(o *corev3.Http2ProtocolOptions, hcmStreamError *wrapperspb.BoolValue) *HTTP2Options {
	out := &HTTP2Options{
		AllowConnect:                                 o.GetAllowConnect(),
		MaxConcurrentStreams:                         o.GetMaxConcurrentStreams().GetValue(),
		InitialStreamWindowSize:                      o.GetInitialStreamWindowSize().GetValue(),
		InitialConnectionWindowSize:                  o.GetInitialConnectionWindowSize().GetValue(),
		StreamErrorOnInvalidMessage:                  o.GetStreamErrorOnInvalidHttpMessaging(),
		MaxOutboundFrames:                            o.GetMaxOutboundFrames().GetValue(),
		MaxOutboundControlFrames:                     o.GetMaxOutboundControlFrames().GetValue(),
		MaxConsecutiveInboundFramesWithEmptyPayload:  o.GetMaxConsecutiveInboundFramesWithEmptyPayload().GetValue(),
		MaxInboundPriorityFramesPerStream:            o.GetMaxInboundPriorityFramesPerStream().GetValue(),
		MaxInboundWindowUpdateFramesPerDataFrameSent: o.GetMaxInboundWindowUpdateFramesPerDataFrameSent().GetValue(),
	}
	if ka := o.GetConnectionKeepalive(); ka != nil {
		// ValidateAll has checked the ranges: timeout is required, durations are at least 1 ms.
		out.KeepaliveInterval = ka.GetInterval().AsDuration()
		out.KeepaliveTimeout = ka.GetTimeout().AsDuration()
		out.KeepaliveIntervalJitter = 15 // Envoy's default when interval_jitter is unset
		if j := ka.GetIntervalJitter(); j != nil {
			out.KeepaliveIntervalJitter = j.GetValue()
		}
		out.KeepaliveConnectionIdleInterval = ka.GetConnectionIdleInterval().AsDuration()
	}
	switch {
	case o.GetOverrideStreamErrorOnInvalidHttpMessage() != nil:
		out.StreamErrorOnInvalidMessage = o.GetOverrideStreamErrorOnInvalidHttpMessage().GetValue()
	case hcmStreamError != nil:
		out.StreamErrorOnInvalidMessage = hcmStreamError.GetValue()
	}
	return out
}

// upstreamProtocol sets out.Protocol and out.HTTP2 from typed_extension_protocol_options or the
// deprecated http2_protocol_options. It runs after the transport socket is compiled, because
// auto_config needs TLS.
func (c *compiler) upstreamProtocol(cl *clusterv3.Cluster, out *Cluster, p path) {
	out.Protocol, out.HTTP2 = UpstreamHTTP1, http2Options(nil, nil)
	tp := p.field("typed_extension_protocol_options")
	opts := cl.GetTypedExtensionProtocolOptions()
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k != httpOptionsKey {
			c.fail(tp.key(k), "protocol options %q are not supported by switchyard; the only key is %s", k, httpOptionsKey)
		}
	}
	legacy, lp := cl.GetHttp2ProtocolOptions(), p.field("http2_protocol_options")
	a, ok := opts[httpOptionsKey]
	if !ok {
		if legacy != nil {
			c.warn(lp, "http2_protocol_options on a cluster is deprecated; use typed_extension_protocol_options: "+
				`{%s: {"@type": %s, explicit_http_config: {http2_protocol_options: {...}}}}`, httpOptionsKey, httpOptionsURL)
			out.Protocol, out.HTTP2 = UpstreamHTTP2, http2Options(legacy, nil)
		}
		return
	}
	kp := tp.key(httpOptionsKey)
	if legacy != nil {
		c.fail(lp, "the deprecated http2_protocol_options cannot be combined with typed_extension_protocol_options %s; move it to explicit_http_config", httpOptionsKey)
	}
	hpo, ok := c.unpack(a, kp).(*httpv3.HttpProtocolOptions)
	if !ok {
		c.fail(kp, "typed_config must be %s, got %q", httpOptionsURL, a.GetTypeUrl())
		return
	}
	switch pc := hpo.GetUpstreamProtocolOptions().(type) {
	case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_:
		if h2 := pc.ExplicitHttpConfig.GetHttp2ProtocolOptions(); h2 != nil {
			out.Protocol, out.HTTP2 = UpstreamHTTP2, http2Options(h2, nil)
		}
	case *httpv3.HttpProtocolOptions_AutoConfig:
		out.Protocol, out.HTTP2 = UpstreamAuto, http2Options(pc.AutoConfig.GetHttp2ProtocolOptions(), nil)
		if out.TLS == nil {
			// Envoy: "ALPN configured for cluster ... which has a non-ALPN transport socket".
			c.fail(kp.field("auto_config"), "auto_config chooses HTTP/2 or HTTP/1.1 by TLS ALPN, so cluster %q needs a transport_socket with an UpstreamTlsContext", cl.GetName())
		}
	default: // ValidateAll requires one of them, and the allow list admits nothing else
		c.fail(kp, "this upstream protocol selection is not supported by switchyard; use explicit_http_config or auto_config")
	}
}
