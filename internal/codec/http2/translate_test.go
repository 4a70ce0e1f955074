package http2

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard-proxy/switchyard/headers"
)

// wireMap builds a Map the way a decoder does, from fields in wire order.
func wireMap(pairs ...string) (*headers.Map, error) {
	h := headers.New()
	saw := false
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := AddWireField(h, pairs[i], pairs[i+1], &saw); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func TestCheckFields(t *testing.T) {
	cases := []struct {
		name    string
		fields  []string
		request bool
		ok      bool
	}{
		{"plain request", request("GET", "/", "accept", "*/*"), true, true},
		{"te trailers", request("GET", "/", "te", "trailers"), true, true},
		{"obs-text value", request("GET", "/", "x-a", "caf\xc3\xa9 \xc2\x85"), true, true},
		{"uppercase name", request("GET", "/", "X-A", "b"), true, false},
		{"pseudo after regular", []string{":method", "GET", "x-a", "b", ":path", "/"}, true, false},
		{"connection", request("GET", "/", "connection", "close"), true, false},
		{"keep-alive", request("GET", "/", "keep-alive", "1"), true, false},
		{"proxy-connection", request("GET", "/", "proxy-connection", "x"), true, false},
		{"transfer-encoding", request("GET", "/", "transfer-encoding", "chunked"), true, false},
		{"te gzip", request("GET", "/", "te", "trailers, gzip"), true, false},
		{"leading space", request("GET", "/", "x-a", " b"), true, false},
		{"trailing tab", request("GET", "/", "x-a", "b\t"), true, false},
		{"NUL", request("GET", "/", "x-a", "a\x00b"), true, false},
		{"LF", request("GET", "/", "x-a", "a\nb"), true, false},
		{"name with space", request("GET", "/", "x a", "b"), true, false},
		{"empty name", request("GET", "/", "", "b"), true, false},
		{"unknown pseudo", request("GET", "/", ":x", "b"), true, false},
		{"duplicate pseudo", []string{":method", "GET", ":method", "GET", ":path", "/"}, true, false},
		{"status in request", request("GET", "/", ":status", "200"), true, false},
		{"response", []string{":status", "200", "server", "x"}, false, true},
		{"path in response", []string{":status", "200", ":path", "/"}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := wireMap(tc.fields...)
			if err == nil {
				err = CheckFields(h, tc.request)
			}
			var me *MalformedError
			if (err == nil) != tc.ok || err != nil && !errors.As(err, &me) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestRequestFromH2(t *testing.T) {
	cases := []struct {
		name         string
		in           []string
		allowConnect bool
		want         []string // nil: malformed
		extended     bool
	}{
		{"extended CONNECT", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/chat", ":authority", "t", "sec-websocket-version", "13"}, true,
			[]string{":method", "GET", ":scheme", "https", ":path", "/chat", ":authority", "t", "sec-websocket-version", "13", "upgrade", "websocket", "connection", "upgrade"}, true},
		{"extended CONNECT not allowed", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/", ":authority", "t"}, false, nil, false},
		{":protocol on GET", []string{":method", "GET", ":protocol", "websocket", ":scheme", "https", ":path", "/", ":authority", "t"}, true, nil, false},
		{"extended CONNECT without :path", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":authority", "t"}, true, nil, false},
		{"empty :protocol", []string{":method", "CONNECT", ":protocol", "", ":scheme", "https", ":path", "/", ":authority", "t"}, true, nil, false},
		{"extended CONNECT drops content-length", []string{":method", "CONNECT", ":protocol", "foo", ":scheme", "http", ":path", "/", ":authority", "t", "content-length", "7"}, true,
			[]string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "t", "upgrade", "foo", "connection", "upgrade"}, true},
		{"plain CONNECT", []string{":method", "CONNECT", ":authority", "a.test:443"}, true, []string{":method", "CONNECT", ":authority", "a.test:443"}, false},
		{"plain CONNECT with :path", []string{":method", "CONNECT", ":authority", "a.test:443", ":path", "/"}, true, nil, false},
		{"host becomes :authority", []string{":method", "GET", ":scheme", "http", ":path", "/", "host", "h"}, false,
			[]string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "h"}, false},
		{":authority wins over host", request("GET", "/", "host", "other"), false, request("GET", "/"), false},
		{"cookies joined", request("GET", "/", "cookie", "a=1", "x-b", "2", "cookie", "c=3"), false,
			request("GET", "/", "cookie", "a=1; c=3", "x-b", "2"), false},
		{"OPTIONS *", request("OPTIONS", "*"), false, request("OPTIONS", "*"), false},
		{"GET *", request("GET", "*"), false, nil, false},
		{"method not a token", request("GET /admin", "/"), false, nil, false},
		{"space in :path", request("GET", "/a b"), false, nil, false},
		{"relative :path", request("GET", "a"), false, nil, false},
		{"bad :scheme", []string{":method", "GET", ":scheme", "ht tp", ":path", "/"}, false, nil, false},
		{"space in host", []string{":method", "GET", ":scheme", "http", ":path", "/", "host", "a b"}, false, nil, false},
		{"missing :scheme", []string{":method", "GET", ":path", "/"}, false, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := wireMap(tc.in...)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckFields(h, true); err != nil {
				t.Fatal(err)
			}
			extended, err := RequestFromH2(h, tc.allowConnect)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("accepted: %v", h.Fields())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, _ := wireMap(tc.want...)
			if extended != tc.extended || !slices.Equal(h.Fields(), want.Fields()) {
				t.Fatalf("extended=%v %v\nwant extended=%v %v", extended, h.Fields(), tc.extended, want.Fields())
			}
		})
	}
}

func TestResponseToH2(t *testing.T) {
	cases := []struct {
		name     string
		in       []string
		extended bool
		want     []string // nil: an error
	}{
		{"101 to 200", []string{":status", "101", "upgrade", "websocket", "connection", "upgrade", "sec-websocket-accept", "k", "content-length", "0", "x-a", "b"}, true,
			[]string{":status", "200", "sec-websocket-accept", "k", "x-a", "b"}},
		{"101 without an upgrade", []string{":status", "101", "upgrade", "websocket"}, false, nil},
		{"hop-by-hop removed", []string{":status", "200", "connection", "x-hop", "x-hop", "1", "keep-alive", "t", "transfer-encoding", "chunked", "x-a", "b"}, false,
			[]string{":status", "200", "x-a", "b"}},
		{"extended CONNECT refused", []string{":status", "403", "content-length", "0"}, true, []string{":status", "403", "content-length", "0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := headers.New(tc.in...)
			err := ResponseToH2(h, tc.extended)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("accepted: %v", h.Fields())
				}
				return
			}
			if err != nil || !slices.Equal(h.Fields(), headers.New(tc.want...).Fields()) {
				t.Fatalf("%v, %v; want %v", h.Fields(), err, tc.want)
			}
		})
	}
}

