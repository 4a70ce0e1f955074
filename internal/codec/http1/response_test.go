package http1

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func readResponseString(s string) (*Response, error) {
	return ReadResponse(bufio.NewReader(strings.NewReader(s)), Limits{})
}

var responseValidTests = []struct {
	name      string
	in        string
	status    int
	reason    string
	want      []string
	minor     int
	cl        int64
	chunked   bool
	keepAlive bool
}{
	{
		name: "ok", in: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nHost: kept\r\n\r\n",
		status: 200, reason: "OK", want: []string{":status", "200", "content-length", "3", "host", "kept"},
		minor: 1, cl: 3, keepAlive: true,
	},
	{
		name: "no reason phrase, no second space", in: "HTTP/1.1 204\r\n\r\n",
		status: 204, want: []string{":status", "204"}, minor: 1, cl: -1, keepAlive: true,
	},
	{
		name: "empty reason phrase", in: "HTTP/1.1 404 \r\n\r\n",
		status: 404, want: []string{":status", "404"}, minor: 1, cl: -1, keepAlive: true,
	},
	{
		name: "reason with spaces and obs-text", in: "HTTP/1.1 599 Very  Bad\t\xe9\r\n\r\n",
		status: 599, reason: "Very  Bad\t\xe9", want: []string{":status", "599"}, minor: 1, cl: -1, keepAlive: true,
	},
	{
		name: "101", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		status: 101, reason: "Switching Protocols",
		want:  []string{":status", "101", "upgrade", "websocket", "connection", "Upgrade"},
		minor: 1, cl: -1, keepAlive: true,
	},
	{
		name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		status: 200, reason: "OK", want: []string{":status", "200", "transfer-encoding", "chunked"},
		minor: 1, cl: -1, chunked: true, keepAlive: true,
	},
	{
		name: "gzip then chunked is dechunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		status: 200, reason: "OK", want: []string{":status", "200", "transfer-encoding", "gzip, chunked"},
		minor: 1, cl: -1, chunked: true, keepAlive: true,
	},
	{
		name: "final coding not chunked reads until close", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		status: 200, reason: "OK", want: []string{":status", "200", "transfer-encoding", "gzip"},
		minor: 1, cl: -1,
	},
	{
		name: "HTTP/1.0 with chunked reads until close", in: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
		status: 200, reason: "OK", want: []string{":status", "200", "transfer-encoding", "chunked", "connection", "keep-alive"},
		cl: -1,
	},
	{
		name: "HTTP/1.0 keep-alive", in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
		status: 200, reason: "OK", want: []string{":status", "200", "connection", "keep-alive", "content-length", "0"},
		cl: 0, keepAlive: true,
	},
	{
		name: "HTTP/1.1 close", in: "HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n",
		status: 500, reason: "Oops", want: []string{":status", "500", "connection", "close"}, minor: 1, cl: -1,
	},
}

func TestReadResponseValid(t *testing.T) {
	for _, tt := range responseValidTests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := readResponseString(tt.in)
			if err != nil {
				t.Fatalf("ReadResponse: %v", err)
			}
			if resp.Status != tt.status || resp.Reason != tt.reason {
				t.Errorf("status %d %q, want %d %q", resp.Status, resp.Reason, tt.status, tt.reason)
			}
			if got := pairsOf(resp.Headers); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("headers = %q, want %q", got, tt.want)
			}
			if resp.Minor != tt.minor || resp.ContentLength != tt.cl || resp.Chunked != tt.chunked || resp.KeepAlive != tt.keepAlive {
				t.Errorf("minor=%d cl=%d chunked=%v keepAlive=%v, want %d %d %v %v",
					resp.Minor, resp.ContentLength, resp.Chunked, resp.KeepAlive, tt.minor, tt.cl, tt.chunked, tt.keepAlive)
			}
		})
	}
}

