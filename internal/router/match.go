// Package router picks a virtual host and route for a request and is the router filter: the last
// filter of every chain, which sends the request to a cluster, holds an upgrade's payload until the
// upstream switches protocols, and retries and times out the way the route says.
package router

import (
	"strings"

	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/config"
)

// SelectVirtualHost finds the virtual host for an authority the way Envoy does: an exact domain,
// then the longest "*.suffix" wildcard, then the longest "prefix.*" wildcard, then "*". As in
// Envoy, the authority is matched as sent: "example.com:8080" matches a domain written with that
// port, or a wildcard.
func SelectVirtualHost(t *config.RouteTable, authority string) *config.VirtualHost {
	if t == nil {
		return nil
	}
	return selectVirtualHost(t, strings.ToLower(authority))
}

func selectVirtualHost(t *config.RouteTable, host string) *config.VirtualHost {
	var (
		suffixVH, prefixVH, anyVH *config.VirtualHost
		suffixLen, prefixLen      int
	)
	for _, vh := range t.VirtualHosts {
		for _, d := range vh.Domains {
			switch {
			case d == "*":
				if anyVH == nil {
					anyVH = vh
				}
			case d == host:
				return vh
			case strings.HasPrefix(d, "*"):
				// Envoy: the wildcard must match at least one character.
				if s := d[1:]; len(host) > len(s) && strings.HasSuffix(host, s) && len(s) > suffixLen {
					suffixVH, suffixLen = vh, len(s)
				}
			case strings.HasSuffix(d, "*"):
				if p := d[:len(d)-1]; len(host) > len(p) && strings.HasPrefix(host, p) && len(p) > prefixLen {
					prefixVH, prefixLen = vh, len(p)
				}
			}
		}
	}
	switch {
	case suffixVH != nil:
		return suffixVH
	case prefixVH != nil:
		return prefixVH
	}
	return anyVH
}

// Match returns the first route of the virtual host that matches the request, or nil.
func Match(vh *config.VirtualHost, h *headers.Map) *config.Route {
	if vh == nil {
		return nil
	}
	path := h.Get(headers.Path)
	for _, r := range vh.Routes {
		if matchRoute(&r.Match, path, h) {
			return r
		}
	}
	return nil
}

func matchRoute(m *config.RouteMatch, path string, h *headers.Map) bool {
	noQuery := path
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		noQuery = path[:i]
	}
	switch {
	case m.Regex != nil:
		// Envoy: the whole path without the query string must match.
		if !m.Regex.MatchString(noQuery) {
			return false
		}
	case m.Path != "":
		if !equal(noQuery, m.Path, m.CaseSensitive) {
			return false
		}
	default:
		// Envoy: a prefix is matched against the beginning of :path, query included.
		if len(path) < len(m.Prefix) || !equal(path[:len(m.Prefix)], m.Prefix, m.CaseSensitive) {
			return false
		}
	}
	for _, hm := range m.Headers {
		if !MatchHeader(hm, h) {
			return false
		}
	}
	return true
}

func equal(a, b string, caseSensitive bool) bool {
	if caseSensitive {
		return a == b
	}
	return strings.EqualFold(a, b)
}

// MatchHeader applies one route header matcher. Several values of one header are matched as
// their comma-joined form, as Envoy does.
func MatchHeader(hm *config.HeaderMatcher, h *headers.Map) bool {
	vals := h.Values(hm.Name)
	present := len(vals) > 0
	var ok bool
	switch {
	case hm.Present != nil:
		ok = present == *hm.Present
	case hm.String != nil:
		ok = present && MatchString(hm.String, strings.Join(vals, ","))
	default:
		ok = present
	}
	return ok != hm.Invert
}

// MatchString applies a compiled StringMatcher.
func MatchString(m *config.StringMatcher, v string) bool {
	if m.IgnoreCase && m.Kind != config.MatchRegex {
		v = strings.ToLower(v)
		return matchKind(m.Kind, v, strings.ToLower(m.Exact), strings.ToLower(m.Prefix), strings.ToLower(m.Suffix), strings.ToLower(m.Contains), m)
	}
	return matchKind(m.Kind, v, m.Exact, m.Prefix, m.Suffix, m.Contains, m)
}

func matchKind(k config.StringMatchKind, v, exact, prefix, suffix, contains string, m *config.StringMatcher) bool {
	switch k {
	case config.MatchExact:
		return v == exact
	case config.MatchPrefix:
		return strings.HasPrefix(v, prefix)
	case config.MatchSuffix:
		return strings.HasSuffix(v, suffix)
	case config.MatchContains:
		return strings.Contains(v, contains)
	case config.MatchRegex:
		return m.Regex != nil && m.Regex.MatchString(v)
	}
	return false
}