func TestRequestToH2AndBack(t *testing.T) {
	cases := []struct {
		name    string
		in      []string
		want    []string
		upgrade string
	}{
		{"websocket upgrade", []string{":method", "GET", ":path", "/ws", ":authority", "t", "upgrade", "websocket", "connection", "Upgrade", "sec-websocket-key", "k", "content-length", "0", "host", "t"},
			[]string{":method", "CONNECT", ":path", "/ws", ":authority", "t", ":protocol", "websocket", ":scheme", "http", "sec-websocket-key", "k"}, "websocket"},
		{"POST upgrade loses its method", []string{":method", "POST", ":path", "/x", ":scheme", "https", ":authority", "t", "upgrade", "foo", "connection", "upgrade"},
			[]string{":method", "CONNECT", ":path", "/x", ":scheme", "https", ":authority", "t", ":protocol", "foo"}, "foo"},
		{"plain request keeps te trailers", []string{":method", "GET", ":path", "/", ":scheme", "http", ":authority", "t", "te", "trailers", "connection", "keep-alive", "keep-alive", "5"},
			[]string{":method", "GET", ":path", "/", ":scheme", "http", ":authority", "t", "te", "trailers"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := headers.New(tc.in...)
			up := RequestToH2(h)
			if up != tc.upgrade || !slices.Equal(h.Fields(), headers.New(tc.want...).Fields()) {
				t.Fatalf("%q %v\nwant %q %v", up, h.Fields(), tc.upgrade, tc.want)
			}
			if err := CheckFields(h, true); err != nil {
				t.Fatalf("RequestToH2 produced a malformed request: %v", err)
			}
			// The response side: 200 → 101 only for an upgrade.
			resp := headers.New(":status", "200")
			ResponseFromH2(resp, up)
			if wantUp := up != ""; (resp.Get(":status") == "101") != wantUp || wantUp && (resp.Get("upgrade") != up || resp.Get("connection") != "upgrade") {
				t.Fatalf("response %v", resp.Fields())
			}
			resp = headers.New(":status", "403")
			if ResponseFromH2(resp, up); resp.Get(":status") != "403" || resp.Has("upgrade") {
				t.Fatalf("non-200 changed: %v", resp.Fields())
			}
		})
	}
}

