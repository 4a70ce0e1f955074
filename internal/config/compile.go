//lint:file-ignore SA1019 real Envoy configs still use the deprecated fields (exact_match, append, dns_refresh_rate, access_log_path); reading them is the point.

package config

import (
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	connlimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// compiler turns a decoded, merged Bootstrap into a Snapshot. The first error sticks (c.err) and
// later steps run on zero values, which keeps the compile code free of error plumbing.
type compiler struct {
	srcs     []*source
	warnings []string
	unpacked map[*anypb.Any]proto.Message
	clusters map[string]*Cluster
	err      error
}

func (c *compiler) fail(p path, format string, args ...any) {
	if c.err != nil {
		return
	}
	file, line := locate(c.srcs, p)
	c.err = &Error{File: file, Line: line, Path: p.String(), Msg: fmt.Sprintf(format, args...)}
}

func (c *compiler) failValidation(err error, p path) {
	vp, msg := validationPath(err, p)
	c.fail(vp, "%s", msg)
}

func (c *compiler) warn(p path, format string, args ...any) {
	file, line := locate(c.srcs, p)
	c.warnings = append(c.warnings, (&Error{File: file, Line: line, Path: p.String(), Msg: fmt.Sprintf(format, args...)}).Error())
}

func (c *compiler) compile(b *bootstrapv3.Bootstrap) (*Snapshot, error) {
	if err := b.ValidateAll(); err != nil {
		c.failValidation(err, nil)
		return nil, c.err
	}
	c.check(b.ProtoReflect(), nil)
	if c.err != nil {
		return nil, c.err
	}
	s := &Snapshot{Bootstrap: b, ByName: map[string]*Cluster{}}
	if a := b.GetAdmin(); a != nil {
		if len(a.GetAccessLog()) > 0 || a.GetAccessLogPath() != "" {
			c.warn(path{"admin"}, "admin access logs are ignored by switchyard")
		}
		if a.GetAddress() != nil {
			host, port := c.socketAddress(a.GetAddress(), path{"admin", "address"})
			s.Admin = &Admin{Address: net.JoinHostPort(host, strconv.Itoa(port)), IgnoreGlobalConnLimit: a.GetIgnoreGlobalConnLimit()}
		}
	}
	c.clusters = s.ByName
	for i, cl := range b.GetStaticResources().GetClusters() {
		p := path{"static_resources", "clusters"}.index(i)
		if _, dup := s.ByName[cl.GetName()]; dup {
			c.fail(p.field("name"), "duplicate cluster name %q", cl.GetName())
		}
		out := c.cluster(cl, p)
		s.Clusters = append(s.Clusters, out)
		s.ByName[out.Name] = out
	}
	names, addrs := map[string]int{}, map[string]int{}
	for i, l := range b.GetStaticResources().GetListeners() {
		p := path{"static_resources", "listeners"}.index(i)
		if j, dup := names[l.GetName()]; dup && l.GetName() != "" {
			c.fail(p.field("name"), "duplicate listener name %q (also listeners[%d])", l.GetName(), j)
		}
		names[l.GetName()] = i
		out := c.listener(l, p)
		if j, dup := addrs[out.Address]; dup {
			c.fail(p.field("address"), "duplicate listener address %s (also listeners[%d])", out.Address, j)
		}
		addrs[out.Address] = i
		s.Listeners = append(s.Listeners, out)
	}
	s.Overload = c.overload(b.GetOverloadManager(), path{"overload_manager"})
	if c.err != nil {
		return nil, c.err
	}
	s.Warnings = c.warnings
	return s, nil
}

func (c *compiler) socketAddress(a *corev3.Address, p path) (string, int) {
	sa := a.GetSocketAddress()
	if sa == nil {
		c.fail(p, "a socket_address is required")
		return "", 0
	}
	return sa.GetAddress(), int(sa.GetPortValue())
}

func (c *compiler) listener(l *listenerv3.Listener, p path) *Listener {
	out := &Listener{Name: l.GetName(), BufferLimit: uint32Or(l.GetPerConnectionBufferLimitBytes(), DefaultBufferLimit)}
	if l.GetAddress() == nil {
		c.fail(p, "address is required")
	}
	host, port := c.socketAddress(l.GetAddress(), p.field("address"))
	out.Address = net.JoinHostPort(host, strconv.Itoa(port))
	// Envoy's listener stat prefix is the address with ':' sanitised: listener.0.0.0.0_8080.
	out.StatName = strings.ReplaceAll(out.Address, ":", "_")

	chains := l.GetFilterChains()
	if len(chains) != 1 {
		c.fail(p.field("filter_chains"), "exactly one filter chain is supported, got %d", len(chains))
		return out
	}
	// Envoy puts the downstream TLS socket on the filter chain; the Listener has no transport_socket.
	out.TLS = c.downstreamTLS(chains[0].GetTransportSocket(), p.field("filter_chains").index(0).field("transport_socket"))
	fp := p.field("filter_chains").index(0).field("filters")
	filters := chains[0].GetFilters()
	names := make([]string, len(filters))
	for i, f := range filters {
		names[i] = f.GetName()
		switch c.unpack(f.GetTypedConfig(), fp.index(i).field("typed_config")).(type) {
		case *hcmv3.HttpConnectionManager, *connlimitv3.ConnectionLimit:
		default:
			c.fail(fp.index(i), "network filter %q of type %q is not supported by switchyard; the network filters are %s and the http_connection_manager",
				f.GetName(), f.GetTypedConfig().GetTypeUrl(), ConnectionLimitFilter)
		}
	}
	if c.err != nil {
		return out
	}
	// The only chains: [http_connection_manager] or [connection_limit, http_connection_manager].
	last := len(filters) - 1
	if last >= 0 && last <= 1 {
		tp := fp.index(last).field("typed_config")
		hcm, isHCM := c.unpack(filters[last].GetTypedConfig(), tp).(*hcmv3.HttpConnectionManager)
		var cl *connlimitv3.ConnectionLimit
		isCL := true
		if last == 1 {
			cl, isCL = c.unpack(filters[0].GetTypedConfig(), fp.index(0).field("typed_config")).(*connlimitv3.ConnectionLimit)
		}
		if isHCM && isCL {
			if cl != nil {
				out.ConnectionLimit = c.connectionLimit(cl, fp.index(0).field("typed_config"))
			}
			out.HCM = c.hcm(hcm, tp)
			return out
		}
	}
	c.fail(fp, "the network filters must be the http_connection_manager, optionally preceded by %s; got %q", ConnectionLimitFilter, names)
	return out
}

func (c *compiler) hcm(h *hcmv3.HttpConnectionManager, p path) *HCM {
	out := &HCM{StatPrefix: h.GetStatPrefix()}
	switch h.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO:
		out.Codec = CodecAuto
	case hcmv3.HttpConnectionManager_HTTP1:
		out.Codec = CodecHTTP1
	case hcmv3.HttpConnectionManager_HTTP2:
		out.Codec = CodecHTTP2
	default:
		c.fail(p.field("codec_type"), "codec_type %s is not supported by switchyard (HTTP/3 and QUIC are not implemented)", h.GetCodecType())
	}
	out.HTTP2 = http2Options(h.GetHttp2ProtocolOptions(), h.GetStreamErrorOnInvalidHttpMessage())
	if h.GetHttp2ProtocolOptions().GetConnectionKeepalive().GetConnectionIdleInterval() != nil {
		c.warn(p.field("http2_protocol_options").field("connection_keepalive").field("connection_idle_interval"),
			"applies to upstream connections only (as in Envoy): a listener ignores it")
	}
	if se := h.GetStreamErrorOnInvalidHttpMessage(); se.GetValue() && out.Codec != CodecHTTP2 {
		c.warn(p.field("stream_error_on_invalid_http_message"), "applies to HTTP/2 only in switchyard: "+
			"a malformed HTTP/1.1 request still closes its connection (Envoy would keep it open when the request was read whole)")
	}
	out.HTTPFilters = c.filterChain(h.GetHttpFilters(), p.field("http_filters"), "router must be the last filter in http_filters")
	names := map[string]bool{}
	for _, f := range h.GetHttpFilters() {
		names[f.GetName()] = true
	}
	seen := map[string]bool{}
	for i, u := range h.GetUpgradeConfigs() {
		up := p.field("upgrade_configs").index(i)
		t := strings.ToLower(u.GetUpgradeType())
		switch {
		case t == "":
			c.fail(up.field("upgrade_type"), "upgrade_type must not be empty")
		case seen[t]:
			c.fail(up.field("upgrade_type"), "multiple upgrade configs with the same name: '%s'", u.GetUpgradeType())
		}
		seen[t] = true
		uc := &UpgradeConfig{Type: t, Enabled: boolOr(u.GetEnabled(), true)}
		if len(u.GetFilters()) > 0 {
			uc.Filters = c.filterChain(u.GetFilters(), up.field("filters"), "router must be the last filter in a http upgrade filter chain")
		}
		for _, f := range u.GetFilters() {
			names[f.GetName()] = true
		}
		out.Upgrades = append(out.Upgrades, uc)
	}
	out.Routes = c.routeTable(h.GetRouteConfig(), p.field("route_config"), names)

	out.StreamIdleTimeout = c.duration(h.GetStreamIdleTimeout(), DefaultStreamIdleTimeout, p.field("stream_idle_timeout"))
	out.RequestTimeout = c.duration(h.GetRequestTimeout(), 0, p.field("request_timeout"))
	out.RequestHeadersTimeout = c.duration(h.GetRequestHeadersTimeout(), 0, p.field("request_headers_timeout"))
	out.DrainTimeout = c.duration(h.GetDrainTimeout(), DefaultDrainTimeout, p.field("drain_timeout"))
	common, cp := h.GetCommonHttpProtocolOptions(), p.field("common_http_protocol_options")
	out.IdleTimeout = c.duration(common.GetIdleTimeout(), DefaultConnIdleTimeout, cp.field("idle_timeout"))
	out.MaxStreamDuration = c.duration(common.GetMaxStreamDuration(), 0, cp.field("max_stream_duration"))
	out.MaxRequestsPerConn = int(common.GetMaxRequestsPerConnection().GetValue())

	h1, h1p := h.GetHttpProtocolOptions(), p.field("http_protocol_options")
	out.AcceptHTTP10 = h1.GetAcceptHttp_10()
	out.DefaultHostHTTP10 = h1.GetDefaultHostForHttp_10()
	for i, m := range h1.GetIgnoreHttp_11Upgrade() {
		out.IgnoreUpgrades = append(out.IgnoreUpgrades, c.stringMatcher(m, h1p.field("ignore_http_11_upgrade").index(i)))
	}
	out.UseRemoteAddress = h.GetUseRemoteAddress().GetValue()
	out.XFFNumTrustedHops = int(h.GetXffNumTrustedHops())
	out.GenerateRequestID = boolOr(h.GetGenerateRequestId(), true)
	out.ServerName = h.GetServerName()
	if out.ServerName == "" {
		out.ServerName = "switchyard"
	}
	out.MaxRequestHeadersKB = uint32Or(h.GetMaxRequestHeadersKb(), DefaultMaxHeadersKB)
	return out
}

