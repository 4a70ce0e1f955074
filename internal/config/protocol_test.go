package config

import (
	"strings"
	"testing"
	"time"
)

// The configs of envoy-upgrade-behaviors.md §2.4 (a) and (b): a front proxy speaking h2c to a
// sidecar, and the sidecar accepting extended CONNECT in front of an HTTP/1.1 app.
func TestFrontAndSidecar(t *testing.T) {
	tests := []struct {
		file  string
		check func(t *testing.T, s *Snapshot)
	}{
		{"testdata/front.yaml", func(t *testing.T, s *Snapshot) {
			h := s.Listeners[0].HCM
			if s.Listeners[0].TLS != nil || h.Codec != CodecHTTP1 || *h.HTTP2 != (HTTP2Options{}) {
				t.Errorf("listener TLS %v codec %v http2 %+v, want cleartext HTTP1 with default HTTP/2 options", s.Listeners[0].TLS, h.Codec, *h.HTTP2)
			}
			if len(h.Upgrades) != 1 || h.Upgrades[0].Type != "websocket" || !h.Upgrades[0].Enabled {
				t.Errorf("upgrades %+v", h.Upgrades)
			}
			a := h.Routes.VirtualHosts[0].Routes[0].Action
			if a.Cluster != "sidecar_h2" || a.Timeout != 15*time.Second || a.IdleTimeout == nil || *a.IdleTimeout != time.Hour {
				t.Errorf("route action %+v", a)
			}
			c := s.ByName["sidecar_h2"]
			if c.Protocol != UpstreamHTTP2 || *c.HTTP2 != (HTTP2Options{AllowConnect: true}) || c.TLS != nil || c.ConnectTimeout != time.Second {
				t.Errorf("sidecar_h2: protocol %v http2 %+v TLS %v connect timeout %v; want h2c with allow_connect", c.Protocol, *c.HTTP2, c.TLS, c.ConnectTimeout)
			}
			if c.Endpoints[0] != (Endpoint{"127.0.0.1", 9090, 1}) {
				t.Errorf("endpoint %+v", c.Endpoints[0])
			}
		}},
		{"testdata/sidecar.yaml", func(t *testing.T, s *Snapshot) {
			l := s.Listeners[0]
			h := l.HCM
			if l.Address != "127.0.0.1:9090" || l.TLS != nil || h.Codec != CodecAuto || *h.HTTP2 != (HTTP2Options{AllowConnect: true}) {
				t.Errorf("listener %s TLS %v codec %v http2 %+v, want AUTO with allow_connect", l.Address, l.TLS, h.Codec, *h.HTTP2)
			}
			if len(h.Upgrades) != 1 || h.Upgrades[0].Type != "websocket" {
				t.Errorf("upgrades %+v", h.Upgrades)
			}
			c := s.ByName["app_h1"]
			if c.Protocol != UpstreamHTTP1 || *c.HTTP2 != (HTTP2Options{}) || c.TLS != nil {
				t.Errorf("app_h1: protocol %v http2 %+v TLS %v, want cleartext HTTP/1.1", c.Protocol, *c.HTTP2, c.TLS)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			s, err := Load(tt.file, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Warnings) != 0 {
				t.Errorf("warnings %q", s.Warnings)
			}
			tt.check(t, s)
		})
	}
}

func TestHCMHTTP2Options(t *testing.T) {
	s := parse(t, conf(t, "#HCM", `codec_type: HTTP2
http2_protocol_options:
  allow_connect: true
  max_concurrent_streams: 50
  initial_stream_window_size: 65536
  initial_connection_window_size: 1048576
  override_stream_error_on_invalid_http_message: true
  max_outbound_frames: 1000
  max_outbound_control_frames: 100
  max_consecutive_inbound_frames_with_empty_payload: 2
  max_inbound_priority_frames_per_stream: 10
  max_inbound_window_update_frames_per_data_frame_sent: 5
  connection_keepalive: {interval: 0.1s, timeout: 2s, interval_jitter: {value: 5}}`))
	h := s.Listeners[0].HCM
	want := HTTP2Options{
		AllowConnect:                                 true,
		MaxConcurrentStreams:                         50,
		InitialStreamWindowSize:                      65536,
		InitialConnectionWindowSize:                  1048576,
		StreamErrorOnInvalidMessage:                  true,
		MaxOutboundFrames:                            1000,
		MaxOutboundControlFrames:                     100,
		MaxConsecutiveInboundFramesWithEmptyPayload:  2,
		MaxInboundPriorityFramesPerStream:            10,
		MaxInboundWindowUpdateFramesPerDataFrameSent: 5,
		KeepaliveInterval:                            100 * time.Millisecond,
		KeepaliveTimeout:                             2 * time.Second,
		KeepaliveIntervalJitter:                      5,
	}
	if h.Codec != CodecHTTP2 || *h.HTTP2 != want {
		t.Errorf("codec %v options %+v\nwant CodecHTTP2 %+v", h.Codec, *h.HTTP2, want)
	}
}

// connection_idle_interval is read by Envoy's client codec only: on a listener it is accepted
// with a warning, and the interval keepalive still applies.
func TestHCMKeepaliveIdleIntervalWarns(t *testing.T) {
	tests := []struct {
		name, keepalive, warning string
	}{
		{"interval only", "{interval: 1s, timeout: 1s}", ""},
		{"idle interval", "{interval: 1s, timeout: 1s, connection_idle_interval: 2s}", "applies to upstream connections only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := parse(t, conf(t, "#HCM", "codec_type: HTTP2\nhttp2_protocol_options: {connection_keepalive: "+tt.keepalive+"}"))
			if o := s.Listeners[0].HCM.HTTP2; o.KeepaliveInterval != time.Second || o.KeepaliveTimeout != time.Second {
				t.Errorf("keepalive %v/%v, want 1s/1s", o.KeepaliveInterval, o.KeepaliveTimeout)
			}
			switch {
			case tt.warning == "" && len(s.Warnings) != 0:
				t.Errorf("warnings %q, want none", s.Warnings)
			case tt.warning != "" && (len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], tt.warning)):
				t.Errorf("warnings %q, want one containing %q", s.Warnings, tt.warning)
			}
		})
	}
}

