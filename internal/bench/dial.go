package bench

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"time"
)

// handshakeTimeout bounds a dial plus upgrade, so a stuck target fails an operation instead of
// hanging a worker.
const handshakeTimeout = 10 * time.Second

// target is a parsed -url.
type target struct {
	tls       bool
	addr      string // host:port to dial
	authority string // Host header and :authority
	host      string // TLS server name
	path      string
}

// parseTarget accepts ws://, wss:// and, as synonyms, http:// and https://.
func parseTarget(raw string) (target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, err
	}
	var t target
	port := "80"
	switch u.Scheme {
	case "ws", "http":
	case "wss", "https":
		t.tls, port = true, "443"
	default:
		return target{}, fmt.Errorf("url %q: scheme must be ws or wss", raw)
	}
	if u.Hostname() == "" {
		return target{}, fmt.Errorf("url %q has no host", raw)
	}
	t.host = u.Hostname()
	if u.Port() != "" {
		port = u.Port()
	}
	t.addr = net.JoinHostPort(t.host, port)
	t.authority = u.Host
	t.path = u.RequestURI()
	return t, nil
}

// dialer opens WebSockets to one target over HTTP/1.1 Upgrade or HTTP/2 extended CONNECT.
type dialer struct {
	t        target
	h2       bool
	tlsConf  *tls.Config
	rbufSize int // the WebSocket read buffer, sized for one message
}

func newDialer(t target, h2, insecure bool, msgSize int) *dialer {
	d := &dialer{t: t, h2: h2, rbufSize: min(max(4096, msgSize+maxFrameHeader), 256<<10)}
	if t.tls {
		proto := "http/1.1"
		if h2 {
			proto = "h2"
		}
		d.tlsConf = &tls.Config{ServerName: t.host, InsecureSkipVerify: insecure, NextProtos: []string{proto}}
	}
	return d
}

// dial connects and upgrades. The socket keeps a deadline of handshakeTimeout from now, which
// bounds what the caller does next (an echo, a close); clear it for a long-lived socket.
func (d *dialer) dial() (*wsConn, error) {
	nc, err := net.DialTimeout("tcp", d.t.addr, handshakeTimeout)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(handshakeTimeout))
	c, err := d.upgrade(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func (d *dialer) upgrade(nc net.Conn) (*wsConn, error) {
	if d.tlsConf != nil {
		tc := tls.Client(nc, d.tlsConf)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		if want := d.tlsConf.NextProtos[0]; want == "h2" && tc.ConnectionState().NegotiatedProtocol != want {
			return nil, errors.New("the server did not negotiate h2 with ALPN")
		}
		nc = tc
	}
	if d.h2 {
		s, err := openH2Stream(nc, d.t, d.rbufSize)
		if err != nil {
			return nil, err
		}
		return newWSConn(s, d.rbufSize, nil), nil
	}
	return upgradeH1(nc, d.t, d.rbufSize)
}

// h1Stream is an upgraded HTTP/1.1 connection.
type h1Stream struct{ net.Conn }

func (s h1Stream) writeLast(p []byte) error {
	_, err := s.Write(p)
	return err
}

// upgradeH1 sends the RFC 6455 §4.1 opening handshake and checks the 101 and its
// Sec-WebSocket-Accept. Bytes after the response head stay in the WebSocket's read buffer.
func upgradeH1(nc net.Conn, t target, rbufSize int) (*wsConn, error) {
	var kb [16]byte
	for i := range kb {
		kb[i] = byte(rand.Uint32())
	}
	key := base64.StdEncoding.EncodeToString(kb[:])
	req := "GET " + t.path + " HTTP/1.1\r\nHost: " + t.authority +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		return nil, err
	}
	c := newWSConn(h1Stream{nc}, rbufSize, nil)
	end := -1
	for end < 0 {
		if c.w == len(c.rbuf) {
			return nil, errors.New("upgrade response head too long")
		}
		n, err := nc.Read(c.rbuf[c.w:])
		c.w += n
		if end = bytes.Index(c.rbuf[:c.w], []byte("\r\n\r\n")); end < 0 && err != nil {
			return nil, fmt.Errorf("reading the upgrade response: %w", err)
		}
	}
	head := string(c.rbuf[:end])
	c.r = end + 4
	lines := strings.Split(head, "\r\n")
	if !strings.HasPrefix(lines[0], "HTTP/1.1 101") {
		return nil, fmt.Errorf("upgrade refused: %q", lines[0])
	}
	for _, l := range lines[1:] {
		name, value, _ := strings.Cut(l, ":")
		if strings.EqualFold(strings.TrimSpace(name), "Sec-WebSocket-Accept") {
			if strings.TrimSpace(value) != acceptKey(key) {
				return nil, errors.New("wrong Sec-WebSocket-Accept")
			}
			return c, nil
		}
	}
	return nil, errors.New("101 without Sec-WebSocket-Accept")
}