// filterChain compiles http_filters or an upgrade chain; the router must end it, exactly once.
func (c *compiler) filterChain(fs []*hcmv3.HttpFilter, p path, notLast string) []*HTTPFilter {
	var out []*HTTPFilter
	routers := 0
	for i, f := range fs {
		fp := p.index(i)
		cfg := c.unpack(f.GetTypedConfig(), fp.field("typed_config"))
		switch cfg.(type) {
		case *routerv3.Router:
			routers++
			if i != len(fs)-1 {
				c.fail(fp, "%s (found %q at index %d of %d)", notLast, f.GetName(), i, len(fs))
			}
		case *bufferv3.Buffer:
		case nil:
			c.fail(fp, "filter %q has no typed_config", f.GetName())
		default:
			c.fail(fp.field("typed_config"), "http filter type %s is not supported by switchyard", cfg.ProtoReflect().Descriptor().FullName())
		}
		out = append(out, &HTTPFilter{Name: f.GetName(), Config: cfg})
	}
	if routers == 0 {
		c.fail(p, "%s, but there is no router (add envoy.filters.http.router with typed_config: {\"@type\": %s})", notLast, routerURL)
	}
	return out
}

func (c *compiler) routeTable(rc *routev3.RouteConfiguration, p path, filters map[string]bool) *RouteTable {
	out := &RouteTable{
		Name:                    rc.GetName(),
		RequestHeadersToAdd:     c.headersToAdd(rc.GetRequestHeadersToAdd(), p.field("request_headers_to_add")),
		RequestHeadersToRemove:  c.headersToRemove(rc.GetRequestHeadersToRemove(), p.field("request_headers_to_remove")),
		ResponseHeadersToAdd:    c.headersToAdd(rc.GetResponseHeadersToAdd(), p.field("response_headers_to_add")),
		ResponseHeadersToRemove: c.headersToRemove(rc.GetResponseHeadersToRemove(), p.field("response_headers_to_remove")),
	}
	domains := map[string]bool{}
	for i, vh := range rc.GetVirtualHosts() {
		vp := p.field("virtual_hosts").index(i)
		v := &VirtualHost{
			Name:                    vh.GetName(),
			RequestHeadersToAdd:     c.headersToAdd(vh.GetRequestHeadersToAdd(), vp.field("request_headers_to_add")),
			RequestHeadersToRemove:  c.headersToRemove(vh.GetRequestHeadersToRemove(), vp.field("request_headers_to_remove")),
			ResponseHeadersToAdd:    c.headersToAdd(vh.GetResponseHeadersToAdd(), vp.field("response_headers_to_add")),
			ResponseHeadersToRemove: c.headersToRemove(vh.GetResponseHeadersToRemove(), vp.field("response_headers_to_remove")),
		}
		for j, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			if domains[d] {
				if d == "*" {
					c.fail(vp.field("domains").index(j), "Only a single wildcard domain is permitted in route %s", rc.GetName())
				} else {
					c.fail(vp.field("domains").index(j), "Only unique values for domains are permitted. Duplicate entry of domain %s in route %s", d, rc.GetName())
				}
			}
			domains[d] = true
			v.Domains = append(v.Domains, d)
		}
		for j, r := range vh.GetRoutes() {
			v.Routes = append(v.Routes, c.route(r, vp.field("routes").index(j), filters))
		}
		out.VirtualHosts = append(out.VirtualHosts, v)
	}
	return out
}

