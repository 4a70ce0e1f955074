package config

import (
	"os"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// Registered so that "@type" URLs in typed_config resolve. The access loggers are only
	// accepted (and ignored) under admin.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// overlayName is how errors in the overlay name their source, after Envoy's flag.
const overlayName = "--config-yaml"

// Load reads the bootstrap from path (YAML or JSON; "" means none) and merges overlayYAML over it
// with Envoy's --config-yaml semantics (proto MergeFrom: repeated fields append, scalars replace),
// then validates and compiles it. Every error is an *Error naming the field.
func Load(path, overlayYAML string) (*Snapshot, error) {
	var docs []doc
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, &Error{File: path, Msg: err.Error()}
		}
		docs = append(docs, doc{path, data})
	}
	if overlayYAML != "" {
		docs = append(docs, doc{overlayName, []byte(overlayYAML)})
	}
	if len(docs) == 0 {
		return nil, &Error{Msg: "no configuration: give a config file or --config-yaml"}
	}
	return load(docs...)
}

// Parse is Load on in-memory bytes; name is used in error messages (e.g. the file name).
func Parse(name string, data []byte) (*Snapshot, error) {
	return load(doc{name, data})
}

type doc struct {
	name string
	data []byte
}

func load(docs ...doc) (*Snapshot, error) {
	c := &compiler{unpacked: map[*anypb.Any]proto.Message{}}
	merged := &bootstrapv3.Bootstrap{}
	for _, d := range docs {
		b, src, warnings, err := decode(d.name, d.data)
		if err != nil {
			return nil, err
		}
		c.srcs = append(c.srcs, src)
		c.warnings = append(c.warnings, warnings...)
		proto.Merge(merged, b)
	}
	return c.compile(merged)
}