var responseErrorTests = []struct {
	name   string
	in     string
	status int
}{
	{"status 99", "HTTP/1.1 099 X\r\n\r\n", 400},
	{"status 600", "HTTP/1.1 600 X\r\n\r\n", 400},
	{"two-digit status", "HTTP/1.1 20 OK\r\n\r\n", 400},
	{"four-digit status", "HTTP/1.1 2000 OK\r\n\r\n", 400},
	{"non-digit status", "HTTP/1.1 2x0 OK\r\n\r\n", 400},
	{"two spaces", "HTTP/1.1  200 OK\r\n\r\n", 400},
	{"tab separator", "HTTP/1.1\t200 OK\r\n\r\n", 400},
	{"HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n", 505},
	{"no version", "200 OK\r\n\r\n", 400},
	{"lower-case version", "http/1.1 200 OK\r\n\r\n", 400},
	{"empty first line", "\r\nHTTP/1.1 200 OK\r\n\r\n", 400},
	{"control byte in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", 400},
	{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", 400},
	{"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", 400},
	{"NUL in value", "HTTP/1.1 200 OK\r\nX: a\x00\r\n\r\n", 400},
	{"space before colon", "HTTP/1.1 200 OK\r\nX : a\r\n\r\n", 400},
	{"different content-lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
	{"empty content-length", "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", 400},
	{"TE and CL", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n", 400},
	{"chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400},
	{"empty TE element", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n", 400},
	{"too many fields", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: y\r\n", 101) + "\r\n", 431},
	{"too large", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("y", DefaultMaxHeaderBytes) + "\r\n\r\n", 431},
}

func TestReadResponseErrors(t *testing.T) {
	for _, tt := range responseErrorTests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := readResponseString(tt.in)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("ReadResponse = %+v, %v; want a ParseError", resp, err)
			}
			if pe.Status != tt.status {
				t.Errorf("status %d (%s), want %d", pe.Status, pe.Details, tt.status)
			}
		})
	}
	if _, err := readResponseString(""); err != io.EOF {
		t.Errorf("empty input: %v, want io.EOF", err)
	}
	if _, err := readResponseString("HTTP/1.1 200 OK\r\n"); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated head: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestResponseBodyLength(t *testing.T) {
	tests := []struct {
		name       string
		head       string
		method     string
		length     int64
		chunked    bool
		untilClose bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", "GET", 7, false, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", -1, true, false},
		{"neither", "HTTP/1.1 200 OK\r\n\r\n", "GET", -1, false, true},
		{"TE not ending in chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET", -1, false, true},
		{"HTTP/1.0 chunked", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", -1, false, true},
		{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", "HEAD", 0, false, false},
		{"HEAD chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD", 0, false, false},
		{"100", "HTTP/1.1 100 Continue\r\n\r\n", "POST", 0, false, false},
		{"101 with framing fields", "HTTP/1.1 101 Switching Protocols\r\nContent-Length: 5\r\n\r\n", "GET", 0, false, false},
		{"103 chunked", "HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", 0, false, false},
		{"204 with content-length", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "GET", 0, false, false},
		{"204 chunked", "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", 0, false, false},
		{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "GET", 0, false, false},
		{"CONNECT 200", "HTTP/1.1 200 OK\r\n\r\n", "CONNECT", 0, false, false},
		{"CONNECT 2xx with a length", "HTTP/1.1 299 OK\r\nContent-Length: 5\r\n\r\n", "CONNECT", 0, false, false},
		{"CONNECT refused has a body", "HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\n", "CONNECT", 5, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := readResponseString(tt.head)
			if err != nil {
				t.Fatal(err)
			}
			length, chunked, untilClose := ResponseBodyLength(resp, tt.method)
			if length != tt.length || chunked != tt.chunked || untilClose != tt.untilClose {
				t.Errorf("got (%d, %v, %v), want (%d, %v, %v)", length, chunked, untilClose, tt.length, tt.chunked, tt.untilClose)
			}
		})
	}
}

// TestResponseEarlyData: bytes the upstream sends right after a 101 head belong to the new
// protocol and stay in the bufio.Reader.
func TestResponseEarlyData(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi"))
	resp, err := ReadResponse(br, Limits{})
	if err != nil || resp.Status != 101 {
		t.Fatalf("ReadResponse = %+v, %v", resp, err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "\x81\x02hi" {
		t.Errorf("left %q", rest)
	}
}