func (c *compiler) route(r *routev3.Route, p path, filters map[string]bool) *Route {
	out := &Route{
		Name:                    r.GetName(),
		Match:                   c.routeMatch(r.GetMatch(), p.field("match")),
		RequestHeadersToAdd:     c.headersToAdd(r.GetRequestHeadersToAdd(), p.field("request_headers_to_add")),
		RequestHeadersToRemove:  c.headersToRemove(r.GetRequestHeadersToRemove(), p.field("request_headers_to_remove")),
		ResponseHeadersToAdd:    c.headersToAdd(r.GetResponseHeadersToAdd(), p.field("response_headers_to_add")),
		ResponseHeadersToRemove: c.headersToRemove(r.GetResponseHeadersToRemove(), p.field("response_headers_to_remove")),
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		out.Action = c.routeAction(a.Route, p.field("route"))
	case *routev3.Route_DirectResponse:
		out.DirectResponse = &DirectResponse{Status: int(a.DirectResponse.GetStatus())}
		if b := a.DirectResponse.GetBody(); b != nil { // Envoy reads a body file at load, too
			out.DirectResponse.Body = string(c.dataSource(b, p.field("direct_response").field("body")))
		}
	default:
		c.fail(p, "a route or direct_response action is required")
	}
	tp := p.field("typed_per_filter_config")
	keys := make([]string, 0, len(r.GetTypedPerFilterConfig()))
	for k := range r.GetTypedPerFilterConfig() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		kp := tp.key(k)
		fc, ok := c.unpack(r.GetTypedPerFilterConfig()[k], kp).(*routev3.FilterConfig)
		switch {
		case !ok:
			c.fail(kp, "only envoy.config.route.v3.FilterConfig with disabled: true is supported here")
		case !fc.GetDisabled():
			c.fail(kp, "FilterConfig without disabled: true has no effect in switchyard")
		case !filters[k]:
			c.fail(kp, "no http filter named %q in this http_connection_manager", k)
		}
		if out.DisabledFilters == nil {
			out.DisabledFilters = map[string]bool{}
		}
		out.DisabledFilters[k] = true
	}
	return out
}

