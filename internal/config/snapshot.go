// Package config turns an Envoy v3 bootstrap (YAML or JSON) into an immutable, compiled Snapshot.
//
// The pipeline is: YAML → JSON → lower-case enum fix-up and legacy filter names → protojson into
// go-control-plane's Bootstrap → generated ValidateAll → our semantic checks (including "a field we
// do not implement and that changes behaviour is an error") → compile. Every error names the field
// path, and the line when the source was YAML.
package config

import (
	"regexp"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/proto"
)

// Well-known names of the built-in HTTP filters.
const (
	RouterFilter = "envoy.filters.http.router"
	BufferFilter = "envoy.filters.http.buffer"
)

// Defaults Envoy documents and we keep.
const (
	DefaultBufferLimit       = 1 << 20           // per_connection_buffer_limit_bytes
	DefaultStreamIdleTimeout = 300 * time.Second // HCM stream_idle_timeout
	DefaultRouteTimeout      = 15 * time.Second  // RouteAction.timeout
	DefaultConnectTimeout    = 5 * time.Second   // Cluster.connect_timeout
	DefaultConnIdleTimeout   = time.Hour         // common_http_protocol_options.idle_timeout
	DefaultMaxHeadersKB      = 60                // max_request_headers_kb
	DefaultDrainTimeout      = 5 * time.Second   // HCM drain_timeout
	DefaultCircuitBreaker    = 1024              // every circuit_breakers threshold
)

// Snapshot is one compiled configuration. It is immutable once built: streams keep the snapshot
// they started with.
type Snapshot struct {
	Admin     *Admin // nil when the bootstrap has no admin address
	Listeners []*Listener
	Clusters  []*Cluster          // in config order
	ByName    map[string]*Cluster // the same clusters by name
	Bootstrap *bootstrapv3.Bootstrap
	Warnings  []string  // things the user should fix that we accepted, e.g. filters without typed_config
	Overload  *Overload // bootstrap overload_manager; nil when absent
}

// Admin is the admin listener.
type Admin struct {
	Address string // host:port
	// IgnoreGlobalConnLimit keeps admin connections out of global_downstream_max_connections
	// (Envoy's admin.ignore_global_conn_limit; by default they count, as in Envoy).
	IgnoreGlobalConnLimit bool
}

// Listener is one static listener with one HTTP connection manager.
type Listener struct {
	Name        string
	Address     string // host:port, for net.Listen
	StatName    string // "<ip>_<port>", as in Envoy's listener.<address>. stats
	BufferLimit int    // per_connection_buffer_limit_bytes; default 1 MiB
	HCM         *HCM
	TLS         *TLSServer // transport_socket envoy.transport_sockets.tls; nil for cleartext
	// ConnectionLimit is the envoy.filters.network.connection_limit filter before the HCM; nil when absent.
	ConnectionLimit *ConnectionLimit
}

// TLSServer is a compiled DownstreamTlsContext.
type TLSServer struct {
	Certificates []CertificatePair // tls_certificates, each from filename or inline_string
	ALPN         []string          // common_tls_context.alpn_protocols; empty: no ALPN (HTTP/1.1), as in Envoy
}

// CertificatePair is one tls_certificates entry, PEM-encoded.
type CertificatePair struct {
	CertPEM, KeyPEM []byte
}

// TLSClient is a compiled UpstreamTlsContext.
type TLSClient struct {
	SNI          string
	TrustedCAPEM []byte   // validation_context.trusted_ca; nil: the peer is not verified (Envoy's default)
	ALPN         []string // common_tls_context.alpn_protocols
}

