package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Type URLs of the TLS transport socket configs.
const (
	downstreamTLSURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	upstreamTLSURL   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)

// transportSocket unpacks a transport_socket's typed_config, failing unless it is the TLS context
// this side (listener or cluster) takes. Envoy picks the socket by the typed_config type, so the
// name is not checked.
func (c *compiler) transportSocket(ts *corev3.TransportSocket, p path, wantURL string) any {
	if ts.GetTypedConfig() == nil {
		c.fail(p, "transport socket %q has no typed_config; switchyard supports envoy.transport_sockets.tls with typed_config: {\"@type\": %s, ...}", ts.GetName(), wantURL)
		return nil
	}
	tp := p.field("typed_config")
	m := c.unpack(ts.GetTypedConfig(), tp)
	if m != nil && ts.GetTypedConfig().GetTypeUrl() != wantURL {
		c.fail(tp, "transport socket type %q is not supported here; use envoy.transport_sockets.tls with %s", ts.GetTypedConfig().GetTypeUrl(), wantURL)
		return nil
	}
	return m
}

// downstreamTLS compiles a filter chain's transport_socket; nil (cleartext) when there is none.
// Certificates and keys are read and parsed now, so that a bad file fails the load, not the first
// handshake.
func (c *compiler) downstreamTLS(ts *corev3.TransportSocket, p path) *TLSServer {
	if ts == nil {
		return nil
	}
	ctx, ok := c.transportSocket(ts, p, downstreamTLSURL).(*tlsv3.DownstreamTlsContext)
	if !ok {
		return nil
	}
	cp := p.field("typed_config").field("common_tls_context")
	common := ctx.GetCommonTlsContext()
	if common.GetValidationContextType() != nil {
		c.fail(cp.field("validation_context"), "verifying client certificates (mutual TLS) is not supported yet")
	}
	out := &TLSServer{ALPN: common.GetAlpnProtocols()}
	if len(common.GetTlsCertificates()) == 0 {
		c.fail(cp, "a listener's TLS context needs at least one tls_certificates entry")
	}
	for i, tc := range common.GetTlsCertificates() {
		ip := cp.field("tls_certificates").index(i)
		pair := CertificatePair{
			CertPEM: c.dataSource(tc.GetCertificateChain(), ip.field("certificate_chain")),
			KeyPEM:  c.dataSource(tc.GetPrivateKey(), ip.field("private_key")),
		}
		if pair.CertPEM == nil || pair.KeyPEM == nil {
			return out // the read failed
		}
		if err := checkCertChain(pair.CertPEM); err != nil {
			c.fail(ip.field("certificate_chain"), "%v", err)
		} else if _, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM); err != nil {
			c.fail(ip.field("private_key"), "%v", err)
		}
		out.Certificates = append(out.Certificates, pair)
	}
	return out
}

// checkCertChain parses every PEM block of a certificate chain, so that an error can blame the
// chain rather than the key (tls.X509KeyPair does not say which of the two is wrong).
func checkCertChain(data []byte) error {
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return errNoCertificate
	}
	return nil
}

var errNoCertificate = errors.New("no PEM CERTIFICATE block found")

// upstreamTLS compiles a cluster's transport_socket; nil (cleartext) when there is none. Like
// Envoy, the server is verified only when validation_context.trusted_ca is set.
func (c *compiler) upstreamTLS(ts *corev3.TransportSocket, p path) *TLSClient {
	if ts == nil {
		return nil
	}
	ctx, ok := c.transportSocket(ts, p, upstreamTLSURL).(*tlsv3.UpstreamTlsContext)
	if !ok {
		return nil
	}
	cp := p.field("typed_config").field("common_tls_context")
	common := ctx.GetCommonTlsContext()
	if len(common.GetTlsCertificates()) > 0 {
		c.fail(cp.field("tls_certificates"), "client certificates (mutual TLS) are not supported yet")
	}
	out := &TLSClient{SNI: ctx.GetSni(), ALPN: common.GetAlpnProtocols()}
	if ca := common.GetValidationContext().GetTrustedCa(); ca != nil {
		ap := cp.field("validation_context").field("trusted_ca")
		out.TrustedCAPEM = c.dataSource(ca, ap)
		if out.TrustedCAPEM != nil && !x509.NewCertPool().AppendCertsFromPEM(out.TrustedCAPEM) {
			c.fail(ap, "no PEM certificate could be parsed")
		}
	}
	return out
}

// dataSource reads a DataSource now: a missing or unreadable file is a load error naming the field.
// The allow list admits only filename and inline_string.
func (c *compiler) dataSource(ds *corev3.DataSource, p path) []byte {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_Filename:
		data, err := os.ReadFile(s.Filename)
		if err != nil {
			c.fail(p.field("filename"), "%v", err)
			return nil
		}
		return data
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString)
	default:
		c.fail(p, "a filename or inline_string is required")
		return nil
	}
}
