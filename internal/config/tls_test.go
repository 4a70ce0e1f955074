package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// selfSigned returns a fresh self-signed certificate and its key, PEM-encoded.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "switchyard.test"},
		DNSNames:              []string{"switchyard.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
}

// writeTemp writes data to a new file in a test directory and returns its path.
func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// fileDS and inlineDS are the YAML of a DataSource value, to be written after "key:".
func fileDS(name string) string { return "\n  filename: " + name }
func inlineDS(data []byte) string {
	return "\n  inline_string: |\n    " + strings.ReplaceAll(strings.TrimSuffix(string(data), "\n"), "\n", "\n    ")
}

// indent indents every line but the first by n spaces.
func indent(s string, n int) string {
	return strings.ReplaceAll(s, "\n", "\n"+strings.Repeat(" ", n))
}

// downstreamTLS is a filter chain transport_socket with one certificate; extra is added to
// common_tls_context.
func downstreamTLS(cert, key, extra string) string {
	return `transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
    common_tls_context:
      ` + indent(extra, 6) + `
      tls_certificates:
      - certificate_chain:` + indent(cert, 8) + `
        private_key:` + indent(key, 8)
}

// upstreamTLS is a cluster transport_socket; common is the YAML of common_tls_context's fields.
func upstreamTLS(common string) string {
	return `transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: backend.example
    common_tls_context:
      ` + indent(common, 6)
}

func TestDownstreamTLS(t *testing.T) {
	cert, key := selfSigned(t)
	certFile, keyFile := writeTemp(t, "cert.pem", cert), writeTemp(t, "key.pem", key)
	tests := []struct {
		name, cert, key string
	}{
		{"filename", fileDS(certFile), fileDS(keyFile)},
		{"inline_string", inlineDS(cert), inlineDS(key)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := parse(t, conf(t, "#CHAIN", downstreamTLS(tt.cert, tt.key, "alpn_protocols: [h2, http/1.1]"), "#HCM", "codec_type: HTTP2"))
			l := s.Listeners[0]
			if l.TLS == nil {
				t.Fatal("listener TLS is nil")
			}
			if len(l.TLS.Certificates) != 1 || !bytes.Equal(l.TLS.Certificates[0].CertPEM, cert) || !bytes.Equal(l.TLS.Certificates[0].KeyPEM, key) {
				t.Errorf("certificates %d, want the generated pair", len(l.TLS.Certificates))
			}
			if !slices.Equal(l.TLS.ALPN, []string{"h2", "http/1.1"}) || l.HCM.Codec != CodecHTTP2 {
				t.Errorf("ALPN %q codec %v", l.TLS.ALPN, l.HCM.Codec)
			}
		})
	}
}

func TestUpstreamTLS(t *testing.T) {
	ca, _ := selfSigned(t)
	caFile := writeTemp(t, "ca.pem", ca)
	tests := []struct {
		name, common string
		wantCA       []byte
		alpn         []string
	}{
		{"no verification", "alpn_protocols: [h2]", nil, []string{"h2"}},
		{"trusted_ca from a file", "validation_context:\n  trusted_ca:" + indent(fileDS(caFile), 2), ca, nil},
		{"inline trusted_ca", "validation_context:\n  trusted_ca:" + indent(inlineDS(ca), 2), ca, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := parse(t, conf(t, "#CLUSTER", upstreamTLS(tt.common)))
			c := s.Clusters[0]
			if c.TLS == nil {
				t.Fatal("cluster TLS is nil")
			}
			if c.TLS.SNI != "backend.example" || !bytes.Equal(c.TLS.TrustedCAPEM, tt.wantCA) || !slices.Equal(c.TLS.ALPN, tt.alpn) {
				t.Errorf("SNI %q CA %d bytes ALPN %q; want backend.example, %d bytes, %q", c.TLS.SNI, len(c.TLS.TrustedCAPEM), c.TLS.ALPN, len(tt.wantCA), tt.alpn)
			}
			if c.Protocol != UpstreamHTTP1 {
				t.Errorf("protocol %v: TLS alone must not change the protocol", c.Protocol)
			}
		})
	}
}

func TestDirectResponseBodyFromFile(t *testing.T) {
	body := writeTemp(t, "body.txt", []byte("from a file"))
	s := parse(t, conf(t, "#ROUTELIST", "- match: {path: /f}\n  direct_response: {status: 200, body: {filename: "+body+"}}"))
	if d := s.Listeners[0].HCM.Routes.VirtualHosts[0].Routes[0].DirectResponse; d == nil || d.Body != "from a file" {
		t.Errorf("direct response %+v", d)
	}
}

