package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"

	"github.com/switchyard-proxy/switchyard/internal/config"
)

// clientTLS builds the TLS config of a cluster's UpstreamTlsContext, with Envoy's semantics:
// without a validation_context the upstream's certificate is not checked at all; with trusted_ca
// the chain must lead to it, but the name is not matched (Envoy checks names only when
// match_subject_alt_names is set, which we do not support). ALPN defaults to the cluster's
// protocol.
func clientTLS(c *config.Cluster) *tls.Config {
	t := c.TLS
	tc := &tls.Config{ServerName: t.SNI, MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}
	if len(t.TrustedCAPEM) > 0 {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(t.TrustedCAPEM)
		tc.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("upstream sent no certificate")
			}
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				cert, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs[i] = cert
			}
			inter := x509.NewCertPool()
			for _, cert := range certs[1:] {
				inter.AddCert(cert)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return err
		}
	}
	tc.NextProtos = t.ALPN
	if len(tc.NextProtos) == 0 {
		switch c.Protocol {
		case config.UpstreamHTTP2:
			tc.NextProtos = []string{"h2"}
		case config.UpstreamAuto:
			tc.NextProtos = []string{"h2", "http/1.1"}
		default:
			tc.NextProtos = []string{"http/1.1"}
		}
	}
	return tc
}

// handshake wraps a new upstream connection in TLS when the cluster has a transport socket.
func (c *Cluster) handshake(ctx context.Context, conn net.Conn) (net.Conn, error) {
	if c.tls == nil {
		return conn, nil
	}
	tc := tls.Client(conn, c.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}
