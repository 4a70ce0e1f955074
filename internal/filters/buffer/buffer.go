// Package buffer is envoy.filters.http.buffer: it holds a whole request before letting it go
// upstream and answers 413 when the request is larger than max_request_bytes. An upgrade never
// ends its request, so on an upgrade this filter holds the handshake until the payload passes the
// limit (413) or the stream times out — which is why upgrade_configs can name a chain without it.
package buffer

import (
	"fmt"

	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/filter"
	"github.com/switchyard-proxy/switchyard/headers"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's well-known name.
const Name = "envoy.filters.http.buffer"

// Build compiles a Buffer typed_config.
func Build(cfg proto.Message) (filter.Factory, error) {
	c, ok := cfg.(*bufferv3.Buffer)
	if !ok || c.GetMaxRequestBytes() == nil {
		return nil, fmt.Errorf("%s: max_request_bytes is required", Name)
	}
	limit := int(c.GetMaxRequestBytes().GetValue())
	return func(cb filter.Callbacks) any { return &bufferFilter{cb: cb, limit: limit} }, nil
}

type bufferFilter struct {
	filter.PassThrough
	cb    filter.Callbacks
	limit int
}

func (f *bufferFilter) DecodeHeaders(_ *headers.Map, endStream bool) filter.Status {
	if endStream {
		return filter.Continue
	}
	f.cb.SetDecoderBufferLimit(f.limit)
	return filter.StopIteration
}

func (f *bufferFilter) DecodeData(_ *buffer.Buffer, endStream bool) filter.Status {
	if endStream {
		return filter.Continue
	}
	return filter.StopAndBuffer
}