func TestTLSErrors(t *testing.T) {
	cert, key := selfSigned(t)
	_, otherKey := selfSigned(t)
	certFile, keyFile := writeTemp(t, "cert.pem", cert), writeTemp(t, "key.pem", key)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	const (
		tsPath = "static_resources.listeners[0].filter_chains[0].transport_socket"
		ctx    = tsPath + ".typed_config.common_tls_context"
		cert0  = ctx + ".tls_certificates[0]"
		up     = "static_resources.clusters[0].transport_socket.typed_config.common_tls_context"
	)
	runParseErrors(t, []parseErrorCase{
		{
			name: "missing key file",
			doc:  conf(t, "#CHAIN", downstreamTLS(fileDS(certFile), fileDS(missing), "")),
			path: cert0 + ".private_key.filename", msg: "no such file or directory", lineAt: "filename: " + missing,
		},
		{
			name: "certificate that is not PEM",
			doc:  conf(t, "#CHAIN", downstreamTLS(inlineDS([]byte("not a certificate")), fileDS(keyFile), "")),
			path: cert0 + ".certificate_chain", msg: "no PEM CERTIFICATE block", lineAt: "certificate_chain:",
		},
		{
			name: "key that does not match the certificate",
			doc:  conf(t, "#CHAIN", downstreamTLS(fileDS(certFile), inlineDS(otherKey), "")),
			path: cert0 + ".private_key", msg: "private key does not match public key", lineAt: "private_key:",
		},
		{
			name: "no certificates",
			doc: conf(t, "#CHAIN", `transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
    common_tls_context: {alpn_protocols: [h2]}`),
			path: ctx, msg: "needs at least one tls_certificates entry", lineAt: "common_tls_context:",
		},
		{
			name: "mutual TLS",
			doc:  conf(t, "#CHAIN", downstreamTLS(fileDS(certFile), fileDS(keyFile), "")+"\n    require_client_certificate: true"),
			path: tsPath + ".typed_config.require_client_certificate", msg: "mutual TLS", lineAt: "require_client_certificate",
		},
		{
			name: "client validation context",
			doc:  conf(t, "#CHAIN", downstreamTLS(fileDS(certFile), fileDS(keyFile), "validation_context:\n  trusted_ca: {filename: "+certFile+"}")),
			path: ctx + ".validation_context", msg: "mutual TLS", lineAt: "validation_context:",
		},
		{
			name: "tls_params",
			doc:  conf(t, "#CHAIN", downstreamTLS(fileDS(certFile), fileDS(keyFile), "tls_params: {tls_minimum_protocol_version: TLSv1_3}")),
			path: ctx + ".tls_params", msg: "Go's crypto/tls defaults", lineAt: "tls_params",
		},
		{
			name: "SDS",
			doc:  conf(t, "#CHAIN", downstreamTLS(fileDS(certFile), fileDS(keyFile), "tls_certificate_sds_secret_configs: [{name: server}]")),
			path: ctx + ".tls_certificate_sds_secret_configs", msg: "SDS is not supported", lineAt: "tls_certificate_sds_secret_configs",
		},
		{
			name: "environment variable DataSource",
			doc:  conf(t, "#CHAIN", downstreamTLS(fileDS(certFile), "\n  environment_variable: KEY", "")),
			path: cert0 + ".private_key.environment_variable", msg: "use filename or inline_string", lineAt: "environment_variable",
		},
		{
			name: "upstream context on a listener",
			doc:  conf(t, "#CHAIN", strings.Replace(upstreamTLS("alpn_protocols: [h2]"), "typed_config:", "typed_config: # upstream", 1)),
			path: tsPath + ".typed_config", msg: "is not supported here; use envoy.transport_sockets.tls with type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", lineAt: "# upstream",
		},
		{
			name: "invalid trusted_ca",
			doc:  conf(t, "#CLUSTER", upstreamTLS("validation_context:\n  trusted_ca: {inline_string: garbage}")),
			path: up + ".validation_context.trusted_ca", msg: "no PEM certificate could be parsed", lineAt: "trusted_ca",
		},
		{
			name: "missing trusted_ca file",
			doc:  conf(t, "#CLUSTER", upstreamTLS("validation_context:\n  trusted_ca:"+indent(fileDS(missing), 2))),
			path: up + ".validation_context.trusted_ca.filename", msg: "no such file or directory", lineAt: "filename: " + missing,
		},
		{
			name: "subject alt name matching",
			doc:  conf(t, "#CLUSTER", upstreamTLS("validation_context:\n  match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: a}}]")),
			path: up + ".validation_context.match_typed_subject_alt_names", msg: "subject alt names are not matched", lineAt: "match_typed_subject_alt_names",
		},
		{
			name: "upstream client certificate",
			doc:  conf(t, "#CLUSTER", upstreamTLS("tls_certificates: [{certificate_chain: {filename: "+certFile+"}, private_key: {filename: "+keyFile+"}}]")),
			path: up + ".tls_certificates", msg: "client certificates (mutual TLS) are not supported yet", lineAt: "tls_certificates",
		},
		{
			name: "direct_response body file missing",
			doc:  conf(t, "#ROUTELIST", "- match: {path: /f}\n  direct_response:\n    status: 200\n    body: {filename: "+missing+"}"),
			path: routePath + ".direct_response.body.filename", msg: "no such file or directory", lineAt: "body:",
		},
	})
}
