package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// HTTP/1.1 end-to-end tests: a raw client and a raw or net/http upstream around the built binary.
// Helpers shared by the http_*_test.go files live here.

const ioWait = 5 * time.Second // upper bound for anything that should happen at once

// clientResp is one HTTP response as the client received it.
type clientResp struct {
	status  int
	header  http.Header
	body    string
	chunked bool
}

// upstreamReq is one HTTP request as an upstream received it.
type upstreamReq struct {
	method, target, host string
	header               http.Header
	body                 string
	chunked              bool
	head                 string // the raw head, request line to blank line
	rawBody              string // the body bytes as framed on the wire
}

// parseResponses parses the first n complete responses in s.
func parseResponses(s string, n int) ([]clientResp, bool) {
	br := bufio.NewReader(strings.NewReader(s))
	var out []clientResp
	for len(out) < n {
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			return out, false
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return out, false
		}
		out = append(out, clientResp{status: r.StatusCode, header: r.Header, body: string(b),
			chunked: len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked"})
	}
	return out, true
}

// parseRequests parses every complete request in s.
func parseRequests(s string) []upstreamReq {
	sr := strings.NewReader(s)
	br := bufio.NewReader(sr)
	pos := func() int { return len(s) - sr.Len() - br.Buffered() }
	var out []upstreamReq
	for {
		start := pos()
		r, err := http.ReadRequest(br)
		if err != nil {
			return out
		}
		headEnd := pos()
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return out
		}
		out = append(out, upstreamReq{method: r.Method, target: r.RequestURI, host: r.Host, header: r.Header,
			body: string(b), chunked: len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked",
			head: s[start:headEnd], rawBody: s[headEnd:pos()]})
	}
}