// Envoy's precedence: the override, then the HCM's stream_error_on_invalid_http_message, then the
// deprecated stream_error_on_invalid_http_messaging.
func TestStreamErrorOnInvalidMessage(t *testing.T) {
	tests := []struct {
		name    string
		hcm     string
		want    bool
		warning string // substring of the only warning; "" for none
	}{
		{"default", "codec_type: HTTP2", false, ""},
		{"deprecated field", "codec_type: HTTP2\nhttp2_protocol_options: {stream_error_on_invalid_http_messaging: true}", true, ""},
		{"HCM field", "codec_type: HTTP2\nstream_error_on_invalid_http_message: true", true, ""},
		{"HCM field beats the deprecated one", "codec_type: HTTP2\nstream_error_on_invalid_http_message: false\nhttp2_protocol_options: {stream_error_on_invalid_http_messaging: true}", false, ""},
		{"override beats the HCM field", "codec_type: HTTP2\nstream_error_on_invalid_http_message: true\nhttp2_protocol_options: {override_stream_error_on_invalid_http_message: false}", false, ""},
		{"override true", "codec_type: HTTP2\nstream_error_on_invalid_http_message: false\nhttp2_protocol_options: {override_stream_error_on_invalid_http_message: true}", true, ""},
		{"HCM field on an AUTO codec warns about HTTP/1.1", "stream_error_on_invalid_http_message: true", true, "applies to HTTP/2 only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := parse(t, conf(t, "#HCM", tt.hcm))
			if got := s.Listeners[0].HCM.HTTP2.StreamErrorOnInvalidMessage; got != tt.want {
				t.Errorf("StreamErrorOnInvalidMessage %v, want %v", got, tt.want)
			}
			switch {
			case tt.warning == "" && len(s.Warnings) != 0:
				t.Errorf("warnings %q, want none", s.Warnings)
			case tt.warning != "" && (len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], tt.warning)):
				t.Errorf("warnings %q, want one containing %q", s.Warnings, tt.warning)
			}
		})
	}
}

const (
	hpoHead = `typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
`
	upstreamTLSSNI = `transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: backend.example
`
)

func TestUpstreamProtocol(t *testing.T) {
	tests := []struct {
		name     string
		cluster  string
		protocol UpstreamProtocol
		http2    HTTP2Options
		warning  string // substring of the only warning; "" for none
	}{
		{"no options", "", UpstreamHTTP1, HTTP2Options{}, ""},
		{"explicit HTTP/1.1", hpoHead + "    explicit_http_config: {http_protocol_options: {}}", UpstreamHTTP1, HTTP2Options{}, ""},
		{"explicit HTTP/2", hpoHead + "    explicit_http_config: {http2_protocol_options: {allow_connect: true, max_concurrent_streams: 7}}",
			UpstreamHTTP2, HTTP2Options{AllowConnect: true, MaxConcurrentStreams: 7}, ""},
		{"auto_config over TLS", upstreamTLSSNI + hpoHead + "    auto_config: {http2_protocol_options: {initial_connection_window_size: 131072}}",
			UpstreamAuto, HTTP2Options{InitialConnectionWindowSize: 131072}, ""},
		{"deprecated cluster http2_protocol_options", "http2_protocol_options: {allow_connect: true}",
			UpstreamHTTP2, HTTP2Options{AllowConnect: true}, "use typed_extension_protocol_options"},
		{"keepalive with Envoy's default jitter", hpoHead + "    explicit_http_config: {http2_protocol_options: {connection_keepalive: {interval: 30s, timeout: 5s, connection_idle_interval: 1s}}}",
			UpstreamHTTP2, HTTP2Options{KeepaliveInterval: 30 * time.Second, KeepaliveTimeout: 5 * time.Second,
				KeepaliveIntervalJitter: 15, KeepaliveConnectionIdleInterval: time.Second}, ""},
		{"keepalive without interval PINGs and without jitter", hpoHead + "    explicit_http_config: {http2_protocol_options: {connection_keepalive: {timeout: 0.5s, interval_jitter: {value: 0}}}}",
			UpstreamHTTP2, HTTP2Options{KeepaliveTimeout: 500 * time.Millisecond}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := parse(t, conf(t, "#CLUSTER", tt.cluster))
			c := s.Clusters[0]
			if c.Protocol != tt.protocol || *c.HTTP2 != tt.http2 {
				t.Errorf("protocol %v http2 %+v, want %v %+v", c.Protocol, *c.HTTP2, tt.protocol, tt.http2)
			}
			switch {
			case tt.warning == "" && len(s.Warnings) != 0:
				t.Errorf("warnings %q, want none", s.Warnings)
			case tt.warning != "" && (len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], tt.warning)):
				t.Errorf("warnings %q, want one containing %q", s.Warnings, tt.warning)
			}
		})
	}
}

