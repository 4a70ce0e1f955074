package http2

import (
	"testing"

	"github.com/switchyard-proxy/switchyard/headers"
)

// BenchmarkTranslateWebSocketHop is the header work of one WebSocket handshake across an HTTP/2
// hop, both ways: the front turns the HTTP/1.1 Upgrade request into an extended CONNECT
// (RequestToH2), the sidecar turns it back (CheckFields, RequestFromH2); the sidecar's 101 becomes
// a 200 (ResponseToH2) and the front's 200 a 101 again (ResponseFromH2). Each iteration starts
// from a fresh copy of the client's request, as a handshake does.
func BenchmarkTranslateWebSocketHop(b *testing.B) {
	req := headers.New(
		headers.Method, "GET", headers.Path, "/chat?room=1", headers.Scheme, "http",
		headers.Authority, "app.example", "upgrade", "websocket", "connection", "Upgrade",
		"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version", "13",
		"sec-websocket-protocol", "chat", "user-agent", "bench/1", "cookie", "a=1", "cookie", "b=2")
	resp := headers.New(headers.Status, "101", "upgrade", "websocket", "connection", "Upgrade",
		"sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "sec-websocket-protocol", "chat")
	b.ReportAllocs()
	for b.Loop() {
		h := req.Clone()
		up := RequestToH2(h)
		if err := CheckFields(h, true); err != nil {
			b.Fatal(err)
		}
		if ext, err := RequestFromH2(h, true); err != nil || !ext {
			b.Fatalf("RequestFromH2: %v, extended %v", err, ext)
		}
		r := resp.Clone()
		if err := ResponseToH2(r, true); err != nil {
			b.Fatal(err)
		}
		ResponseFromH2(r, up)
		if r.Get(headers.Status) != "101" || h.Get("upgrade") != "websocket" {
			b.Fatalf("round trip gave %q and upgrade %q", r.Get(headers.Status), h.Get("upgrade"))
		}
	}
}
