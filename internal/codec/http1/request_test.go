package http1

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/switchyard-proxy/switchyard/headers"
)

// pairsOf flattens a map into name, value, name, value... for comparisons.
func pairsOf(m *headers.Map) []string {
	if m == nil {
		return nil
	}
	var out []string
	for _, f := range m.Fields() {
		out = append(out, f.Name, f.Value)
	}
	return out
}

func readRequestString(s string) (*Request, error) {
	return ReadRequest(bufio.NewReader(strings.NewReader(s)), Limits{})
}

var requestValidTests = []struct {
	name      string
	in        string
	want      []string
	minor     int
	cl        int64
	chunked   bool
	keepAlive bool
}{
	{
		name:      "origin-form",
		in:        "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
		want:      []string{":method", "GET", ":path", "/a/b?c=d", ":authority", "example.com", "accept", "*/*"},
		minor:     1,
		cl:        -1,
		keepAlive: true,
	},
	{
		name:      "fields keep wire order and repeats, names lower-cased, OWS trimmed",
		in:        "GET / HTTP/1.1\r\nX-B:  2 \t\r\nHost: h\r\nx-a:1\r\nX-B: 3\r\nX-Empty:\r\n\r\n",
		want:      []string{":method", "GET", ":path", "/", ":authority", "h", "x-b", "2", "x-a", "1", "x-b", "3", "x-empty", ""},
		minor:     1,
		cl:        -1,
		keepAlive: true,
	},
	{
		name:      "obs-text and inner whitespace in a value are kept",
		in:        "GET / HTTP/1.1\r\nHost: h\r\nX-V: a \tb\xe9\xff\r\n\r\n",
		want:      []string{":method", "GET", ":path", "/", ":authority", "h", "x-v", "a \tb\xe9\xff"},
		minor:     1,
		cl:        -1,
		keepAlive: true,
	},
	{
		name:      "absolute-form takes the authority from the target and ignores Host",
		in:        "GET http://upstream.test:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
		want:      []string{":method", "GET", ":path", "/p?q", ":authority", "upstream.test:8080"},
		minor:     1,
		cl:        -1,
		keepAlive: true,
	},
	{
		name:      "absolute-form https with empty path",
		in:        "GET HTTPS://[::1]:443 HTTP/1.1\r\nHost: x\r\n\r\n",
		want:      []string{":method", "GET", ":path", "/", ":authority", "[::1]:443"},
		minor:     1,
		cl:        -1,
		keepAlive: true,
	},
	{
		name:      "absolute-form with query only",
		in:        "GET http://a?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
		want:      []string{":method", "GET", ":path", "/?x=1", ":authority", "a"},
		minor:     1,
		cl:        -1,
		keepAlive: true,
	},
	{
		name:      "asterisk-form for OPTIONS",
		in:        "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
		want:      []string{":method", "OPTIONS", ":path", "*", ":authority", "h"},
		minor:     1,
		cl:        -1,
		keepAlive: true,
	},
	{
		name:      "authority-form for CONNECT has no :path",
		in:        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		want:      []string{":method", "CONNECT", ":authority", "example.com:443"},
		minor:     1,
		cl:        -1,
		keepAlive: true,
	},
	{
		name:  "HTTP/1.0 without Host",
		in:    "GET / HTTP/1.0\r\n\r\n",
		want:  []string{":method", "GET", ":path", "/", ":authority", ""},
		minor: 0,
		cl:    -1,
	},
	{
		name:      "HTTP/1.0 keep-alive",
		in:        "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
		want:      []string{":method", "GET", ":path", "/", ":authority", "", "connection", "Keep-Alive"},
		cl:        -1,
		keepAlive: true,
	},
	{
		name:  "HTTP/1.1 close",
		in:    "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, CLOSE\r\n\r\n",
		want:  []string{":method", "GET", ":path", "/", ":authority", "h", "connection", "upgrade, CLOSE"},
		minor: 1,
		cl:    -1,
	},
	{
		name:      "empty Host is allowed",
		in:        "GET / HTTP/1.1\r\nHost:\r\n\r\n",
		want:      []string{":method", "GET", ":path", "/", ":authority", ""},
		minor:     1,
		cl:        -1,
		keepAlive: true,
	},
	{
		name:      "content-length",
		in:        "POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 0042\r\n\r\n",
		want:      []string{":method", "POST", ":path", "/u", ":authority", "h", "content-length", "0042"},
		minor:     1,
		cl:        42,
		keepAlive: true,
	},
	{
		name:      "identical content-lengths collapse into the first field",
		in:        "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nHost: h\r\nX: y\r\ncontent-length: 5\r\n\r\n",
		want:      []string{":method", "POST", ":path", "/", ":authority", "h", "content-length", "5", "x", "y"},
		minor:     1,
		cl:        5,
		keepAlive: true,
	},
	{
		name:      "content-length at the int64 limit",
		in:        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n",
		want:      []string{":method", "POST", ":path", "/", ":authority", "h", "content-length", "9223372036854775807"},
		minor:     1,
		cl:        1<<63 - 1,
		keepAlive: true,
	},
	{
		name:      "chunked",
		in:        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ChUnKeD\r\n\r\n",
		want:      []string{":method", "POST", ":path", "/", ":authority", "h", "transfer-encoding", "ChUnKeD"},
		minor:     1,
		cl:        -1,
		chunked:   true,
		keepAlive: true,
	},
	{
		name:      "up to four leading empty lines are skipped",
		in:        "\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
		want:      []string{":method", "GET", ":path", "/", ":authority", "h"},
		minor:     1,
		cl:        -1,
		keepAlive: true,
	},
	{
		name:      "unusual but valid method and host characters",
		in:        "M-SEARCH /%41%2f HTTP/1.1\r\nHost: a-b_c~d.e!$&'()*+,;=:\r\n\r\n",
		want:      []string{":method", "M-SEARCH", ":path", "/%41%2f", ":authority", "a-b_c~d.e!$&'()*+,;=:"},
		minor:     1,
		cl:        -1,
		keepAlive: true,
	},
	{
		name:      "a bad percent-encoding in the query is passed through",
		in:        "GET /?q=100% HTTP/1.1\r\nHost: h\r\n\r\n",
		want:      []string{":method", "GET", ":path", "/?q=100%", ":authority", "h"},
		minor:     1,
		cl:        -1,
		keepAlive: true,
	},
}

