package config

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Every message and field named in allowList and notSupportedWhy must exist, or a typo would
// silently reject (or fail to explain) a field.
func TestAllowListNamesExist(t *testing.T) {
	for msg, fields := range allowList {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(msg)
		if err != nil {
			t.Errorf("allowList: message %s: %v", msg, err)
			continue
		}
		md := d.(protoreflect.MessageDescriptor)
		if fields == "*" {
			continue
		}
		for _, f := range strings.Fields(fields) {
			if md.Fields().ByName(protoreflect.Name(f)) == nil {
				t.Errorf("allowList: %s has no field %q", msg, f)
			}
		}
	}
	for name := range notSupportedWhy {
		if _, err := protoregistry.GlobalFiles.FindDescriptorByName(name); err != nil {
			t.Errorf("notSupportedWhy: %s: %v", name, err)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{File: "c.yaml", Line: 3, Path: "a.b[0]", Msg: "bad"}, "c.yaml:3: a.b[0]: bad"},
		{Error{File: "c.json", Path: "a", Msg: "bad"}, "c.json: a: bad"},
		{Error{Line: 7, Msg: "bad"}, "line 7: bad"},
		{Error{Msg: "bad"}, "bad"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestSnake(t *testing.T) {
	for in, want := range map[string]string{
		"PortValue": "port_value", "AcceptHttp_10": "accept_http_10", "Http2ProtocolOptions": "http2_protocol_options",
		"statPrefix": "stat_prefix", "name": "name", "MaxRequestHeadersKb": "max_request_headers_kb",
	} {
		if got := snake(in); got != want {
			t.Errorf("snake(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAdminAccessLogIgnoredWithWarning(t *testing.T) {
	doc := base + `admin:
  access_log:
  - name: envoy.access_loggers.file
    typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/null}
  address: {socket_address: {address: 127.0.0.1, port_value: 9901}}
`
	s := parse(t, doc)
	if s.Admin == nil || s.Admin.Address != "127.0.0.1:9901" {
		t.Errorf("admin %+v", s.Admin)
	}
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "admin access logs are ignored") {
		t.Errorf("warnings %q", s.Warnings)
	}
}

func TestMatchers(t *testing.T) {
	s := parse(t, conf(t,
		"{prefix: /}", strings.ReplaceAll(`
safe_regex: {regex: "/api/v[0-9]+"}
case_sensitive: false
headers:
  - {name: X-Exact, exact_match: a}
  - {name: X-Pre, prefix_match: b, invert_match: true}
  - {name: X-Present}
  - {name: X-Absent, present_match: false}
  - {name: X-Re, safe_regex_match: {regex: "c+"}}
  - {name: X-Str, string_match: {suffix: D, ignore_case: true}}`, "\n", "\n"+strings.Repeat(" ", 18)),
		"#HCM", "http_protocol_options:\n  accept_http_10: true\n  default_host_for_http_10: example.com\n  ignore_http_11_upgrade: [{prefix: h2}]"))
	h := s.Listeners[0].HCM
	m := h.Routes.VirtualHosts[0].Routes[0].Match
	if m.Regex == nil || !m.Regex.MatchString("/api/v12") || m.Regex.MatchString("/x/api/v1") || m.Regex.MatchString("/api/v1/x") || m.CaseSensitive {
		t.Errorf("regex %v case sensitive %v: want a whole-path match, case-insensitive", m.Regex, m.CaseSensitive)
	}
	hs := m.Headers
	if len(hs) != 6 {
		t.Fatalf("%d header matchers", len(hs))
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"exact", hs[0].Name == "x-exact" && hs[0].String.Kind == MatchExact && hs[0].String.Exact == "a"},
		{"prefix inverted", hs[1].String.Kind == MatchPrefix && hs[1].String.Prefix == "b" && hs[1].Invert},
		{"no specifier means present", hs[2].Present != nil && *hs[2].Present && hs[2].String == nil},
		{"present false", hs[3].Present != nil && !*hs[3].Present},
		{"regex", hs[4].String.Kind == MatchRegex && hs[4].String.Regex.MatchString("ccc") && !hs[4].String.Regex.MatchString("cd")},
		{"string suffix", hs[5].String.Kind == MatchSuffix && hs[5].String.Suffix == "D" && hs[5].String.IgnoreCase},
		{"http/1.0", h.AcceptHTTP10 && h.DefaultHostHTTP10 == "example.com"},
		{"ignore upgrade", len(h.IgnoreUpgrades) == 1 && h.IgnoreUpgrades[0].Kind == MatchPrefix && h.IgnoreUpgrades[0].Prefix == "h2"},
	}
	for _, ck := range checks {
		if !ck.ok {
			t.Errorf("%s: wrong compile result", ck.name)
		}
	}
}
