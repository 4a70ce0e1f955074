package hcm

import (
	"github.com/switchyard-proxy/switchyard/headers"
)

// requestInfo are the facts about a request that come from its wire protocol.
type requestInfo struct {
	http10    bool   // an HTTP/1.0 request: never an upgrade (RFC 9110 §7.8)
	bodyless  bool   // the request ended with its headers
	chunked   bool   // the body's length is not known up front
	keepAlive bool   // the client wants the connection kept after this request (HTTP/1.1)
	canExpect bool   // the codec can answer "Expect: 100-continue" itself
	remote    string // the client's address, host:port
	scheme    string // "http" or "https"
	extended  bool   // an HTTP/2 extended CONNECT (RFC 8441), now an upgrade
}

// downstream is the codec side of one stream: where the request's body and upgrade payload come
// from, and where the response goes. The HTTP/1.1 connection and the HTTP/2 codec implement it;
// everything else about a stream is the same for both.
//
// read is called only from the decode goroutine; the write methods only with the stream's encode
// lock held; abortRead and reset from any goroutine.
type downstream interface {
	info() *requestInfo
	// read returns the next bytes of the request body — or, once tunnel is true, of the upgrade
	// payload — in a pooled slab the caller returns. io.EOF means the client ended its side.
	read(tunnel bool) (*[]byte, int, error)
	// continue100 tells the client to send its body.
	continue100()
	// writeHead writes a response head; switchProto marks the 101 of an accepted upgrade. The
	// codec adds its own framing fields. bodyless says no body will follow.
	writeHead(h *headers.Map, status int, end, switchProto bool) (bodyless bool, err error)
	writeBody(p []byte) error
	// endBody ends a normal response.
	endBody() error
	// closeTunnelWrite passes the upstream's end of a tunnel on to the client (FIN, END_STREAM).
	closeTunnelWrite() error
	// abortRead stops the request side once the exchange is over but the client is still sending.
	abortRead()
	// reset tears the stream down: for HTTP/1.1 the connection, for HTTP/2 only the stream.
	reset()
	// keepAlive reports whether the connection may carry another request after this one.
	keepAlive() bool
}
