package config

import (
	"errors"
	"strings"
	"testing"
)

// base is a minimal valid bootstrap. The #MARKER comments are where tests splice in lines (see conf).
const base = `static_resources:
  listeners:
  - name: l0
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          #HCM
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              #VHOST
              routes:
              #ROUTELIST
              - match: {prefix: /}
                #RENTRY
                route:
                  cluster: backend
                  #ACTION
          http_filters:
          #FILTERS
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
      #CHAIN
  clusters:
  - name: backend
    #CLUSTER
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}
`

// conf returns base with each "#MARKER" replaced by text, every line of text indented like the
// marker. Pairs are marker, text; other replacements are old, new (no leading '#').
func conf(t *testing.T, pairs ...string) string {
	t.Helper()
	s := base
	for i := 0; i+1 < len(pairs); i += 2 {
		old, text := pairs[i], pairs[i+1]
		if !strings.Contains(s, old) {
			t.Fatalf("conf: %q not in base", old)
		}
		if strings.HasPrefix(old, "#") {
			at := strings.Index(s, old)
			indent := strings.Repeat(" ", at-strings.LastIndex(s[:at], "\n")-1)
			text = strings.ReplaceAll(strings.TrimSuffix(text, "\n"), "\n", "\n"+indent)
		}
		s = strings.Replace(s, old, text, 1)
	}
	return s
}

// lineOf is the 1-based line of the first line containing needle.
func lineOf(t *testing.T, doc, needle string) int {
	t.Helper()
	for i, l := range strings.Split(doc, "\n") {
		if strings.Contains(l, needle) {
			return i + 1
		}
	}
	t.Fatalf("lineOf: %q not found", needle)
	return 0
}

func parse(t *testing.T, doc string) *Snapshot {
	t.Helper()
	s, err := Parse("test.yaml", []byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, doc)
	}
	return s
}

func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
	return e
}

// parseErrorCase is a config that must fail to load with a given *Error.
type parseErrorCase struct {
	name   string
	doc    string
	path   string // exact Error.Path
	msg    string // substring of Error.Msg
	lineAt string // the error's line is the first line containing this; "" to skip the check
}

func runParseErrors(t *testing.T, tests []parseErrorCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("test.yaml", []byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse succeeded, want error %q\n%s", tt.msg, tt.doc)
			}
			e := asError(t, err)
			if e.File != "test.yaml" || e.Path != tt.path || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("got file %q path %q msg %q\nwant path %q msg containing %q", e.File, e.Path, e.Msg, tt.path, tt.msg)
			}
			if tt.lineAt != "" {
				if want := lineOf(t, tt.doc, tt.lineAt); e.Line != want {
					t.Errorf("line %d, want %d (%q); error: %v", e.Line, want, tt.lineAt, e)
				}
			}
		})
	}
}
