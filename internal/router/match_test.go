package router

import (
	"regexp"
	"testing"

	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/config"
)

func TestSelectVirtualHost(t *testing.T) {
	rt := &config.RouteTable{VirtualHosts: []*config.VirtualHost{
		{Name: "exact", Domains: []string{"api.example.com", "api.example.com:8443"}},
		{Name: "suffix", Domains: []string{"*.example.com"}},
		{Name: "longsuffix", Domains: []string{"*.ws.example.com"}},
		{Name: "prefix", Domains: []string{"static.*"}},
		{Name: "any", Domains: []string{"*"}},
	}}
	tests := map[string]string{
		"api.example.com":      "exact",
		"API.Example.com":      "exact",
		"api.example.com:8443": "exact",
		"api.example.com:80":   "any", // Envoy matches the authority with its port
		"x.example.com":        "suffix",
		"a.ws.example.com":     "longsuffix",
		"example.com":          "any", // the wildcard needs at least one character
		"static.cdn":           "prefix",
		"other":                "any",
		"[::1]:80":             "any",
	}
	for host, want := range tests {
		vh := SelectVirtualHost(rt, host)
		if vh == nil || vh.Name != want {
			t.Errorf("%s → %v, want %s", host, vh, want)
		}
	}
	none := &config.RouteTable{VirtualHosts: []*config.VirtualHost{{Name: "only", Domains: []string{"a"}}}}
	if vh := SelectVirtualHost(none, "b"); vh != nil {
		t.Errorf("b matched %s", vh.Name)
	}
}

func TestMatch(t *testing.T) {
	present := true
	vh := &config.VirtualHost{Routes: []*config.Route{
		{Name: "exact-path", Match: config.RouteMatch{Path: "/ws", CaseSensitive: true}},
		{Name: "regex", Match: config.RouteMatch{Regex: regexp.MustCompile(`^(?:/v[0-9]+/chat)$`), CaseSensitive: true}},
		{Name: "header", Match: config.RouteMatch{Prefix: "/h", HasPrefix: true, CaseSensitive: true, Headers: []*config.HeaderMatcher{
			{Name: "x-tenant", String: &config.StringMatcher{Kind: config.MatchPrefix, Prefix: "blue"}}}}},
		{Name: "absent", Match: config.RouteMatch{Prefix: "/h", HasPrefix: true, CaseSensitive: true, Headers: []*config.HeaderMatcher{
			{Name: "x-tenant", Present: &present, Invert: true}}}},
		{Name: "nocase", Match: config.RouteMatch{Prefix: "/API", HasPrefix: true}},
		{Name: "fallback", Match: config.RouteMatch{Prefix: "/", HasPrefix: true, CaseSensitive: true}},
	}}
	tests := []struct {
		path  string
		extra []string
		want  string
	}{
		{"/ws", nil, "exact-path"},
		{"/ws?x=1", nil, "exact-path"},
		{"/WS", nil, "fallback"},
		{"/v2/chat", nil, "regex"},
		{"/v2/chat?room=1", nil, "regex"},
		{"/v2/chatty", nil, "fallback"},
		{"/h", []string{"x-tenant", "blue-1"}, "header"},
		{"/h", []string{"x-tenant", "red"}, "fallback"},
		{"/h", nil, "absent"},
		{"/api/x", nil, "nocase"},
	}
	for _, tc := range tests {
		h := headers.New(append([]string{headers.Path, tc.path}, tc.extra...)...)
		r := Match(vh, h)
		if r == nil || r.Name != tc.want {
			t.Errorf("%s %v → %v, want %s", tc.path, tc.extra, r, tc.want)
		}
	}
}