// HTTP2Options is a compiled envoy.config.core.v3.Http2ProtocolOptions. Zero values mean the
// codec's defaults.
type HTTP2Options struct {
	AllowConnect                                 bool
	MaxConcurrentStreams                         uint32
	InitialStreamWindowSize                      uint32
	InitialConnectionWindowSize                  uint32
	StreamErrorOnInvalidMessage                  bool // override_stream_error_on_invalid_http_message
	MaxOutboundFrames                            uint32
	MaxOutboundControlFrames                     uint32
	MaxConsecutiveInboundFramesWithEmptyPayload  uint32
	MaxInboundPriorityFramesPerStream            uint32
	MaxInboundWindowUpdateFramesPerDataFrameSent uint32
	// connection_keepalive (KeepaliveSettings): all zero when unset. KeepaliveTimeout > 0 turns
	// PING keepalives on; KeepaliveIntervalJitter is a percentage (Envoy's default 15 filled in);
	// KeepaliveConnectionIdleInterval applies to upstream connections only, as in Envoy.
	KeepaliveInterval               time.Duration
	KeepaliveTimeout                time.Duration
	KeepaliveIntervalJitter         float64
	KeepaliveConnectionIdleInterval time.Duration
}

// UpstreamProtocol is how a cluster talks to its hosts.
type UpstreamProtocol int

// Upstream protocols: HTTP/1.1 (the default), HTTP/2 (explicit_http_config.http2_protocol_options,
// cleartext or TLS), or chosen by ALPN (auto_config, TLS only).
const (
	UpstreamHTTP1 UpstreamProtocol = iota
	UpstreamHTTP2
	UpstreamAuto
)

// CodecType is the HCM codec_type.
type CodecType int

// Codec types: AUTO tells HTTP/2 from HTTP/1.1 by ALPN (TLS) or the client preface (cleartext).
const (
	CodecAuto CodecType = iota
	CodecHTTP1
	CodecHTTP2
)

// HCM is a compiled envoy.filters.network.http_connection_manager.
type HCM struct {
	StatPrefix  string
	Codec       CodecType
	Routes      *RouteTable
	HTTPFilters []*HTTPFilter    // default chain; the router is last
	Upgrades    []*UpgradeConfig // upgrade_configs in config order, types lower-cased

	StreamIdleTimeout     time.Duration // 0 disables; default 300 s
	RequestTimeout        time.Duration // 0 disables
	RequestHeadersTimeout time.Duration // 0 disables
	IdleTimeout           time.Duration // connection idle; 0 disables; default 1 h
	MaxStreamDuration     time.Duration // 0 disables
	MaxRequestsPerConn    int           // 0 = unlimited
	DrainTimeout          time.Duration
	HTTP2                 *HTTP2Options // http2_protocol_options; never nil after compile

	AcceptHTTP10        bool
	DefaultHostHTTP10   string
	IgnoreUpgrades      []*StringMatcher // http_protocol_options.ignore_http_11_upgrade
	UseRemoteAddress    bool
	XFFNumTrustedHops   int
	GenerateRequestID   bool   // default true
	ServerName          string // "server" header on responses
	MaxRequestHeadersKB int    // default 60
}

// UpgradeConfig is one HCM upgrade_configs entry.
type UpgradeConfig struct {
	Type    string        // lower case
	Filters []*HTTPFilter // empty: use the HCM's http_filters
	Enabled bool          // default true
}

// HTTPFilter is one entry of an http_filters list.
type HTTPFilter struct {
	Name   string        // e.g. envoy.filters.http.router
	Config proto.Message // the decoded typed_config (a default instance when it was omitted)
}

// RouteTable is a compiled route_config.
type RouteTable struct {
	Name                    string
	VirtualHosts            []*VirtualHost
	RequestHeadersToAdd     []HeaderToAdd
	RequestHeadersToRemove  []string
	ResponseHeadersToAdd    []HeaderToAdd
	ResponseHeadersToRemove []string
}

// VirtualHost is a compiled virtual_hosts entry.
type VirtualHost struct {
	Name                    string
	Domains                 []string // lower case, as written
	Routes                  []*Route
	RequestHeadersToAdd     []HeaderToAdd
	RequestHeadersToRemove  []string
	ResponseHeadersToAdd    []HeaderToAdd
	ResponseHeadersToRemove []string
}