func (c *compiler) routeMatch(m *routev3.RouteMatch, p path) RouteMatch {
	out := RouteMatch{CaseSensitive: boolOr(m.GetCaseSensitive(), true)}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.Prefix, out.HasPrefix = ps.Prefix, true
	case *routev3.RouteMatch_Path:
		out.Path = ps.Path
	case *routev3.RouteMatch_SafeRegex:
		out.Regex = c.regex(ps.SafeRegex, p.field("safe_regex"))
	default:
		c.fail(p, "a prefix, path or safe_regex is required")
	}
	for i, h := range m.GetHeaders() {
		out.Headers = append(out.Headers, c.headerMatcher(h, p.field("headers").index(i)))
	}
	return out
}

func (c *compiler) headerMatcher(h *routev3.HeaderMatcher, p path) *HeaderMatcher {
	out := &HeaderMatcher{Name: strings.ToLower(h.GetName()), Invert: h.GetInvertMatch()}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil: // Envoy: no specifier means "the header is present"
		present := true
		out.Present = &present
	case *routev3.HeaderMatcher_PresentMatch:
		out.Present = &s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		out.String = &StringMatcher{Kind: MatchExact, Exact: s.ExactMatch}
	case *routev3.HeaderMatcher_PrefixMatch:
		out.String = &StringMatcher{Kind: MatchPrefix, Prefix: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		out.String = &StringMatcher{Kind: MatchSuffix, Suffix: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		out.String = &StringMatcher{Kind: MatchContains, Contains: s.ContainsMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		out.String = &StringMatcher{Kind: MatchRegex, Regex: c.regex(s.SafeRegexMatch, p.field("safe_regex_match"))}
	case *routev3.HeaderMatcher_StringMatch:
		out.String = c.stringMatcher(s.StringMatch, p.field("string_match"))
	default:
		c.fail(p, "this header match is not supported by switchyard")
	}
	return out
}

func (c *compiler) stringMatcher(m *matcherv3.StringMatcher, p path) *StringMatcher {
	out := &StringMatcher{IgnoreCase: m.GetIgnoreCase()}
	switch s := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		out.Kind, out.Exact = MatchExact, s.Exact
	case *matcherv3.StringMatcher_Prefix:
		out.Kind, out.Prefix = MatchPrefix, s.Prefix
	case *matcherv3.StringMatcher_Suffix:
		out.Kind, out.Suffix = MatchSuffix, s.Suffix
	case *matcherv3.StringMatcher_Contains:
		out.Kind, out.Contains = MatchContains, s.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		// Envoy: "ignore_case has no effect for safe_regex".
		out.Kind, out.Regex, out.IgnoreCase = MatchRegex, c.regex(s.SafeRegex, p.field("safe_regex")), false
	default:
		c.fail(p, "this string match is not supported by switchyard")
	}
	return out
}

// regex compiles an RE2 regex with Go's regexp (same syntax) as a whole-string match, as Envoy's
// safe_regex matchers do.
func (c *compiler) regex(m *matcherv3.RegexMatcher, p path) *regexp.Regexp {
	if _, err := regexp.Compile(m.GetRegex()); err != nil {
		c.fail(p.field("regex"), "cannot compile regex: %v", err)
		return nil
	}
	return regexp.MustCompile("^(?:" + m.GetRegex() + ")$")
}

func (c *compiler) routeAction(a *routev3.RouteAction, p path) *RouteAction {
	out := &RouteAction{
		PrefixRewrite:    a.GetPrefixRewrite(),
		HasPrefixRewrite: a.GetPrefixRewrite() != "",
		HostRewrite:      a.GetHostRewriteLiteral(),
		Timeout:          c.duration(a.GetTimeout(), DefaultRouteTimeout, p.field("timeout")),
	}
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		c.clusterRef(cs.Cluster, p.field("cluster"))
		out.Cluster = cs.Cluster
	case *routev3.RouteAction_WeightedClusters:
		wp := p.field("weighted_clusters")
		var total uint64
		for i, w := range cs.WeightedClusters.GetClusters() {
			c.clusterRef(w.GetName(), wp.field("clusters").index(i).field("name"))
			out.WeightedClusters = append(out.WeightedClusters, WeightedCluster{Name: w.GetName(), Weight: w.GetWeight().GetValue()})
			total += uint64(w.GetWeight().GetValue())
		}
		if total == 0 || total > math.MaxUint32 {
			c.fail(wp, "the sum of the weights must be between 1 and %d, got %d", uint32(math.MaxUint32), total)
		}
		out.TotalWeight = uint32(total)
	default:
		c.fail(p, "a cluster or weighted_clusters is required")
	}
	if a.GetIdleTimeout() != nil {
		d := c.duration(a.GetIdleTimeout(), 0, p.field("idle_timeout"))
		out.IdleTimeout = &d
	}
	for i, u := range a.GetUpgradeConfigs() {
		t := strings.ToLower(u.GetUpgradeType())
		if _, dup := out.Upgrades[t]; dup {
			c.fail(p.field("upgrade_configs").index(i).field("upgrade_type"), "Duplicate upgrade %s", u.GetUpgradeType())
		}
		if out.Upgrades == nil {
			out.Upgrades = map[string]bool{}
		}
		out.Upgrades[t] = boolOr(u.GetEnabled(), true)
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		pp := p.field("retry_policy")
		r := &RetryPolicy{NumRetries: int(uint32Or(rp.GetNumRetries(), 1))}
		for _, on := range strings.Split(rp.GetRetryOn(), ",") {
			switch on = strings.TrimSpace(on); on {
			case "5xx":
				r.On5xx = true
			case "connect-failure":
				r.OnConnectFailure = true
			case "reset":
				r.OnReset = true
			case "":
			default:
				c.fail(pp.field("retry_on"), "retry_on %q is not supported by switchyard (supported: 5xx, connect-failure, reset)", on)
			}
		}
		r.PerTryTimeout = c.duration(rp.GetPerTryTimeout(), 0, pp.field("per_try_timeout"))
		out.Retry = r
	}
	return out
}

