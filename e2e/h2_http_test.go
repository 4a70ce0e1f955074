//lint:file-ignore SA1019 x/net's HTTP/2 Transport is the client the issue names: it sends RFC 8441 extended CONNECT

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
	"golang.org/x/net/http2"
)

// TestH2PlainRequests: ordinary HTTP/2 requests from the x/net client (h2c, prior knowledge) reach
// an HTTP/1.1 app with their method, target and body, the answers come back intact, and twenty
// concurrent requests share the one connection.
func TestH2PlainRequests(t *testing.T) {
	t.Parallel()
	app := newEchoApp(t, "app", nil)
	p := harness.Start(t, seedYAML("edge", h2Listener, app.port(), false, "[]"))
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	base := "http://" + p.Addr("")

	do := func(method, target, body string) echoBody {
		t.Helper()
		req, err := http.NewRequest(method, base+target, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, target, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s body: %v", method, target, err)
		}
		if resp.ProtoMajor != 2 || resp.Header.Get("x-app") != "app" {
			t.Fatalf("%s %s: %s %v, want an HTTP/2 answer from the app", method, target, resp.Proto, resp.Header)
		}
		return echoOf(t, clientResp{status: resp.StatusCode, header: resp.Header, body: string(b)})
	}

	for _, tt := range []struct{ method, target, body string }{
		{"GET", "/get?x=1", ""},
		{"POST", "/post", "hello world"},
		{"PUT", "/put", strings.Repeat("b", 100<<10)},
	} {
		e := do(tt.method, tt.target, tt.body)
		if e.Method != tt.method || e.URI != tt.target || e.Body != tt.body || e.Proto != "HTTP/1.1" {
			t.Errorf("%s %s: app saw %s %s %s with a %d-byte body", tt.method, tt.target, e.Method, e.URI, e.Proto, len(e.Body))
		}
	}

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			target := fmt.Sprintf("/parallel/%d", i)
			resp, err := client.Get(base + target)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.Contains(string(b), `"URI":"`+target+`"`) {
				errs <- fmt.Sprintf("%s: %d %q", target, resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if v := p.Stat("http.edge.downstream_cx_http2_total"); v != 1 {
		t.Errorf("downstream_cx_http2_total = %d, want 1 (all streams on one connection)", v)
	}
	if v := p.Stat("http.edge.downstream_rq_http2_total"); v != 3+n {
		t.Errorf("downstream_rq_http2_total = %d, want %d", v, 3+n)
	}
}
