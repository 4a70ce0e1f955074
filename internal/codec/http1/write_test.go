package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/switchyard-proxy/switchyard/headers"
)

func writeHead(write func(*bufio.Writer, *headers.Map) error, h *headers.Map) (string, error) {
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	err := write(w, h)
	w.Flush()
	return out.String(), err
}

func TestWriteRequestHead(t *testing.T) {
	tests := []struct {
		name string
		h    *headers.Map
		want string
	}{
		{
			name: "origin-form",
			h:    headers.New(":method", "GET", ":path", "/chat?x=1", ":authority", "example.com", "upgrade", "websocket", "connection", "upgrade"),
			want: "GET /chat?x=1 HTTP/1.1\r\nhost: example.com\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
		},
		{
			name: "pseudo-headers and a regular host field are not written as fields",
			h:    headers.New(":method", "POST", ":scheme", "https", ":path", "/", ":authority", "a:1", "host", "evil", ":protocol", "websocket", "x", ""),
			want: "POST / HTTP/1.1\r\nhost: a:1\r\nx: \r\n\r\n",
		},
		{
			name: "CONNECT uses the authority as target",
			h:    headers.New(":method", "CONNECT", ":authority", "example.com:443"),
			want: "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
		},
		{
			name: "empty authority",
			h:    headers.New(":method", "OPTIONS", ":path", "*"),
			want: "OPTIONS * HTTP/1.1\r\nhost: \r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := writeHead(WriteRequestHead, tt.h)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("wrote %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWriteResponseHead(t *testing.T) {
	tests := []struct {
		name string
		h    *headers.Map
		want string
	}{
		{
			name: "101",
			h:    headers.New(":status", "101", "upgrade", "websocket", "connection", "upgrade"),
			want: "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
		},
		{
			name: "standard reason",
			h:    headers.New(":status", "404", "content-length", "0"),
			want: "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
		},
		{
			name: "unknown code",
			h:    headers.New(":status", "599", "host", "kept"),
			want: "HTTP/1.1 599 Unknown\r\nhost: kept\r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := writeHead(WriteResponseHead, tt.h)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("wrote %q, want %q", got, tt.want)
			}
		})
	}
}

// TestWriteHeadRefusesSplitting: nothing that could split or corrupt a head is ever written.
func TestWriteHeadRefusesSplitting(t *testing.T) {
	req := func(pairs ...string) *headers.Map {
		return headers.New(append([]string{":method", "GET", ":path", "/", ":authority", "h"}, pairs...)...)
	}
	requests := []struct {
		name string
		h    *headers.Map
	}{
		{"CRLF in value", req("x", "a\r\nInjected: 1")},
		{"LF in value", req("x", "a\nb")},
		{"CR in value", req("x", "a\rb")},
		{"NUL in value", req("x", "a\x00")},
		{"ESC in value", req("x", "\x1b[0m")},
		{"DEL in value", req("x", "a\x7f")},
		{"space in name", req("x y", "1")},
		{"colon in name", req("x:y", "1")},
		{"CRLF in name", req("x\r\ny", "1")},
		{"empty name", req("", "1")},
		{"space in method", headers.New(":method", "G T", ":path", "/", ":authority", "h")},
		{"empty method", headers.New(":path", "/", ":authority", "h")},
		{"space in path", headers.New(":method", "GET", ":path", "/a b", ":authority", "h")},
		{"CRLF in path", headers.New(":method", "GET", ":path", "/\r\nX: y", ":authority", "h")},
		{"non-ASCII path", headers.New(":method", "GET", ":path", "/\xe9", ":authority", "h")},
		{"no path", headers.New(":method", "GET", ":authority", "h")},
		{"CRLF in authority", headers.New(":method", "GET", ":path", "/", ":authority", "h\r\nX: y")},
		{"space in authority", headers.New(":method", "GET", ":path", "/", ":authority", "h h")},
		{"CONNECT without port", headers.New(":method", "CONNECT", ":authority", "h")},
	}
	for _, tt := range requests {
		t.Run("request/"+tt.name, func(t *testing.T) {
			out, err := writeHead(WriteRequestHead, tt.h)
			if !errors.Is(err, ErrInvalidHead) || out != "" {
				t.Errorf("wrote %q, err %v; want nothing and ErrInvalidHead", out, err)
			}
		})
	}
	responses := []struct {
		name string
		h    *headers.Map
	}{
		{"CRLF in value", headers.New(":status", "200", "set-cookie", "a\r\n\r\n<html>")},
		{"bad name", headers.New(":status", "200", "x\x00", "1")},
		{"no status", headers.New("x", "1")},
		{"two-digit status", headers.New(":status", "99")},
		{"status 600", headers.New(":status", "600")},
		{"status with CRLF", headers.New(":status", "200\r\nX: y")},
		{"signed status", headers.New(":status", "+20")},
	}
	for _, tt := range responses {
		t.Run("response/"+tt.name, func(t *testing.T) {
			out, err := writeHead(WriteResponseHead, tt.h)
			if !errors.Is(err, ErrInvalidHead) || out != "" {
				t.Errorf("wrote %q, err %v; want nothing and ErrInvalidHead", out, err)
			}
		})
	}
}

func TestRequestRoundTrip(t *testing.T) {
	for _, in := range []string{
		"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
		"POST /p?q HTTP/1.1\r\nHost: h:1\r\nContent-Length: 10, 10\r\nX-E:\r\nX-Obs: \xe9\xff\r\n\r\n",
		"PUT / HTTP/1.1\r\nHost: [::1]:8\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET http://a.b/c HTTP/1.1\r\nHost: ignored\r\n\r\n",
		"CONNECT a.b:443 HTTP/1.1\r\nHost: a.b:443\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	} {
		req, err := readRequestString(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		wire, err := writeHead(WriteRequestHead, req.Headers)
		if err != nil {
			t.Fatalf("%q: write: %v", in, err)
		}
		again, err := readRequestString(wire)
		if err != nil {
			t.Fatalf("%q: re-read %q: %v", in, wire, err)
		}
		if !reflect.DeepEqual(pairsOf(again.Headers), pairsOf(req.Headers)) {
			t.Errorf("%q: round trip %q != %q", in, pairsOf(again.Headers), pairsOf(req.Headers))
		}
		if again.ContentLength != req.ContentLength || again.Chunked != req.Chunked {
			t.Errorf("%q: framing changed", in)
		}
	}
}

func TestResponseRoundTrip(t *testing.T) {
	for _, in := range []string{
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
		"HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nHost: x\r\n\r\n",
		"HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=b\r\nSet-Cookie: c=d\r\n\r\n",
	} {
		resp, err := readResponseString(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		wire, err := writeHead(WriteResponseHead, resp.Headers)
		if err != nil {
			t.Fatalf("%q: write: %v", in, err)
		}
		again, err := readResponseString(wire)
		if err != nil {
			t.Fatalf("%q: re-read %q: %v", in, wire, err)
		}
		if !reflect.DeepEqual(pairsOf(again.Headers), pairsOf(resp.Headers)) || again.Status != resp.Status {
			t.Errorf("%q: round trip %q != %q", in, pairsOf(again.Headers), pairsOf(resp.Headers))
		}
	}
}

func TestChunkedWriter(t *testing.T) {
	var out bytes.Buffer
	cw := NewChunkedWriter(&out)
	for _, p := range []string{"hello", "", strings.Repeat("x", 300)} {
		if n, err := cw.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
		}
	}
	if err := cw.Close(headers.New("x-sum", "abc", ":status", "200")); err != nil {
		t.Fatal(err)
	}
	want := "5\r\nhello\r\n12c\r\n" + strings.Repeat("x", 300) + "\r\n0\r\nx-sum: abc\r\n\r\n"
	if out.String() != want {
		t.Errorf("wrote %q, want %q", out.String(), want)
	}
	if _, err := cw.Write([]byte("late")); err == nil {
		t.Error("Write after Close succeeded")
	}

	// What the writer writes, the reader reads back.
	out.WriteString(afterBody)
	br := bufio.NewReader(&out)
	body := NewBodyReader(br, 0, true, false)
	got, err := io.ReadAll(body)
	if err != nil || string(got) != "hello"+strings.Repeat("x", 300) {
		t.Errorf("read back %q, %v", got, err)
	}
	if tr := pairsOf(body.Trailers()); !reflect.DeepEqual(tr, []string{"x-sum", "abc"}) {
		t.Errorf("trailers %q", tr)
	}
	if rest, _ := io.ReadAll(br); string(rest) != afterBody {
		t.Errorf("left %q", rest)
	}
}

func TestChunkedWriterRefusesBadTrailers(t *testing.T) {
	var out bytes.Buffer
	cw := NewChunkedWriter(&out)
	if err := cw.Close(headers.New("x", "a\r\nb")); !errors.Is(err, ErrInvalidHead) || out.Len() != 0 {
		t.Errorf("Close = %v, wrote %q", err, out.String())
	}
	if err := cw.Close(nil); err != nil || out.String() != "0\r\n\r\n" {
		t.Errorf("Close(nil) = %v, wrote %q", err, out.String())
	}
	if err := cw.Close(nil); err == nil {
		t.Error("second Close succeeded")
	}
}