// pollUntil calls f until it reports true or ioWait passes.
func pollUntil(f func() bool) bool {
	deadline := time.Now().Add(ioWait)
	for !f() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// readResponses waits for n complete responses on a client connection.
func readResponses(t *testing.T, c *harness.RawConn, n int) []clientResp {
	t.Helper()
	var rs []clientResp
	ok := false
	pollUntil(func() bool {
		closed := c.Closed() // read first: once closed, Received is final
		rs, ok = parseResponses(c.Received(), n)
		return ok || closed
	})
	if !ok {
		t.Fatalf("wanted %d complete responses, got %q", n, c.Received())
	}
	return rs
}

// readRequests waits until an upstream connection has received n complete requests.
func readRequests(t *testing.T, c *harness.RawConn, n int) []upstreamReq {
	t.Helper()
	var rs []upstreamReq
	if !pollUntil(func() bool { rs = parseRequests(c.Received()); return len(rs) >= n }) {
		t.Fatalf("upstream: wanted %d complete requests, got %q", n, c.Received())
	}
	return rs
}

// roundTrip sends raw on a new client connection and returns the one response.
func roundTrip(t *testing.T, addr, raw string) clientResp {
	t.Helper()
	c := harness.Dial(t, addr)
	defer c.Close()
	c.Write(raw)
	return readResponses(t, c, 1)[0]
}

// getVia is roundTrip for a GET with the given Host and extra header lines ("Name: value").
func getVia(t *testing.T, addr, host, path string, hdrs ...string) clientResp {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", path, host)
	for _, h := range hdrs {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return roundTrip(t, addr, b.String())
}

// echoApp is a net/http upstream that answers every request with a JSON echo of what it received,
// and an x-app header naming it.
type echoApp struct {
	name   string
	srv    *httptest.Server
	reqs   atomic.Int64 // requests served
	status func(n int64) int
}

// echoBody is the body of an app's response.
type echoBody struct {
	App, Method, URI, Host, Proto, Body string
	Header                              http.Header
}

// newEchoApp starts an echoApp; status, when not nil, picks the status of the n-th request
// (1-based), 200 otherwise.
func newEchoApp(t *testing.T, name string, status func(n int64) int) *echoApp {
	t.Helper()
	a := &echoApp{name: name, status: status}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := a.reqs.Add(1)
		body, _ := io.ReadAll(r.Body)
		out, _ := json.Marshal(echoBody{App: a.name, Method: r.Method, URI: r.RequestURI, Host: r.Host,
			Proto: r.Proto, Body: string(body), Header: r.Header})
		w.Header().Set("x-app", a.name)
		w.Header().Set("x-app-secret", "s3cret")
		w.Header().Set("content-type", "application/json")
		status := 200
		if a.status != nil {
			status = a.status(n)
		}
		w.WriteHeader(status)
		w.Write(out)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *echoApp) port() int { return a.srv.Listener.Addr().(*net.TCPAddr).Port }

// echoOf decodes an app's answer, failing if the response is not one.
func echoOf(t *testing.T, r clientResp) echoBody {
	t.Helper()
	var e echoBody
	if r.status != 200 || json.Unmarshal([]byte(r.body), &e) != nil {
		t.Fatalf("not an app answer: %d %v %q", r.status, r.header, r.body)
	}
	return e
}

// withCluster appends a STATIC cluster to a harness.Config bootstrap (clusters come last).
func withCluster(yaml, name string, port int) string {
	return yaml + fmt.Sprintf(`  - name: %s
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: %s
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
`, name, name, port)
}

// closedPort returns a local port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// headerLine reports whether a raw head has a field called name (case-insensitive).
func headerLine(head, name string) (string, bool) {
	for _, l := range strings.Split(head, "\r\n")[1:] {
		if n, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(n), name) {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

const okResponse = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

// closeResponse is okResponse from an upstream that will not take another request, so a test can
// send its cases one after the other to one proxy and expect each on a new upstream connection.
const closeResponse = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"

func TestKeepAliveReusesUpstreamConnection(t *testing.T) {
	t.Parallel()
	u := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: u.Port()}.YAML())
	c := harness.Dial(t, p.Addr(""))

	c.Write("GET /one HTTP/1.1\r\nHost: app\r\n\r\n")
	uc := u.Accept(ioWait)
	if r := readRequests(t, uc, 1); r[0].target != "/one" {
		t.Fatalf("upstream got %q", r[0].target)
	}
	uc.Write("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none")
	if r := readResponses(t, c, 1); r[0].status != 200 || r[0].body != "one" {
		t.Fatalf("first response %+v", r[0])
	}

	c.Write("GET /two HTTP/1.1\r\nHost: app\r\n\r\n")
	pollUntil(func() bool { return uc.Closed() || len(parseRequests(uc.Received())) == 2 })
	if len(parseRequests(uc.Received())) != 2 {
		closed := uc.Closed()
		other := u.Accept(ioWait)
		t.Fatalf("the second request came on a new upstream connection (%q), not on the first (closed by the proxy: %v)",
			readRequests(t, other, 1)[0].target, closed)
	}
	uc.Write("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo")
	rs := readResponses(t, c, 2)
	if rs[1].status != 200 || rs[1].body != "two" {
		t.Fatalf("second response %+v", rs[1])
	}
	u.NoConnection(100 * time.Millisecond)
	if c.Closed() {
		t.Error("client connection closed after a keep-alive exchange")
	}
	if v := p.Stat("cluster.app.upstream_cx_total"); v != 1 {
		t.Errorf("upstream_cx_total = %d, want 1", v)
	}
}

func TestUpgradeConnectionIsNeverReused(t *testing.T) {
	t.Parallel()
	u := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: u.Port(), HCM: "upgrade_configs:\n- upgrade_type: websocket"}.YAML())

	// The upstream refuses the upgrade with an ordinary keep-alive response.
	c1 := harness.Dial(t, p.Addr(""))
	c1.Write("GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	uc1 := u.Accept(ioWait)
	head := uc1.WaitForHead(ioWait)
	if v, _ := headerLine(head, "upgrade"); v != "websocket" {
		t.Fatalf("upgrade not forwarded: %q", head)
	}
	uc1.Write("HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope")
	if r := readResponses(t, c1, 1); r[0].status != 404 || r[0].body != "nope" {
		t.Fatalf("refused upgrade: %+v", r[0])
	}
	uc1.WaitForEOF(ioWait) // the proxy closes the connection that carried the upgrade

	c2 := harness.Dial(t, p.Addr(""))
	c2.Write("GET /plain HTTP/1.1\r\nHost: app\r\n\r\n")
	uc2 := u.Accept(ioWait)
	readRequests(t, uc2, 1)
	uc2.Write(okResponse)
	if r := readResponses(t, c2, 1); r[0].status != 200 {
		t.Fatalf("plain request after upgrade: %+v", r[0])
	}
	if len(parseRequests(uc1.Received())) != 1 || strings.Contains(uc1.Received(), "/plain") {
		t.Errorf("the upgrade's connection carried another request: %q", uc1.Received())
	}
	if v := p.Stat("cluster.app.upstream_cx_total"); v != 2 {
		t.Errorf("upstream_cx_total = %d, want 2", v)
	}
}

func TestPipelinedRequestsAnsweredInOrder(t *testing.T) {
	t.Parallel()
	a := newEchoApp(t, "app", nil)
	p := harness.Start(t, harness.Config{UpstreamPort: a.port()}.YAML())
	c := harness.Dial(t, p.Addr(""))
	c.Write("GET /1 HTTP/1.1\r\nHost: app\r\n\r\nGET /2 HTTP/1.1\r\nHost: app\r\n\r\nGET /3 HTTP/1.1\r\nHost: app\r\n\r\n")
	rs := readResponses(t, c, 3)
	for i, r := range rs {
		if e := echoOf(t, r); e.URI != fmt.Sprintf("/%d", i+1) {
			t.Errorf("response %d answers %s", i+1, e.URI)
		}
	}
}

func TestRequestBodies(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("0123456789abcdef", 16<<10) // 256 KiB
	tests := []struct {
		name, head, body string
		want             string // body the upstream must decode
		chunked          bool   // the upstream must receive it chunked
	}{
		{"content-length", "Content-Length: 11\r\n", "hello world", "hello world", false},
		{"content-length 256KiB", fmt.Sprintf("Content-Length: %d\r\n", len(big)), big, big, false},
		{"chunked", "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", true},
	}
	u := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: u.Port()}.YAML())
	for _, tt := range tests {
		c := harness.Dial(t, p.Addr(""))
		c.Write("POST /upload HTTP/1.1\r\nHost: app\r\n" + tt.head + "\r\n" + tt.body)
		uc := u.Accept(ioWait)
		r := readRequests(t, uc, 1)[0]
		if r.body != tt.want {
			t.Errorf("%s: upstream body: %d bytes, want %d", tt.name, len(r.body), len(tt.want))
		}
		if r.chunked != tt.chunked {
			t.Errorf("%s: upstream chunked = %v, want %v; head %q", tt.name, r.chunked, tt.chunked, r.head)
		}
		if cl, ok := headerLine(r.head, "content-length"); tt.chunked && ok || !tt.chunked && cl != fmt.Sprint(len(tt.want)) {
			t.Errorf("%s: upstream content-length %q in %q", tt.name, cl, r.head)
		}
		if tt.chunked && !strings.HasSuffix(r.rawBody, "0\r\n\r\n") {
			t.Errorf("%s: chunked body not terminated: %q", tt.name, r.rawBody)
		}
		uc.Write(closeResponse)
		if resp := readResponses(t, c, 1)[0]; resp.status != 200 || resp.body != "ok" {
			t.Errorf("%s: response %+v", tt.name, resp)
		}
		c.Close()
	}
}

