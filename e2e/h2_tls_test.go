//lint:file-ignore SA1019 x/net's HTTP/2 Transport is the client the issue names: it sends RFC 8441 extended CONNECT

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
	"golang.org/x/net/http2"
)

// h2TLS puts a DownstreamTlsContext offering ALPN h2 and http/1.1 on the (only) filter chain of
// a seedYAML bootstrap.
func h2TLS(yaml, cert, key string) string {
	ts := fmt.Sprintf(`    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {filename: %s}
              private_key: {filename: %s}
            alpn_protocols: [h2, http/1.1]
      filters:
`, cert, key)
	return strings.Replace(yaml, "    - filters:\n", ts, 1)
}

// wsClientFrame is a masked client WebSocket text frame (RFC 6455 §5.2, §5.3) carrying a short
// payload.
func wsClientFrame(payload string) []byte {
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	f := []byte{0x81, 0x80 | byte(len(payload))}
	f = append(f, mask[:]...)
	for i := 0; i < len(payload); i++ {
		f = append(f, payload[i]^mask[i%4])
	}
	return f
}

// TestH2TLSWebSocketExtendedConnect is RFC 8441 from a real HTTP/2 client over TLS: ALPN picks h2
// on a codec AUTO listener, the x/net client sends an extended CONNECT (it waits for the
// listener's SETTINGS_ENABLE_CONNECT_PROTOCOL first and refuses otherwise), and the proxy turns
// it into an HTTP/1.1 WebSocket handshake that gorilla accepts — which it does only with a
// Sec-WebSocket-Key and version 13 the proxy made up, since the CONNECT carried neither. Frames
// then cross both ways and the client's END_STREAM ends the tunnel.
func TestH2TLSWebSocketExtendedConnect(t *testing.T) {
	t.Parallel()
	app := echoServer(t)
	cert, key := harness.SelfSignedCert(t)
	p := harness.Start(t, h2TLS(seedYAML("edge", "          codec_type: AUTO\n          http2_protocol_options: {allow_connect: true}",
		portOf(t, app.Listener.Addr().String()), false, "[{upgrade_type: websocket}]"), cert, key))

	tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(ctx, "CONNECT", "https://"+p.Addr("")+"/chat", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(":protocol", "websocket")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("extended CONNECT: %v\n%s", err, p.Log())
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("got %s %s, want HTTP/2.0 200\n%s", resp.Proto, resp.Status, p.Log())
	}

	if _, err := pw.Write(wsClientFrame("hello")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 7)
	if _, err := io.ReadFull(resp.Body, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if want := []byte("\x81\x05hello"); !bytes.Equal(got, want) {
		t.Fatalf("echoed frame %q, want %q (an unmasked server text frame)", got, want)
	}

	// END_STREAM reaches gorilla as EOF; it closes, and the client sees the stream end.
	pw.Close()
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Fatalf("after END_STREAM: %q, %v; want a clean end of the stream", rest, err)
	}
	p.WaitStat("http.edge.downstream_cx_upgrades_active", 0, 5*time.Second)
	st := p.Stats()
	for name, want := range map[string]int64{
		"http.edge.downstream_cx_ssl_total":        1,
		"http.edge.downstream_cx_http2_total":      1,
		"http.edge.downstream_cx_http1_total":      0,
		"http.edge.downstream_rq_http2_total":      1,
		"http.edge.upgrades.websocket.established": 1,
		"cluster.next.upstream_rq_101":             1,
	} {
		if st[name] != want {
			t.Errorf("%s = %d, want %d", name, st[name], want)
		}
	}
}
