package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"reflect"
	"strings"
	"testing"

	"github.com/switchyard-proxy/switchyard/headers"
)

// The fuzz targets use net/http as a differential oracle: whatever our parser accepts, net/http
// must accept too, and both must agree on what the message says. Our parser is stricter, so the
// opposite direction is not checked. Intentional differences, where we accept and net/http does
// not, are skipped and listed here:
//
//  1. Empty lines before a request line (RFC 9112 §2.2 says to ignore them; http.ReadRequest
//     does not): they are stripped before net/http sees the input.
//  2. A Content-Length that is a list of identical values ("5, 5"): RFC 9110 §8.6 lets a
//     recipient collapse it; net/http only collapses repeated fields.
//  3. A Trailer field naming Transfer-Encoding, Trailer or Content-Length on a chunked message:
//     net/http refuses the message ("bad trailer key"); we pass Trailer through untouched.
//  4. Responses only: a Transfer-Encoding other than one field of exactly "chunked". We follow
//     RFC 9112 §6.3 (final coding chunked: dechunk; otherwise read until close); net/http
//     refuses all other codings.
//
// Fields net/http rewrites are compared through its own fields instead: Host (req.Host),
// Content-Length and Transfer-Encoding (ContentLength, TransferEncoding); Trailer is removed by
// net/http on chunked messages, Cache-Control may be added for "Pragma: no-cache", and
// Connection is removed from responses that carry "close".

var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /chat?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
	"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
	"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n",
	"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n",
	"GET http://upstream.test:80/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
	"GET https://[::1]:443?q HTTP/1.1\r\nHost: other\r\n\r\n",
	"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n",
	"GET /%41?%zz HTTP/1.1\r\nHost: a.b\r\nX: \xe9 \t y\r\nX:\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\nHost: h\n\n",
	"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
	"HTTP/1.1 204\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
	"HTTP/1.1 500 \xe9\r\nContent-Length: 1, 1\r\nX: \tv\t\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
	"HTTP/2.0 200 OK\r\n\r\n",
}

func FuzzReadRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	for _, tt := range requestValidTests {
		f.Add([]byte(tt.in))
	}
	for _, tt := range requestErrorTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ours, err := ReadRequest(bufio.NewReader(bytes.NewReader(data)), Limits{})
		if err != nil {
			checkErrorContract(t, err)
			return
		}
		checkValues(t, ours.Headers)

		in := data
		for bytes.HasPrefix(in, []byte("\r\n")) { // difference 1
			in = in[2:]
		}
		theirs, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			if clList(in) || strings.Contains(err.Error(), "bad trailer key") { // differences 2, 3
				return
			}
			t.Fatalf("we accept %q (%q), net/http refuses it: %v", data, pairsOf(ours.Headers), err)
		}

		h := ours.Headers
		if got := h.Get(":method"); got != theirs.Method {
			t.Errorf("method %q, net/http %q", got, theirs.Method)
		}
		path, hasPath := h.Lookup(":path")
		switch {
		case !hasPath: // CONNECT authority-form
			if h.Get(":method") != "CONNECT" || theirs.RequestURI != h.Get(":authority") {
				t.Errorf("no :path for %q %q", h.Get(":method"), theirs.RequestURI)
			}
		case theirs.URL.IsAbs():
			want := theirs.RequestURI[len(theirs.URL.Scheme)+len("://")+len(theirs.URL.Host):]
			if want == "" || want[0] == '?' {
				want = "/" + want
			}
			if path != want {
				t.Errorf("path %q, want %q from %q", path, want, theirs.RequestURI)
			}
		default:
			if path != theirs.RequestURI {
				t.Errorf("path %q, net/http %q", path, theirs.RequestURI)
			}
		}
		if got := h.Get(":authority"); got != theirs.Host {
			t.Errorf("authority %q, net/http %q", got, theirs.Host)
		}
		if ours.Minor != theirs.ProtoMinor || ours.KeepAlive == theirs.Close {
			t.Errorf("minor %d keep-alive %v, net/http %d close %v", ours.Minor, ours.KeepAlive, theirs.ProtoMinor, theirs.Close)
		}
		if ours.Chunked != reflect.DeepEqual(theirs.TransferEncoding, []string{"chunked"}) {
			t.Errorf("chunked %v, net/http %q", ours.Chunked, theirs.TransferEncoding)
		}
		if ours.ContentLength >= 0 && ours.ContentLength != theirs.ContentLength {
			t.Errorf("content-length %d, net/http %d", ours.ContentLength, theirs.ContentLength)
		}
		compareFields(t, h, theirs.Header, ours.Chunked)

		// Round trip: what we parsed, we can write, and it reads back the same.
		var wire bytes.Buffer
		w := bufio.NewWriter(&wire)
		if err := WriteRequestHead(w, h); err != nil {
			t.Fatalf("cannot write what we parsed from %q: %v", data, err)
		}
		w.Flush()
		again, err := ReadRequest(bufio.NewReader(&wire), Limits{})
		if err != nil {
			t.Fatalf("cannot re-read %q: %v", wire.String(), err)
		}
		if !reflect.DeepEqual(pairsOf(again.Headers), pairsOf(h)) {
			t.Errorf("round trip %q != %q", pairsOf(again.Headers), pairsOf(h))
		}
	})
}

func FuzzReadResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s))
	}
	for _, tt := range responseValidTests {
		f.Add([]byte(tt.in))
	}
	for _, tt := range responseErrorTests {
		if len(tt.in) < 4096 { // the "too large" case would only slow the mutator down
			f.Add([]byte(tt.in))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ours, err := ReadResponse(bufio.NewReader(bytes.NewReader(data)), Limits{})
		if err != nil {
			checkErrorContract(t, err)
			return
		}
		checkValues(t, ours.Headers)
		te := ours.Headers.Values("transfer-encoding")
		plainChunked := len(te) == 1 && strings.EqualFold(te[0], "chunked")
		if len(te) > 0 && !plainChunked && ours.Minor == 1 { // difference 4
			return
		}

		theirs, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil)
		if err != nil {
			if clList(data) || strings.Contains(err.Error(), "bad trailer key") { // differences 2, 3
				return
			}
			t.Fatalf("we accept %q (%q), net/http refuses it: %v", data, pairsOf(ours.Headers), err)
		}
		if ours.Status != theirs.StatusCode || ours.Minor != theirs.ProtoMinor {
			t.Errorf("status %d minor %d, net/http %d %d", ours.Status, ours.Minor, theirs.StatusCode, theirs.ProtoMinor)
		}
		if _, reason, _ := strings.Cut(theirs.Status, " "); ours.Reason != reason {
			t.Errorf("reason %q, net/http %q", ours.Reason, reason)
		}
		if ours.Headers.Get(":status") != theirs.Status[:3] {
			t.Errorf(":status %q, net/http %q", ours.Headers.Get(":status"), theirs.Status)
		}
		if ours.Chunked != reflect.DeepEqual(theirs.TransferEncoding, []string{"chunked"}) {
			t.Errorf("chunked %v, net/http %q", ours.Chunked, theirs.TransferEncoding)
		}
		// net/http folds "the body runs until close" into Close; we leave that to
		// ResponseBodyLength, which alone knows the request method.
		length, _, untilClose := ResponseBodyLength(ours, "GET")
		if len(te) == 0 && !untilClose && ours.KeepAlive == theirs.Close {
			t.Errorf("keep-alive %v, net/http close %v", ours.KeepAlive, theirs.Close)
		}
		if ours.ContentLength >= 0 && length != theirs.ContentLength {
			t.Errorf("body length %d, net/http %d", length, theirs.ContentLength)
		}
		theirs.Body.Close()
		compareFields(t, ours.Headers, theirs.Header, ours.Chunked)
	})
}

