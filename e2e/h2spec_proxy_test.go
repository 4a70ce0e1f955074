package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// TestH2SpecAgainstProxy runs h2spec (RFC 9113 / RFC 7541 conformance) against the built proxy,
// on a cleartext HTTP/2 listener and on a TLS listener that offers h2 by ALPN, both proxying to an
// HTTP/1.1 app. Every case must pass. CI installs h2spec; without it the test skips.
func TestH2SpecAgainstProxy(t *testing.T) {
	bin, err := exec.LookPath("h2spec")
	if err != nil {
		t.Skip("h2spec is not on PATH; install it with: go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible")
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}))
	t.Cleanup(app.Close)
	cert, key := harness.SelfSignedCert(t)
	for _, tc := range []struct {
		name, chain string
		tls         bool
	}{
		{"cleartext", "    - filters:\n", false},
		{"tls", `    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2]
            tls_certificates:
            - certificate_chain: {filename: ` + cert + `}
              private_key: {filename: ` + key + `}
      filters:
`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := seedYAML("h2spec", "          codec_type: HTTP2", portOf(t, app.Listener.Addr().String()), false, "[]")
			yaml = strings.Replace(yaml, "    - filters:\n", tc.chain, 1)
			p := harness.Start(t, yaml)
			host, port := splitAddr(t, p.Addr(""))
			args := []string{"-h", host, "-p", port, "-S", "-o", "15"}
			if tc.tls {
				args = append(args, "-t", "-k")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			m := regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("h2spec: %v\n%s", err, out)
			}
			t.Logf("h2spec %s: %s", tc.name, m[0])
			if string(m[4]) != "0" {
				t.Fatalf("h2spec failures:\n%s", out)
			}
		})
	}
}

func splitAddr(t *testing.T, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}