func (c *compiler) clusterRef(name string, p path) {
	if _, ok := c.clusters[name]; !ok {
		c.fail(p, "unknown cluster %q", name)
	}
}

func (c *compiler) headersToAdd(hs []*corev3.HeaderValueOption, p path) []HeaderToAdd {
	var out []HeaderToAdd
	for i, h := range hs {
		hp := p.index(i)
		name := strings.ToLower(h.GetHeader().GetKey())
		c.modifiableHeader(name, hp.field("header").field("key"))
		add := true // Envoy's default append_action is APPEND_IF_EXISTS_OR_ADD
		switch h.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			add = false
		default:
			c.fail(hp.field("append_action"), "append_action %s is not supported by switchyard", h.GetAppendAction())
		}
		if h.GetAppend() != nil {
			if h.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				c.fail(hp.field("append"), "append and append_action cannot both be set")
			}
			add = h.GetAppend().GetValue()
		}
		out = append(out, HeaderToAdd{Name: name, Value: h.GetHeader().GetValue(), Append: add})
	}
	return out
}

func (c *compiler) headersToRemove(names []string, p path) []string {
	var out []string
	for i, n := range names {
		n = strings.ToLower(n)
		c.modifiableHeader(n, p.index(i))
		out = append(out, n)
	}
	return out
}

