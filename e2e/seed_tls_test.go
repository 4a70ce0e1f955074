package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// TestSeedDeploymentOverTLSWithALPN runs the seed's deployment with TLS on the HTTP/2 hop and the
// front's cluster on auto_config: ALPN picks HTTP/2 when the sidecar offers it and HTTP/1.1 when
// it does not, and the WebSocket works either way.
func TestSeedDeploymentOverTLSWithALPN(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		alpn     string
		wantH2   int64
		trustAll bool
	}{
		{"alpn h2", "[h2, http/1.1]", 1, true},
		{"alpn http/1.1", "[http/1.1]", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			app := echoServer(t)
			cert, key := harness.SelfSignedCert(t)
			sidecarYAML := seedYAML("sidecar", "          codec_type: AUTO\n          http2_protocol_options: {allow_connect: true}",
				portOf(t, app.Listener.Addr().String()), false, "[{upgrade_type: websocket}]")
			sidecarYAML = strings.Replace(sidecarYAML, "    - filters:\n", `    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: `+tc.alpn+`
            tls_certificates:
            - certificate_chain: {filename: `+cert+`}
              private_key: {filename: `+key+`}
      filters:
`, 1)
			sidecar := harness.Start(t, sidecarYAML)

			validation := ""
			if !tc.trustAll {
				validation = "\n          validation_context: {trusted_ca: {filename: " + cert + "}}"
			}
			frontYAML := seedYAML("front", "          codec_type: HTTP1", portOf(t, sidecar.Addr("")), false, "[{upgrade_type: websocket}]")
			frontYAML = strings.Replace(frontYAML, "    load_assignment:\n", `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        auto_config:
          http2_protocol_options: {allow_connect: true}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: sidecar.test
        common_tls_context:
          alpn_protocols: [h2, http/1.1]`+validation+`
    load_assignment:
`, 1)
			front := harness.Start(t, frontYAML)

			c, resp, err := websocket.DefaultDialer.Dial("ws://"+front.Addr("")+"/tls", nil)
			if err != nil {
				t.Fatalf("dial: %v (%v)\nfront:\n%s\nsidecar:\n%s", err, resp, front.Log(), sidecar.Log())
			}
			if err := c.WriteMessage(websocket.TextMessage, []byte("over tls")); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, m, err := c.ReadMessage(); err != nil || string(m) != "over tls" {
				t.Fatalf("echo: %q, %v", m, err)
			}
			st := sidecar.Stats()
			if st["http.sidecar.downstream_cx_ssl_total"] != 1 || st["http.sidecar.downstream_cx_http2_total"] != tc.wantH2 {
				t.Errorf("sidecar: ssl %d, http2 %d (want 1, %d)", st["http.sidecar.downstream_cx_ssl_total"],
					st["http.sidecar.downstream_cx_http2_total"], tc.wantH2)
			}
			if v := front.Stat("cluster.next.upstream_cx_http2_total"); v != tc.wantH2 {
				t.Errorf("front opened %d HTTP/2 connections, want %d", v, tc.wantH2)
			}
			c.Close()
			front.WaitStat("http.front.downstream_cx_upgrades_active", 0, 5*time.Second)
			sidecar.WaitStat("http.sidecar.downstream_cx_upgrades_active", 0, 5*time.Second)
		})
	}
}