func TestResponseBodies(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("response-bytes-", 20000) // 300 KB
	tests := []struct {
		name, raw, want string
		chunked         bool
	}{
		// Connection: close is the upstream's business: the client's connection stays open.
		{"content-length", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(big), big), big, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", "abcdefg", true},
		{"empty", "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", "", false},
	}
	u := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: u.Port()}.YAML())
	for _, tt := range tests {
		c := harness.Dial(t, p.Addr(""))
		c.Write("GET / HTTP/1.1\r\nHost: app\r\n\r\n")
		uc := u.Accept(ioWait)
		readRequests(t, uc, 1)
		uc.Write(tt.raw)
		r := readResponses(t, c, 1)[0]
		if r.body != tt.want {
			t.Errorf("%s: body: %d bytes, want %d (%.40q)", tt.name, len(r.body), len(tt.want), r.body)
		}
		if r.chunked != tt.chunked {
			t.Errorf("%s: chunked = %v, want %v", tt.name, r.chunked, tt.chunked)
		}
		// A complete response leaves the client connection open for the next request.
		if v := r.header.Get("connection"); v != "" {
			t.Errorf("%s: connection: %q", tt.name, v)
		}
		time.Sleep(50 * time.Millisecond)
		if c.Closed() {
			t.Errorf("%s: client connection closed after a complete response", tt.name)
		}
		c.Close()
	}
}