// parseFuzzFields splits fuzz input into name/value pairs: fields end with 0xff, and a field's
// name ends at its first 0xfe.
func parseFuzzFields(data []byte) []string {
	var pairs []string
	for _, f := range bytes.Split(data, []byte{0xff}) {
		name, value, _ := bytes.Cut(f, []byte{0xfe})
		pairs = append(pairs, string(name), string(value))
	}
	return pairs
}

// FuzzRequestFromH2 checks what the server does with every decoded request block (AddWireField,
// CheckFields, RequestFromH2): an accepted request never carries CR, LF or NUL, and every regular
// field the client sent arrives exactly once, apart from the documented rewrites (cookie crumbs
// joined, host folded into :authority, content-length dropped from CONNECT).
func FuzzRequestFromH2(f *testing.F) {
	join := func(pairs ...string) []byte {
		var b []byte
		for i := 0; i+1 < len(pairs); i += 2 {
			if i > 0 {
				b = append(b, 0xff)
			}
			b = append(append(append(b, pairs[i]...), 0xfe), pairs[i+1]...)
		}
		return b
	}
	f.Add(join(request("GET", "/", "cookie", "a=1", "cookie", "b=2", "x-a", "1", "x-a", "1")...), false)
	f.Add(join(":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/c", ":authority", "x", "content-length", "0", "sec-websocket-version", "13"), true)
	f.Add(join(":method", "CONNECT", ":authority", "a:1", "content-length", "3"), true)
	f.Add(join(":method", "GET", ":scheme", "http", ":path", "/", "host", "h", "x-b", "a\r\nb"), false)
	f.Fuzz(func(t *testing.T, data []byte, allowConnect bool) {
		pairs := parseFuzzFields(data)
		h := headers.New()
		saw := false
		for i := 0; i+1 < len(pairs); i += 2 {
			if AddWireField(h, pairs[i], pairs[i+1], &saw) != nil {
				return
			}
		}
		if CheckFields(h, true) != nil {
			return
		}
		in := h.Clone()
		extended, err := RequestFromH2(h, allowConnect)
		if err != nil {
			return
		}
		for _, fl := range h.Fields() {
			if strings.ContainsAny(fl.Name+fl.Value, "\r\n\x00") {
				t.Fatalf("%q: %q survived", fl.Name, fl.Value)
			}
		}
		connect := in.Get(":method") == "CONNECT"
		skip := func(name string) bool {
			return strings.HasPrefix(name, ":") || name == "cookie" || name == "host" ||
				name == "content-length" && connect || extended && (name == "upgrade" || name == "connection")
		}
		var want, got []headers.Field
		for _, fl := range in.Fields() {
			if !skip(fl.Name) {
				want = append(want, fl)
			}
		}
		for _, fl := range h.Fields() {
			if !skip(fl.Name) {
				got = append(got, fl)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("regular fields changed:\n in  %q\n out %q", want, got)
		}
		if cs := in.Values("cookie"); len(cs) > 0 && !slices.Equal(h.Values("cookie"), []string{strings.Join(cs, "; ")}) {
			t.Fatalf("cookies %q became %q", cs, h.Values("cookie"))
		}
		if connect && h.Has("content-length") {
			t.Fatal("content-length kept on a CONNECT")
		}
		if extended && (h.Get(":method") != "GET" || h.Get("upgrade") != in.Get(":protocol") || h.Get("connection") != "upgrade" || h.Has(":protocol")) {
			t.Fatalf("extended CONNECT became %q", h.Fields())
		}
	})
}
