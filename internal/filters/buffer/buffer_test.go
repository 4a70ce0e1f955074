package buffer

import (
	"context"
	"testing"

	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/filter"
	"github.com/switchyard-proxy/switchyard/headers"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// callbacks records the one thing the buffer filter asks of its stream.
type callbacks struct {
	filter.Callbacks
	limit int
}

func (c *callbacks) SetDecoderBufferLimit(n int) { c.limit = n }
func (c *callbacks) Context() context.Context    { return context.Background() }

func TestBufferFilter(t *testing.T) {
	if _, err := Build(&bufferv3.Buffer{}); err == nil {
		t.Fatal("Build accepted a config without max_request_bytes")
	}
	fac, err := Build(&bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(1024)})
	if err != nil {
		t.Fatal(err)
	}
	cb := &callbacks{}
	f := fac(cb).(filter.DecoderFilter)
	if st := f.DecodeHeaders(headers.New(), true); st != filter.Continue {
		t.Errorf("headers-only request: %v, want Continue", st)
	}
	if cb.limit != 0 {
		t.Errorf("headers-only request set a buffer limit")
	}
	if st := f.DecodeHeaders(headers.New(), false); st != filter.StopIteration {
		t.Errorf("request with a body: %v, want StopIteration", st)
	}
	if cb.limit != 1024 {
		t.Errorf("limit = %d, want 1024 (the stream answers 413 past it)", cb.limit)
	}
	if st := f.DecodeData(buffer.Wrap([]byte("abc")), false); st != filter.StopAndBuffer {
		t.Errorf("data: %v, want StopAndBuffer", st)
	}
	if st := f.DecodeData(buffer.Wrap([]byte("d")), true); st != filter.Continue {
		t.Errorf("last data: %v, want Continue", st)
	}
}