// checkErrorContract: a refusal is a *ParseError or an EOF, never anything else from a reader
// that cannot fail.
func checkErrorContract(t *testing.T, err error) {
	var pe *ParseError
	if errors.As(err, &pe) {
		switch pe.Status {
		case 400, 431, 501, 505:
		default:
			t.Fatalf("ParseError status %d", pe.Status)
		}
		return
	}
	if err != io.EOF && err != io.ErrUnexpectedEOF {
		t.Fatalf("unexpected error %v", err)
	}
}

// checkValues: nothing we hand the proxy may split a header when written out again.
func checkValues(t *testing.T, h *headers.Map) {
	for _, f := range h.Fields() {
		if strings.ContainsAny(f.Value, "\r\n\x00") || strings.ContainsAny(f.Name, "\r\n\x00") {
			t.Fatalf("field %q: %q holds CR, LF or NUL", f.Name, f.Value)
		}
		if !strings.HasPrefix(f.Name, ":") && (!headers.ValidName(f.Name) || strings.ToLower(f.Name) != f.Name) {
			t.Fatalf("field name %q", f.Name)
		}
	}
}

// compareFields checks that our regular fields and net/http's agree, name by name.
func compareFields(t *testing.T, ours *headers.Map, theirs http.Header, chunked bool) {
	skip := func(canonical string) bool {
		switch canonical {
		case "Host", "Content-Length", "Transfer-Encoding":
			return true
		case "Trailer":
			return chunked
		}
		return false
	}
	for _, f := range ours.Fields() {
		if strings.HasPrefix(f.Name, ":") {
			continue
		}
		key := http.CanonicalHeaderKey(f.Name)
		if skip(key) || key == "Connection" && theirs[key] == nil {
			continue
		}
		if got := ours.Values(f.Name); !reflect.DeepEqual(got, theirs[key]) {
			t.Errorf("%s: %q, net/http %q", f.Name, got, theirs[key])
		}
	}
	for key := range theirs {
		if !skip(key) && key != "Cache-Control" && !ours.Has(key) {
			t.Errorf("net/http has %s, we do not", key)
		}
	}
}

// clList reports whether the head has a Content-Length field holding a comma (difference 2).
func clList(data []byte) bool {
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	for _, line := range bytes.Split(head, []byte("\r\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(name), "content-length") && bytes.Contains(value, []byte(",")) {
			return true
		}
	}
	return false
}

// FuzzChunkedBody: a chunked body we decode, net/http's chunked reader decodes to the same
// bytes, and our writer re-encodes to something we decode identically (trailers included).
func FuzzChunkedBody(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"5;a=b\r\nhello\r\n1;c\r\n!\r\n0\r\nX-Sum: 1\r\n\r\n",
		"A\r\n0123456789\r\n0\r\n\r\n",
		"0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		body := NewBodyReader(bufio.NewReader(bytes.NewReader(data)), 0, true, false)
		got, err := io.ReadAll(body)
		if err != nil {
			checkErrorContract(t, err)
			return
		}
		if body.Trailers() != nil {
			checkValues(t, body.Trailers())
		}
		theirs, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(data)))
		if err != nil || !bytes.Equal(got, theirs) {
			t.Fatalf("we decode %q to %q, net/http to %q, %v", data, got, theirs, err)
		}

		var wire bytes.Buffer
		cw := NewChunkedWriter(&wire)
		cw.Write(got)
		if err := cw.Close(body.Trailers()); err != nil {
			t.Fatalf("cannot re-encode: %v", err)
		}
		again := NewBodyReader(bufio.NewReader(&wire), 0, true, false)
		if back, err := io.ReadAll(again); err != nil || !bytes.Equal(back, got) {
			t.Fatalf("re-read %q, %v; want %q", back, err, got)
		}
		if !reflect.DeepEqual(pairsOf(again.Trailers()), pairsOf(body.Trailers())) {
			t.Fatalf("trailers %q, want %q", pairsOf(again.Trailers()), pairsOf(body.Trailers()))
		}
	})
}