// modifiableHeader applies Envoy's rule that pseudo-headers and host cannot be added or removed.
func (c *compiler) modifiableHeader(name string, p path) {
	if strings.HasPrefix(name, ":") || name == "host" {
		c.fail(p, "':-prefixed' or 'host' headers may not be modified (got %q)", name)
	}
}

func (c *compiler) cluster(cl *clusterv3.Cluster, p path) *Cluster {
	out := &Cluster{
		Name:           cl.GetName(),
		ConnectTimeout: c.duration(cl.GetConnectTimeout(), DefaultConnectTimeout, p.field("connect_timeout")),
		BufferLimit:    uint32Or(cl.GetPerConnectionBufferLimitBytes(), DefaultBufferLimit),
		DNSRefreshRate: c.duration(cl.GetDnsRefreshRate(), 5*time.Second, p.field("dns_refresh_rate")),
		MaxConnections: DefaultCircuitBreaker,
		MaxPending:     DefaultCircuitBreaker,
		MaxRequests:    DefaultCircuitBreaker,
	}
	switch cl.GetType() {
	case clusterv3.Cluster_STATIC:
		out.Type = Static
	case clusterv3.Cluster_STRICT_DNS:
		out.Type = StrictDNS
	case clusterv3.Cluster_LOGICAL_DNS:
		out.Type = LogicalDNS
	default:
		c.fail(p.field("type"), "cluster type %s is not supported by switchyard", cl.GetType())
	}
	switch cl.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		out.LBPolicy = RoundRobin
	case clusterv3.Cluster_RANDOM:
		out.LBPolicy = Random
	case clusterv3.Cluster_LEAST_REQUEST:
		out.LBPolicy = LeastRequest
	default:
		c.fail(p.field("lb_policy"), "lb_policy %s is not supported by switchyard", cl.GetLbPolicy())
	}
	lp := p.field("load_assignment").field("endpoints")
	for i, loc := range cl.GetLoadAssignment().GetEndpoints() {
		for j, lbe := range loc.GetLbEndpoints() {
			ap := lp.index(i).field("lb_endpoints").index(j).field("endpoint").field("address")
			if lbe.GetEndpoint().GetAddress() == nil {
				c.fail(ap, "an endpoint address is required")
			}
			host, port := c.socketAddress(lbe.GetEndpoint().GetAddress(), ap)
			if out.Type == Static && net.ParseIP(host) == nil {
				c.fail(ap.field("socket_address").field("address"), "STATIC cluster endpoints must be IP addresses, got %q", host)
			}
			out.Endpoints = append(out.Endpoints, Endpoint{Host: host, Port: port, Weight: uint32(uint32Or(lbe.GetLoadBalancingWeight(), 1))})
		}
	}
	out.TLS = c.upstreamTLS(cl.GetTransportSocket(), p.field("transport_socket"))
	c.upstreamProtocol(cl, out, p)
	if out.Type == LogicalDNS && len(out.Endpoints) != 1 {
		c.fail(p.field("load_assignment"), "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint")
	}
	th := cl.GetCircuitBreakers().GetThresholds()
	if len(th) > 1 {
		c.fail(p.field("circuit_breakers").field("thresholds"), "at most one threshold (priority DEFAULT) is supported, got %d", len(th))
	}
	if len(th) > 0 {
		out.MaxConnections = uint32Or(th[0].GetMaxConnections(), DefaultCircuitBreaker)
		out.MaxPending = uint32Or(th[0].GetMaxPendingRequests(), DefaultCircuitBreaker)
		out.MaxRequests = uint32Or(th[0].GetMaxRequests(), DefaultCircuitBreaker)
	}
	return out
}

// duration converts an optional Duration: nil means def, 0 means disabled, negative is an error.
func (c *compiler) duration(d *durationpb.Duration, def time.Duration, p path) time.Duration {
	if d == nil {
		return def
	}
	if err := d.CheckValid(); err != nil {
		c.fail(p, "invalid duration: %v", err)
		return def
	}
	if v := d.AsDuration(); v >= 0 {
		return v
	}
	c.fail(p, "duration must not be negative, got %v", d.AsDuration())
	return def
}

func boolOr(v *wrapperspb.BoolValue, def bool) bool {
	if v == nil {
		return def
	}
	return v.GetValue()
}

func uint32Or(v *wrapperspb.UInt32Value, def int) int {
	if v == nil {
		return def
	}
	return int(v.GetValue())
}