// HeaderToAdd is a compiled HeaderValueOption.
type HeaderToAdd struct {
	Name   string // lower case
	Value  string
	Append bool // true: add beside existing values; false: overwrite (Envoy's APPEND_IF_EXISTS_OR_ADD vs OVERWRITE_IF_EXISTS_OR_ADD)
}

// Route is one compiled routes entry.
type Route struct {
	Name  string
	Match RouteMatch

	// Exactly one of Action and DirectResponse is set.
	Action         *RouteAction
	DirectResponse *DirectResponse

	RequestHeadersToAdd     []HeaderToAdd
	RequestHeadersToRemove  []string
	ResponseHeadersToAdd    []HeaderToAdd
	ResponseHeadersToRemove []string
	DisabledFilters         map[string]bool // typed_per_filter_config with FilterConfig{disabled: true}
}

// RouteMatch is a compiled RouteMatch. Exactly one of Prefix, Path, Regex is set (Prefix may be "").
type RouteMatch struct {
	Prefix        string
	Path          string
	Regex         *regexp.Regexp // anchored: must match the whole path
	HasPrefix     bool
	CaseSensitive bool // default true
	Headers       []*HeaderMatcher
}

// HeaderMatcher is a compiled route HeaderMatcher.
type HeaderMatcher struct {
	Name    string // lower case
	Present *bool  // present_match
	String  *StringMatcher
	Invert  bool
}

// StringMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type StringMatcher struct {
	Exact, Prefix, Suffix, Contains string
	Kind                            StringMatchKind
	Regex                           *regexp.Regexp // anchored
	IgnoreCase                      bool
}

// StringMatchKind says which field of a StringMatcher is set.
type StringMatchKind int

// String matcher kinds.
const (
	MatchExact StringMatchKind = iota
	MatchPrefix
	MatchSuffix
	MatchContains
	MatchRegex
)

// RouteAction is a compiled RouteAction.
type RouteAction struct {
	Cluster          string
	WeightedClusters []WeightedCluster // when set, Cluster is ""
	TotalWeight      uint32
	PrefixRewrite    string
	HasPrefixRewrite bool
	HostRewrite      string          // host_rewrite_literal
	Timeout          time.Duration   // default 15 s; 0 disables
	IdleTimeout      *time.Duration  // nil: use the HCM stream_idle_timeout; 0 disables
	Upgrades         map[string]bool // route upgrade_configs: lower-case type → enabled
	Retry            *RetryPolicy    // nil: no retries
}

// WeightedCluster is one weighted_clusters entry.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// RetryPolicy is a compiled retry_policy.
type RetryPolicy struct {
	On5xx, OnConnectFailure, OnReset bool
	NumRetries                       int           // default 1
	PerTryTimeout                    time.Duration // 0: none
}

// DirectResponse is a compiled direct_response.
type DirectResponse struct {
	Status int
	Body   string
}

// ClusterType is the cluster discovery type.
type ClusterType int

// Cluster discovery types we serve.
const (
	Static ClusterType = iota
	StrictDNS
	LogicalDNS
)

// LBPolicy is the cluster lb_policy.
type LBPolicy int

// Load-balancing policies we serve.
const (
	RoundRobin LBPolicy = iota
	Random
	LeastRequest
)

// Cluster is a compiled cluster.
type Cluster struct {
	Name           string
	Type           ClusterType
	Endpoints      []Endpoint
	LBPolicy       LBPolicy
	ConnectTimeout time.Duration // default 5 s
	MaxConnections int           // circuit breakers, default 1024 each
	MaxPending     int
	MaxRequests    int
	BufferLimit    int           // per_connection_buffer_limit_bytes; default 1 MiB
	DNSRefreshRate time.Duration // default 5 s
	Protocol       UpstreamProtocol
	HTTP2          *HTTP2Options // for UpstreamHTTP2 and UpstreamAuto; never nil after compile
	TLS            *TLSClient    // transport_socket envoy.transport_sockets.tls; nil for cleartext
}

// Endpoint is one lb_endpoints entry.
type Endpoint struct {
	Host   string // IP or DNS name
	Port   int
	Weight uint32 // load_balancing_weight, default 1
}
