package http1

import (
	"bufio"
	"strings"
	"testing"
)

// wsRequest is a typical browser WebSocket upgrade: request line and eight fields.
const wsRequest = "GET /chat?room=42 HTTP/1.1\r\n" +
	"Host: server.example.com\r\n" +
	"Upgrade: websocket\r\n" +
	"Connection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"Origin: https://example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" +
	"\r\n"

const okResponse = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: application/json\r\n" +
	"Content-Length: 1234\r\n" +
	"Date: Mon, 27 Jul 2026 12:00:00 GMT\r\n" +
	"Server: upstream\r\n" +
	"Cache-Control: no-store\r\n" +
	"X-Request-Id: 3f0c5a0e-9d1b-4a59-8f0e-2a3b4c5d6e7f\r\n" +
	"\r\n"

func BenchmarkReadRequest(b *testing.B) {
	r := strings.NewReader(wsRequest)
	br := bufio.NewReader(r)
	b.ReportAllocs()
	b.SetBytes(int64(len(wsRequest)))
	for b.Loop() {
		r.Reset(wsRequest)
		br.Reset(r)
		if _, err := ReadRequest(br, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadResponse(b *testing.B) {
	r := strings.NewReader(okResponse)
	br := bufio.NewReader(r)
	b.ReportAllocs()
	b.SetBytes(int64(len(okResponse)))
	for b.Loop() {
		r.Reset(okResponse)
		br.Reset(r)
		if _, err := ReadResponse(br, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
