// Package filter is the public HTTP filter API. It has Envoy's semantics in Go's shape:
//
//   - A stream runs its request (decode) direction through the chain in order and its response
//     (encode) direction in reverse. The router is the last filter; it sends the request upstream and
//     starts the response with Callbacks.EncodeHeaders.
//   - An upgrade looks like any request to a filter: headers with endStream=false, then the upgrade
//     payload as DecodeData calls; after the 101, the upstream's payload arrives as EncodeData calls.
//     endStream=true on data is a half-close of that direction.
//   - A filter that must wait (auth, rate limit) blocks on Callbacks.Context(); statuses are only for
//     data flow. The decode direction runs on one goroutine and the encode direction on another, so a
//     filter that keeps state shared by both directions must guard it.
//
// A filter value implements DecoderFilter, EncoderFilter or both; optional hooks (Destroyer) are
// found by type assertion. Embed PassThrough to get no-op defaults.
package filter

import (
	"context"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/headers"
	"google.golang.org/protobuf/proto"
)

// Status tells the stream what to do with what a filter was just given.
type Status int

const (
	// Continue passes the headers or data (whatever is left in the buffer) to the next filter.
	Continue Status = iota
	// StopIteration, returned from a headers call, holds the headers: they go on, followed by any
	// held data, as soon as a later data call returns Continue.
	StopIteration
	// StopAndBuffer, returned from a data call, holds the data: the next data call receives
	// everything held so far plus the new bytes. When the held bytes exceed the buffer limit, the
	// stream answers 413 (request) or 500 (response) itself.
	StopAndBuffer
)

// DecoderFilter sees the request direction.
type DecoderFilter interface {
	DecodeHeaders(h *headers.Map, endStream bool) Status
	DecodeData(data *buffer.Buffer, endStream bool) Status
}

// EncoderFilter sees the response direction.
type EncoderFilter interface {
	EncodeHeaders(h *headers.Map, endStream bool) Status
	EncodeData(data *buffer.Buffer, endStream bool) Status
}

// Destroyer is an optional hook called once when the stream ends, from the stream's own goroutine,
// after both directions have stopped calling the filter.
type Destroyer interface {
	OnDestroy()
}

// DrainCloser is an optional hook for tunnels still open when the proxy's drain time runs out: the
// filter ends its side cleanly (the router sends a WebSocket Close 1001, or a FIN / END_STREAM for
// other upgrades) before the connections are closed. Called from the server's goroutine; it must
// not block on a write that may never finish.
type DrainCloser interface {
	OnDrainDeadline()
}

// Callbacks is the stream as a filter sees it.
type Callbacks interface {
	// Context is cancelled when the stream ends or is reset. Block on it, never past it.
	Context() context.Context
	// UpgradeType is the lower-cased Upgrade token when the request is an accepted upgrade, else "".
	UpgradeType() string
	// RouteName is the matched route's name ("" when none or unnamed).
	RouteName() string
	// SendLocalReply answers the request from the proxy. Before the response has started, it sends
	// status, body and the details string (kept for logs and the x-envoy-details-like stat); after,
	// it resets the stream. The remaining filters of the decode direction are not called.
	SendLocalReply(status int, body, details string)
	// SetDecoderBufferLimit sets how many bytes StopAndBuffer may hold on the request side
	// (default: the listener's per_connection_buffer_limit_bytes).
	SetDecoderBufferLimit(n int)
	// DecoderBufferLimit is the current request-side limit.
	DecoderBufferLimit() int
	// EncodeHeaders starts the response; it runs the encoder filters and then writes downstream.
	EncodeHeaders(h *headers.Map, endStream bool)
	// EncodeData continues the response.
	EncodeData(data *buffer.Buffer, endStream bool)
}

// Factory makes one filter instance for one stream.
type Factory func(cb Callbacks) any

// Builder compiles a filter's typed_config into a Factory at config load, so bad settings fail
// the load, not a request.
type Builder func(config proto.Message) (Factory, error)

// PassThrough is an embeddable filter that continues everything.
type PassThrough struct{}

// DecodeHeaders continues.
func (PassThrough) DecodeHeaders(*headers.Map, bool) Status { return Continue }

// DecodeData continues.
func (PassThrough) DecodeData(*buffer.Buffer, bool) Status { return Continue }

// EncodeHeaders continues.
func (PassThrough) EncodeHeaders(*headers.Map, bool) Status { return Continue }

// EncodeData continues.
func (PassThrough) EncodeData(*buffer.Buffer, bool) Status { return Continue }