func TestExpect100Continue(t *testing.T) {
	t.Parallel()
	u := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: u.Port()}.YAML())
	c := harness.Dial(t, p.Addr(""))
	c.Write("POST /up HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	got := c.WaitForData("\r\n\r\n", ioWait)
	if !strings.HasPrefix(got, "HTTP/1.1 100 Continue\r\n") {
		t.Fatalf("client got %q before sending its body, want 100 Continue", got)
	}
	c.Write("hello")
	uc := u.Accept(ioWait)
	r := readRequests(t, uc, 1)[0]
	if r.body != "hello" {
		t.Errorf("upstream body %q", r.body)
	}
	if _, ok := headerLine(r.head, "expect"); ok {
		t.Errorf("Expect forwarded upstream: %q", r.head)
	}
	if strings.Contains(uc.Received(), "100 Continue") {
		t.Errorf("100 Continue sent upstream")
	}
	uc.Write(okResponse)
	rs := readResponses(t, c, 2)
	if rs[0].status != 100 || rs[1].status != 200 || rs[1].body != "ok" {
		t.Errorf("client saw %d then %d %q", rs[0].status, rs[1].status, rs[1].body)
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestHopByHopHeadersRemoved(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		connection string
		extra      string
		removed    []string
	}{
		{"connection close nominates x-secret", "close, X-Secret", "X-Secret: s\r\n", []string{"x-secret"}},
		{"keep-alive nominates two", "keep-alive, X-A, x-b", "X-A: 1\r\nX-B: 2\r\n", []string{"x-a", "x-b"}},
	}
	u := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: u.Port()}.YAML())
	for _, tt := range tests {
		c := harness.Dial(t, p.Addr(""))
		c.Write("GET /h HTTP/1.1\r\nHost: app\r\nConnection: " + tt.connection + "\r\n" + tt.extra +
			"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: deflate\r\nTrailer: X-T\r\n" +
			"Upgrade: websocket\r\nX-Keep: yes\r\n\r\n")
		uc := u.Accept(ioWait)
		head := readRequests(t, uc, 1)[0].head
		for _, h := range append([]string{"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}, tt.removed...) {
			if v, ok := headerLine(head, h); ok {
				t.Errorf("%s: %s: %q forwarded upstream", tt.name, h, v)
			}
		}
		if v, _ := headerLine(head, "x-keep"); v != "yes" {
			t.Errorf("%s: x-keep lost: %q", tt.name, head)
		}
		if v, _ := headerLine(head, "x-forwarded-proto"); v != "http" {
			t.Errorf("%s: x-forwarded-proto = %q, want http", tt.name, v)
		}
		if v, _ := headerLine(head, "x-request-id"); !uuidRE.MatchString(v) {
			t.Errorf("%s: x-request-id = %q, want a UUID", tt.name, v)
		}
		uc.Write(closeResponse)
		if r := readResponses(t, c, 1)[0]; r.status != 200 {
			t.Errorf("%s: status %d", tt.name, r.status)
		}
		c.Close()
	}
}

func TestForwardedHeaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, hcm string
		hdrs      []string
		wantXFF   string // "" means absent
		wantReqID string // "uuid", "keep" (the client's) or "" (absent)
		wantXFP   string
	}{
		{"use_remote_address appends the peer", "use_remote_address: true",
			[]string{"X-Forwarded-For: 10.0.0.1", "X-Forwarded-Proto: https"}, "10.0.0.1, 127.0.0.1", "uuid", "http"},
		{"use_remote_address sets the peer", "use_remote_address: true", nil, "127.0.0.1", "uuid", "http"},
		{"a trusted hop's x-forwarded-proto is kept", "use_remote_address: true\nxff_num_trusted_hops: 1",
			[]string{"X-Forwarded-For: 10.0.0.1", "X-Forwarded-Proto: https"}, "10.0.0.1, 127.0.0.1", "uuid", "https"},
		{"trusted hops set one when missing", "use_remote_address: true\nxff_num_trusted_hops: 1", nil, "127.0.0.1", "uuid", "http"},
		{"default trusts the client", "",
			[]string{"X-Request-Id: client-id", "X-Forwarded-Proto: https"}, "", "keep", "https"},
		{"generate_request_id false", "generate_request_id: false", nil, "", "", "http"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := newEchoApp(t, "app", nil)
			p := harness.Start(t, harness.Config{UpstreamPort: a.port(), HCM: tt.hcm}.YAML())
			e := echoOf(t, getVia(t, p.Addr(""), "app", "/", tt.hdrs...))
			if got := e.Header.Get("X-Forwarded-For"); got != tt.wantXFF {
				t.Errorf("x-forwarded-for = %q, want %q", got, tt.wantXFF)
			}
			if got := e.Header.Get("X-Forwarded-Proto"); got != tt.wantXFP {
				t.Errorf("x-forwarded-proto = %q, want %q", got, tt.wantXFP)
			}
			id := e.Header.Get("X-Request-Id")
			switch tt.wantReqID {
			case "uuid":
				if !uuidRE.MatchString(id) {
					t.Errorf("x-request-id = %q, want a UUID", id)
				}
			case "keep":
				if id != "client-id" {
					t.Errorf("x-request-id = %q, want the client's", id)
				}
			default:
				if id != "" {
					t.Errorf("x-request-id = %q, want none", id)
				}
			}
		})
	}
}

func TestBadRequestsNeverReachUpstream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, raw string
		status    int
	}{
		{"content-length with transfer-encoding", "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"control byte in a value", "GET / HTTP/1.1\r\nHost: app\r\nX-A: b\x01c\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: app\r\nX-A: b\r\n c\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost: app\r\nX-A : b\r\n\r\n", 400},
		{"headers over max_request_headers_kb", "GET / HTTP/1.1\r\nHost: app\r\nX-Big: " + strings.Repeat("b", 2048) + "\r\n\r\n", 431},
		{"HTTP/1.0 by default", "GET / HTTP/1.0\r\nHost: app\r\n\r\n", 426},
	}
	u := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: u.Port(), HCM: "max_request_headers_kb: 1"}.YAML())
	for _, tt := range tests {
		c := harness.Dial(t, p.Addr(""))
		c.Write(tt.raw)
		if r := readResponses(t, c, 1)[0]; r.status != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, r.status, tt.status)
		}
		c.WaitForEOF(ioWait) // the connection cannot be trusted after a framing error
	}
	u.NoConnection(150 * time.Millisecond)
	if v := p.Stat("http.ingress.downstream_rq_4xx"); v != int64(len(tests)) {
		t.Errorf("downstream_rq_4xx = %d, want %d", v, len(tests))
	}
}

func TestHTTP10Accepted(t *testing.T) {
	t.Parallel()
	a := newEchoApp(t, "app", nil)
	p := harness.Start(t, harness.Config{UpstreamPort: a.port(), HCM: "http_protocol_options: {accept_http_10: true}"}.YAML())
	c := harness.Dial(t, p.Addr(""))
	c.Write("GET /old HTTP/1.0\r\nHost: app\r\n\r\n")
	c.WaitForEOF(ioWait) // no keep-alive for HTTP/1.0
	r := readResponses(t, c, 1)[0]
	if e := echoOf(t, r); e.URI != "/old" || e.Proto != "HTTP/1.1" {
		t.Errorf("upstream saw %s %s", e.Proto, e.URI)
	}
}
