package config

import (
	"testing"
)

func TestLocate(t *testing.T) {
	const doc = `# comment
static_resources:   # trailing comment
  listeners:
  - name: "a: b"    # quoted value with a colon
    address: {socket_address: {address: 1.2.3.4,
      port_value: 80}}
    filter_chains:
    -
      filters:
      - name: x
        typed_config:
          "@type": t
          statPrefix: s
          note: |
            key: not a key
            - not an item
          after: 1
  - name: second
  clusters:
    - name: c0
      nested:
        - - deep: 1
          - deep: 2
      typed_extension_protocol_options:
        'envoy.x.y':
          v: 1
admin: {address: {}}
`
	root := scanYAML([]byte(doc))
	srcs := []*source{{name: "f.yaml", root: root}}
	tests := []struct {
		path path
		line int
	}{
		{path{"static_resources"}, 2},
		{path{"static_resources", "listeners"}, 3},
		{path{"static_resources", "listeners", "[0]"}, 4},
		{path{"static_resources", "listeners", "[0]", "name"}, 4},
		{path{"static_resources", "listeners", "[0]", "address", "socket_address", "port_value"}, 5}, // inside flow: the key's line
		{path{"static_resources", "listeners", "[0]", "filter_chains", "[0]", "filters", "[0]", "name"}, 10},
		{path{"static_resources", "listeners", "[0]", "filter_chains", "[0]", "filters", "[0]", "typed_config", "@type"}, 12},
		{path{"static_resources", "listeners", "[0]", "filter_chains", "[0]", "filters", "[0]", "typed_config", "stat_prefix"}, 13}, // camelCase key
		{path{"static_resources", "listeners", "[0]", "filter_chains", "[0]", "filters", "[0]", "typed_config", "after"}, 17},
		{path{"static_resources", "listeners", "[0]", "filter_chains", "[0]", "filters", "[0]", "typed_config", "missing"}, 11}, // deepest found
		{path{"static_resources", "listeners", "[1]", "name"}, 18},
		{path{"static_resources", "clusters", "[0]", "name"}, 20},
		{path{"static_resources", "clusters", "[0]", "nested", "[0]", "[1]", "deep"}, 23},
		{path{"static_resources", "clusters", "[0]", "typed_extension_protocol_options", `["envoy.x.y"]`, "v"}, 26},
		{path{"admin", "address"}, 27},
	}
	for _, tt := range tests {
		if file, line := locate(srcs, tt.path); file != "f.yaml" || line != tt.line {
			t.Errorf("%s: got %s:%d, want line %d", tt.path, file, line, tt.line)
		}
	}
}

func TestLocateMerged(t *testing.T) {
	base := &source{name: "base", root: scanYAML([]byte("a:\n  list:\n  - x: 1\n  - x: 2\n  s: 1\n"))}
	over := &source{name: "over", root: scanYAML([]byte("a:\n  s: 2\n  list:\n  - x: 3\n"))}
	srcs := []*source{base, over}
	tests := []struct {
		path path
		file string
		line int
	}{
		{path{"a", "list", "[1]", "x"}, "base", 4},
		{path{"a", "list", "[2]", "x"}, "over", 4}, // repeated fields append
		{path{"a", "s"}, "over", 2},                // scalars: the overlay wins
		{path{"a", "list", "[3]"}, "over", 3},      // past the end: the list itself
	}
	for _, tt := range tests {
		if file, line := locate(srcs, tt.path); file != tt.file || line != tt.line {
			t.Errorf("%s: got %s:%d, want %s:%d", tt.path, file, line, tt.file, tt.line)
		}
	}
}