func TestReadRequestValid(t *testing.T) {
	for _, tt := range requestValidTests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := readRequestString(tt.in)
			if err != nil {
				t.Fatalf("ReadRequest: %v", err)
			}
			if got := pairsOf(req.Headers); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("headers = %q, want %q", got, tt.want)
			}
			if req.Minor != tt.minor || req.ContentLength != tt.cl || req.Chunked != tt.chunked || req.KeepAlive != tt.keepAlive {
				t.Errorf("minor=%d cl=%d chunked=%v keepAlive=%v, want %d %d %v %v",
					req.Minor, req.ContentLength, req.Chunked, req.KeepAlive, tt.minor, tt.cl, tt.chunked, tt.keepAlive)
			}
		})
	}
}

// ok starts a valid request head; the error cases append a field and the blank line.
const ok = "GET / HTTP/1.1\r\nHost: h\r\n"

var requestErrorTests = []struct {
	name    string
	in      string
	status  int
	details string
}{
	// request line
	{"lower-case version", "GET / http/1.1\r\nHost: h\r\n\r\n", 400, "http1.codec_error"},
	{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, "http1.codec_error"},
	{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505, "http1.codec_error"},
	{"HTTP/0.9 style", "GET /\r\n\r\n", 400, "http1.codec_error"},
	{"garbage version", "GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400, "http1.codec_error"},
	{"two spaces after method", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.codec_error"},
	{"trailing space", "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400, "http1.codec_error"},
	{"tab separator", "GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.codec_error"},
	{"method not a token", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.codec_error"},
	{"leading space", " GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.codec_error"},
	{"bare LF ends the request line", "GET / HTTP/1.1\nHost: h\r\n\r\n", 400, "http1.codec_error"},
	{"bare LF ends a field line", "GET / HTTP/1.1\r\nHost: h\n\r\n", 400, "http1.codec_error"},
	{"bare LF ends the head", ok + "\n", 400, "http1.codec_error"},
	{"bare LF before the request", "\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.codec_error"},
	{"five leading empty lines", "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.codec_error"},
	// target
	{"empty target", "GET  HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.codec_error"},
	{"relative target", "GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"control byte in target", "GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"non-ASCII in target", "GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"fragment in target", "GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"bad percent-encoding in path", "GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"truncated percent-encoding", "GET /a% HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"asterisk for GET", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"authority-form for GET", "GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"origin-form for CONNECT", "CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"CONNECT without port", "CONNECT example.com HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"CONNECT with absolute-form", "CONNECT http://a:1/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"CONNECT with non-numeric port", "CONNECT a:b HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"absolute-form other scheme", "GET ws://a/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"absolute-form empty authority", "GET http:///a HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"absolute-form userinfo", "GET http://u@a/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"absolute-form bad IPv6", "GET http://[zz]/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	{"absolute-form IPv4 in brackets", "GET http://[1.2.3.4]/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, "http1.invalid_url"},
	// field lines
	{"space before colon", ok + "X-A : 1\r\n\r\n", 400, "http1.invalid_characters"},
	{"no colon", ok + "X-A 1\r\n\r\n", 400, "http1.invalid_characters"},
	{"empty name", ok + ": x\r\n\r\n", 400, "http1.invalid_characters"},
	{"name not a token", ok + "X@A: 1\r\n\r\n", 400, "http1.invalid_characters"},
	{"non-ASCII name", ok + "X\xe9: 1\r\n\r\n", 400, "http1.invalid_characters"},
	{"obs-fold", ok + "X-A: 1\r\n 2\r\n\r\n", 400, "http1.codec_error"},
	{"obs-fold with tab", ok + "X-A: 1\r\n\t2\r\n\r\n", 400, "http1.codec_error"},
	{"NUL in value", ok + "X-A: a\x00b\r\n\r\n", 400, "http1.invalid_characters"},
	{"bare CR in value", ok + "X-A: a\rb\r\n\r\n", 400, "http1.invalid_characters"},
	{"CR before CRLF", ok + "X-A: a\r\r\n\r\n", 400, "http1.invalid_characters"},
	{"other CTL in value", ok + "X-A: a\x1bb\r\n\r\n", 400, "http1.invalid_characters"},
	{"DEL in value", ok + "X-A: a\x7f\r\n\r\n", 400, "http1.invalid_characters"},
	// Host
	{"HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400, "missing_host_header"},
	{"absolute-form still needs Host", "GET http://a/ HTTP/1.1\r\n\r\n", 400, "missing_host_header"},
	{"two Hosts", ok + "Host: h\r\n\r\n", 400, "http1.codec_error"},
	{"two Hosts in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400, "http1.codec_error"},
	{"space in Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "http1.invalid_characters"},
	{"slash in Host", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "http1.invalid_characters"},
	{"userinfo in Host", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, "http1.invalid_characters"},
	{"non-numeric port in Host", "GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", 400, "http1.invalid_characters"},
	{"port without host", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400, "http1.invalid_characters"},
	// Content-Length
	{"empty content-length", ok + "Content-Length:\r\n\r\n", 400, "http1.codec_error"},
	{"signed content-length", ok + "Content-Length: +5\r\n\r\n", 400, "http1.codec_error"},
	{"negative content-length", ok + "Content-Length: -1\r\n\r\n", 400, "http1.codec_error"},
	{"hex content-length", ok + "Content-Length: 0x5\r\n\r\n", 400, "http1.codec_error"},
	{"content-length with inner space", ok + "Content-Length: 1 2\r\n\r\n", 400, "http1.codec_error"},
	{"content-length overflow", ok + "Content-Length: 9223372036854775808\r\n\r\n", 400, "http1.codec_error"},
	{"different content-lengths", ok + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400, "http1.codec_error"},
	{"different values in a list", ok + "Content-Length: 5, 6\r\n\r\n", 400, "http1.codec_error"},
	{"same number spelt differently", ok + "Content-Length: 5, 05\r\n\r\n", 400, "http1.codec_error"},
	{"empty list element", ok + "Content-Length: 5,\r\n\r\n", 400, "http1.codec_error"},
	// Transfer-Encoding
	{"TE and CL", ok + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400, "http1.content_length_and_chunked_not_allowed"},
	{"CL and TE", ok + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "http1.content_length_and_chunked_not_allowed"},
	{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "http1.invalid_transfer_encoding"},
	{"final coding not chunked", ok + "Transfer-Encoding: chunked, gzip\r\n\r\n", 400, "http1.invalid_transfer_encoding"},
	{"only gzip", ok + "Transfer-Encoding: gzip\r\n\r\n", 400, "http1.invalid_transfer_encoding"},
	{"identity", ok + "Transfer-Encoding: identity\r\n\r\n", 400, "http1.invalid_transfer_encoding"},
	{"unimplemented coding before chunked", ok + "Transfer-Encoding: gzip, chunked\r\n\r\n", 501, "http1.invalid_transfer_encoding"},
	{"unimplemented coding in its own field", ok + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "http1.invalid_transfer_encoding"},
	{"chunked twice", ok + "Transfer-Encoding: chunked, chunked\r\n\r\n", 400, "http1.invalid_transfer_encoding"},
	{"chunked in two fields", ok + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "http1.invalid_transfer_encoding"},
	{"empty TE", ok + "Transfer-Encoding:\r\n\r\n", 400, "http1.invalid_transfer_encoding"},
	{"empty TE element", ok + "Transfer-Encoding: , chunked\r\n\r\n", 400, "http1.invalid_transfer_encoding"},
	{"chunked with a parameter", ok + "Transfer-Encoding: chunked;q=1\r\n\r\n", 400, "http1.invalid_transfer_encoding"},
}

func TestReadRequestErrors(t *testing.T) {
	for _, tt := range requestErrorTests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := readRequestString(tt.in)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("ReadRequest = %+v, %v; want a ParseError", req, err)
			}
			if pe.Status != tt.status || pe.Details != tt.details {
				t.Errorf("ParseError = %d %q, want %d %q", pe.Status, pe.Details, tt.status, tt.details)
			}
		})
	}
}

func TestReadRequestEOF(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"nothing", "", io.EOF},
		{"only empty lines", "\r\n\r\n", io.EOF},
		{"a lone CR", "\r", io.ErrUnexpectedEOF},
		{"inside the request line", "GET / HT", io.ErrUnexpectedEOF},
		{"after the request line", "GET / HTTP/1.1\r\n", io.ErrUnexpectedEOF},
		{"inside the head", "GET / HTTP/1.1\r\nHost: h\r\n", io.ErrUnexpectedEOF},
		{"before the final LF", "GET / HTTP/1.1\r\nHost: h\r\n\r", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// OneByteReader makes readHead go round its fill loop for every byte.
			br := bufio.NewReader(iotest.OneByteReader(strings.NewReader(tt.in)))
			if _, err := ReadRequest(br, Limits{}); err != tt.want {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReadRequestPassesOtherErrors(t *testing.T) {
	boom := errors.New("boom")
	br := bufio.NewReader(io.MultiReader(strings.NewReader("GET / HTTP/1.1\r\n"), iotest.ErrReader(boom)))
	if _, err := ReadRequest(br, Limits{}); err != boom {
		t.Errorf("err = %v, want %v", err, boom)
	}
}

func TestReadRequestLimits(t *testing.T) {
	head := "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: " + strings.Repeat("a", 100) + "\r\n\r\n" // 134 bytes
	manyFields := "GET / HTTP/1.1\r\nHost: h\r\n" + strings.Repeat("X: y\r\n", 99) + "\r\n"
	tests := []struct {
		name    string
		in      string
		limit   int
		bufSize int
		status  int // 0: accepted
	}{
		{"exactly at the limit", head, len(head), 4096, 0},
		{"one byte over", head, len(head) - 1, 4096, 431},
		{"over while the line is incomplete", head[:60], 50, 4096, 431},
		{"head larger than the buffer, under the limit", head, len(head), 16, 0},
		{"head larger than the buffer, over the limit", head, len(head) - 1, 16, 431},
		{"default limit", "GET / HTTP/1.1\r\nHost: h\r\nX: " + strings.Repeat("a", DefaultMaxHeaderBytes) + "\r\n\r\n", 0, 4096, 431},
		{"100 fields", manyFields, 0, 4096, 0},
		{"101 fields", strings.Replace(manyFields, "\r\n\r\n", "\r\nX: z\r\n\r\n", 1), 0, 4096, 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), tt.bufSize)
			_, err := ReadRequest(br, Limits{MaxHeaderBytes: tt.limit})
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Status != tt.status {
				t.Fatalf("err = %v, want status %d", err, tt.status)
			}
		})
	}
}

// TestReadRequestSmallBuffer checks that a head longer than the bufio buffer (the slow path)
// parses exactly as it does from a large buffer, and leaves the same bytes behind.
func TestReadRequestSmallBuffer(t *testing.T) {
	in := "GET /" + strings.Repeat("p", 40) + " HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n" +
		"Connection: Upgrade\r\nX-Long: " + strings.Repeat("v", 50) + "\r\n\r\nEARLY"
	want, err := ReadRequest(bufio.NewReader(strings.NewReader(in)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{16, 17, 31, 64} {
		br := bufio.NewReaderSize(iotest.HalfReader(strings.NewReader(in)), size)
		got, err := ReadRequest(br, Limits{})
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !reflect.DeepEqual(pairsOf(got.Headers), pairsOf(want.Headers)) {
			t.Errorf("size %d: headers %q, want %q", size, pairsOf(got.Headers), pairsOf(want.Headers))
		}
		if rest, _ := io.ReadAll(br); string(rest) != "EARLY" {
			t.Errorf("size %d: left %q", size, rest)
		}
	}
	// A bare LF split across buffer refills is still caught.
	bad := "GET / HTTP/1.1\r\nX-Long: " + strings.Repeat("v", 40) + "\nHost: h\r\n\r\n"
	var pe *ParseError
	if _, err := ReadRequest(bufio.NewReaderSize(strings.NewReader(bad), 16), Limits{}); !errors.As(err, &pe) {
		t.Errorf("bare LF in slow path: err = %v", err)
	}
}

func TestPipelinedRequests(t *testing.T) {
	in := "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nREST"
	br := bufio.NewReader(strings.NewReader(in))
	for i, path := range []string{"/1", "/2", "/3"} {
		req, err := ReadRequest(br, Limits{})
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := req.Headers.Get(":path"); got != path {
			t.Fatalf("request %d: path %q, want %q", i, got, path)
		}
		body, err := io.ReadAll(NewBodyReader(br, req.ContentLength, req.Chunked, false))
		if err != nil {
			t.Fatalf("request %d body: %v", i, err)
		}
		if path == "/2" && string(body) != "hello" {
			t.Fatalf("body %q", body)
		}
		if path == "/3" && req.KeepAlive {
			t.Fatal("Connection: close request reported keep-alive")
		}
	}
	if rest, _ := io.ReadAll(br); string(rest) != "REST" {
		t.Errorf("left %q, want REST", rest)
	}
}

// TestUpgradeEarlyDataStaysInReader: the bytes after an upgrade request's head are the new
// protocol's, and must be found, untouched, in the bufio.Reader.
func TestUpgradeEarlyDataStaysInReader(t *testing.T) {
	early := "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58\r\n\r\nGET / HTTP/1.1\r\n"
	in := "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + early
	br := bufio.NewReader(strings.NewReader(in))
	req, err := ReadRequest(br, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !headers.IsUpgrade(req.Headers) {
		t.Error("not seen as an upgrade")
	}
	if br.Buffered() != len(early) {
		t.Errorf("buffered %d, want %d", br.Buffered(), len(early))
	}
	if rest, _ := io.ReadAll(br); string(rest) != early {
		t.Errorf("left %q, want %q", rest, early)
	}
}