func TestUpstreamProtocolErrors(t *testing.T) {
	const cp = "static_resources.clusters[0]"
	const hpo = cp + `.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]`
	runParseErrors(t, []parseErrorCase{
		{
			name: "auto_config without TLS",
			doc:  conf(t, "#CLUSTER", hpoHead+"    auto_config: {}"),
			path: hpo + ".auto_config", msg: "needs a transport_socket with an UpstreamTlsContext", lineAt: "auto_config",
		},
		{
			name: "unknown protocol options key",
			doc: conf(t, "#CLUSTER", `typed_extension_protocol_options:
  acme.protocol:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: {http2_protocol_options: {}}`),
			path: cp + `.typed_extension_protocol_options["acme.protocol"]`, msg: `protocol options "acme.protocol" are not supported`, lineAt: "acme.protocol:",
		},
		{
			name: "wrong type under the HttpProtocolOptions key",
			doc: conf(t, "#CLUSTER", `typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router`),
			path: hpo, msg: "typed_config must be type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", lineAt: "  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
		},
		{
			name: "common_http_protocol_options",
			doc:  conf(t, "#CLUSTER", hpoHead+"    common_http_protocol_options: {idle_timeout: 1s}\n    explicit_http_config: {http2_protocol_options: {}}"),
			path: hpo + ".common_http_protocol_options", msg: `field "common_http_protocol_options" is not supported`, lineAt: "common_http_protocol_options",
		},
		{
			name: "HTTP/3 upstream",
			doc:  conf(t, "#CLUSTER", hpoHead+"    explicit_http_config:\n      http3_protocol_options: {}"),
			path: hpo + ".explicit_http_config.http3_protocol_options", msg: "HTTP/3 (QUIC) is not supported", lineAt: "http3_protocol_options",
		},
		{
			name: "use_downstream_protocol_config",
			doc:  conf(t, "#CLUSTER", hpoHead+"    use_downstream_protocol_config: {}"),
			path: hpo + ".use_downstream_protocol_config", msg: "use explicit_http_config or auto_config", lineAt: "use_downstream_protocol_config",
		},
		{
			name: "deprecated and typed options together",
			doc:  conf(t, "#CLUSTER", "http2_protocol_options: {}\n"+hpoHead+"    explicit_http_config: {http2_protocol_options: {}}"),
			path: cp + ".http2_protocol_options", msg: "cannot be combined with typed_extension_protocol_options", lineAt: "http2_protocol_options: {}",
		},
		{
			name: "unsupported Http2ProtocolOptions field upstream",
			doc:  conf(t, "#CLUSTER", hpoHead+"    explicit_http_config:\n      http2_protocol_options:\n        allow_metadata: true"),
			path: hpo + ".explicit_http_config.http2_protocol_options.allow_metadata", msg: "METADATA frames are not supported", lineAt: "allow_metadata",
		},
		{
			name: "keepalive without timeout",
			doc:  conf(t, "#CLUSTER", hpoHead+"    explicit_http_config:\n      http2_protocol_options:\n        connection_keepalive: {interval: 1s}"),
			path: hpo + ".explicit_http_config.http2_protocol_options.connection_keepalive.timeout", msg: "value is required", lineAt: "connection_keepalive",
		},
		{
			name: "keepalive interval of 0s",
			doc:  conf(t, "#CLUSTER", hpoHead+"    explicit_http_config:\n      http2_protocol_options:\n        connection_keepalive: {interval: 0s, timeout: 1s}"),
			path: hpo + ".explicit_http_config.http2_protocol_options.connection_keepalive.interval", msg: "greater than or equal to 1ms", lineAt: "connection_keepalive",
		},
		{
			name: "keepalive jitter over 100%",
			doc:  conf(t, "#CLUSTER", hpoHead+"    explicit_http_config:\n      http2_protocol_options:\n        connection_keepalive: {timeout: 1s, interval_jitter: {value: 150}}"),
			path: hpo + ".explicit_http_config.http2_protocol_options.connection_keepalive.interval_jitter.value", msg: "range", lineAt: "connection_keepalive",
		},
	})
}
