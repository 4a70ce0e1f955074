package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
	"golang.org/x/net/http2"
)

// HTTP/2 upgrade tests: a raw x/net Framer client (h2c, prior knowledge) speaks RFC 8441 extended
// CONNECT to the built proxy, and a raw upstream records every byte the proxy forwards.

const (
	h2Listener        = "          codec_type: AUTO\n"
	h2ListenerConnect = "          codec_type: AUTO\n          http2_protocol_options: {allow_connect: true}"
)

// h2FooHop starts one proxy (stat prefix "a") that takes extended CONNECT for the upgrade "foo"
// to a raw app, and an HTTP/2 client connected to it.
func h2FooHop(t *testing.T) (*harness.RawUpstream, *harness.Proxy, *h2Conn) {
	t.Helper()
	app := harness.NewRawUpstream(t)
	p := harness.Start(t, seedYAML("a", h2ListenerConnect, app.Port(), false, "[{upgrade_type: foo}]"))
	return app, p, dialH2(t, p.Addr(""))
}

// h2OpenFoo opens a "foo" tunnel on c, which app accepts: the stream and the app's end of it.
func h2OpenFoo(t *testing.T, c *h2Conn, app *harness.RawUpstream) (uint32, *harness.RawConn) {
	t.Helper()
	id := c.connect("foo", "/")
	u := app.Accept(5 * time.Second)
	u.WaitForHead(5 * time.Second)
	u.Write(upgSwitching("foo"))
	if h := c.waitHead(id); h[":status"] != "200" {
		t.Fatalf("stream %d: %v", id, h)
	}
	return id, u
}

// h2Hop is one proxy of a chain and its stat prefix, for the end-of-test checks.
type h2Hop struct {
	p      *harness.Proxy
	prefix string
}

// h2End asserts that no hop has an upgrade left open.
func h2End(t *testing.T, hops ...h2Hop) {
	t.Helper()
	for _, h := range hops {
		h.p.WaitStat("http."+h.prefix+".downstream_cx_upgrades_active", 0, 5*time.Second)
	}
}

// TestH2ExtendedConnectRejectedWithoutAllowConnect: a listener without allow_connect does not
// advertise SETTINGS_ENABLE_CONNECT_PROTOCOL, and a :protocol request on it is malformed (RFC 8441
// §3): a connection error by default, only a stream error with
// override_stream_error_on_invalid_http_message, after which the connection still serves.
func TestH2ExtendedConnectRejectedWithoutAllowConnect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		h2Options string
		goAway    bool
	}{
		{"connection error", "", true},
		{"stream error", "          http2_protocol_options: {override_stream_error_on_invalid_http_message: true}", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			app := harness.NewRawUpstream(t)
			p := harness.Start(t, seedYAML("edge", h2Listener+tt.h2Options, app.Port(), false, "[{upgrade_type: websocket}]"))
			c := dialH2(t, p.Addr(""))
			defer c.close()
			if v, ok := c.waitSettings()[http2.SettingEnableConnectProtocol]; ok && v != 0 {
				t.Errorf("listener without allow_connect advertised ENABLE_CONNECT_PROTOCOL=%d", v)
			}
			id := c.connect("websocket", "/chat")
			if tt.goAway {
				if code := c.waitGoAway(); code != http2.ErrCodeProtocol {
					t.Errorf("GOAWAY %v, want PROTOCOL_ERROR", code)
				}
			} else {
				if code := c.waitReset(id); code != http2.ErrCodeProtocol {
					t.Errorf("RST_STREAM %v, want PROTOCOL_ERROR", code)
				}
				get := c.request(true, ":method", "GET", ":scheme", "http", ":path", "/after", ":authority", "svc")
				u := app.Accept(5 * time.Second)
				if head := u.WaitForHead(5 * time.Second); !strings.HasPrefix(head, "GET /after HTTP/1.1\r\n") {
					t.Fatalf("upstream got %q, want the GET that followed the reset stream", head)
				}
				u.Write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if h := c.waitHead(get); h[":status"] != "200" {
					t.Fatalf("GET after the reset stream: %v", h)
				}
				c.waitData(get, "ok")
				c.waitEnd(get)
			}
			p.WaitStat("http.edge.http2.rx_messaging_error", 1, 5*time.Second)
			if tt.goAway {
				app.NoConnection(200 * time.Millisecond)
			}
		})
	}
}

// TestH2ExtendedConnectTunnel runs an extended CONNECT across the HTTP/2-downstream pairs: straight
// to an HTTP/1.1 upstream, and through a second proxy over an HTTP/2 hop. The app sees an
// HTTP/1.1 upgrade (GET, upgrade, connection: upgrade), its 101 becomes :status 200, bytes cross
// both ways, and each side's end of the stream arrives as a half-close at the other while the
// other direction keeps flowing.
func TestH2ExtendedConnectTunnel(t *testing.T) {
	t.Parallel()
	const upgrades = "[{upgrade_type: foo}]"
	tests := []struct {
		name  string
		start func(t *testing.T, appPort int) (addr string, hops []h2Hop)
	}{
		{"h2 to h1", func(t *testing.T, appPort int) (string, []h2Hop) {
			p := harness.Start(t, seedYAML("a", h2ListenerConnect, appPort, false, upgrades))
			return p.Addr(""), []h2Hop{{p, "a"}}
		}},
		{"h2 to h2", func(t *testing.T, appPort int) (string, []h2Hop) {
			b := harness.Start(t, seedYAML("b", h2ListenerConnect, appPort, false, upgrades))
			a := harness.Start(t, seedYAML("a", h2ListenerConnect, portOf(t, b.Addr("")), true, upgrades))
			return a.Addr(""), []h2Hop{{a, "a"}, {b, "b"}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			app := harness.NewRawUpstream(t)
			addr, hops := tt.start(t, app.Port())
			c := dialH2(t, addr)
			defer c.close()
			if v := c.waitSettings()[http2.SettingEnableConnectProtocol]; v != 1 {
				t.Errorf("ENABLE_CONNECT_PROTOCOL = %d, want 1 with allow_connect", v)
			}
			id := c.connect("foo", "/path")
			u := app.Accept(5 * time.Second)
			head := u.WaitForHead(5 * time.Second)
			if !strings.HasPrefix(head, "GET /path HTTP/1.1\r\n") {
				t.Fatalf("app got %q, want GET /path", head)
			}
			lower := strings.ToLower(head)
			for _, want := range []string{"upgrade: foo\r\n", "connection: upgrade\r\n", "host: svc\r\n"} {
				if !strings.Contains(lower, want) {
					t.Errorf("app request lacks %q:\n%s", want, head)
				}
			}
			u.Write(upgSwitching("foo"))
			if h := c.waitHead(id); h[":status"] != "200" {
				t.Fatalf("client got %v, want :status 200", h)
			}

			c.send(id, "ping", false)
			u.WaitForData("ping", 5*time.Second)
			u.Write("pong")
			c.waitData(id, "pong")

			// Client END_STREAM → FIN at the app; the app's bytes still flow back.
			c.send(id, "", true)
			u.WaitForEOF(5 * time.Second)
			u.Write("after")
			c.waitData(id, "after")
			if end, rst := c.ended(id); end || rst != nil {
				t.Fatalf("stream ended (END_STREAM %v, RST %v) before the app closed", end, rst)
			}
			// App FIN → END_STREAM at the client.
			u.Close()
			c.waitEnd(id)
			if got := c.data(id); got != "pongafter" {
				t.Errorf("client received %q, want %q", got, "pongafter")
			}
			if got := u.Received(); got != head+"ping" {
				t.Errorf("app received %q after the head, want %q", strings.TrimPrefix(got, head), "ping")
			}
			h2End(t, hops...)
			for _, h := range hops {
				if v := h.p.Stat("http." + h.prefix + ".upgrades.foo.established"); v != 1 {
					t.Errorf("%s: upgrades.foo.established = %d, want 1", h.prefix, v)
				}
			}
		})
	}
}

// TestH2ExtendedConnect101Framing: what follows an HTTP/1.1 upstream's 101 is tunnel data. Bytes
// in the same segment as the 101 reach the HTTP/2 client as DATA right after :status 200; a 101
// that declares a body (Content-Length) is an upstream protocol error, 502.
func TestH2ExtendedConnect101Framing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		response string
		status   string
		data     string
	}{
		{"early data", upgSwitching("foo") + "early", "200", "early"},
		{"101 with a body", upgSwitching("foo", "Content-Length: 5") + "hello", "502", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			app, p, c := h2FooHop(t)
			defer c.close()
			id := c.connect("foo", "/")
			u := app.Accept(5 * time.Second)
			u.WaitForHead(5 * time.Second)
			u.Write(tt.response)
			h := c.waitHead(id)
			if h[":status"] != tt.status {
				t.Fatalf("client got %v, want :status %s", h, tt.status)
			}
			if tt.status == "200" {
				for _, name := range []string{"content-length", "upgrade", "connection"} {
					if v, ok := h[name]; ok {
						t.Errorf("200 to an extended CONNECT carries %s: %q", name, v)
					}
				}
				c.waitData(id, tt.data)
				c.send(id, "", true)
				u.WaitForEOF(5 * time.Second)
				u.Close()
			} else {
				u.WaitForEOF(5 * time.Second) // the upstream connection is not kept
			}
			c.waitEnd(id)
			h2End(t, h2Hop{p, "a"})
		})
	}
}

// TestH2UpstreamWithoutConnectProtocol: an HTTP/2 upstream that does not advertise
// SETTINGS_ENABLE_CONNECT_PROTOCOL cannot carry a WebSocket; the client gets a 503 saying so and
// the upstream never sees a stream.
func TestH2UpstreamWithoutConnectProtocol(t *testing.T) {
	t.Parallel()
	app := harness.NewRawUpstream(t)
	const ws = "[{upgrade_type: websocket}]"
	sidecar := harness.Start(t, seedYAML("sidecar", h2Listener, app.Port(), false, ws))
	front := harness.Start(t, seedYAML("front", "          codec_type: HTTP1", portOf(t, sidecar.Addr("")), true, ws))

	c := harness.Dial(t, front.Addr(""))
	c.Write(upgWSReq("/chat"))
	head := c.WaitForHead(5 * time.Second)
	if upgStatus(t, head) != 503 {
		t.Fatalf("client got %q, want 503\n%s", head, front.Log())
	}
	if body := c.WaitForData("HTTP/2", 5*time.Second); !strings.Contains(body, "does not support WebSocket over HTTP/2") {
		t.Errorf("503 body does not say why:\n%s", body)
	}
	c.Close()
	front.WaitStat("http.front.downstream_cx_upgrades_active", 0, 5*time.Second)
	if v := sidecar.Stat("http.sidecar.downstream_cx_http2_total"); v != 1 {
		t.Errorf("sidecar HTTP/2 connections = %d, want 1 (the front learns the setting by connecting)", v)
	}
	if v := sidecar.Stat("http.sidecar.downstream_rq_total"); v != 0 {
		t.Errorf("sidecar got %d requests, want none", v)
	}
	app.NoConnection(100 * time.Millisecond)
}

// TestH2ResetTearsDownOnlyItsTunnel: two tunnels share one HTTP/2 connection; the client resets
// one. Its upstream connection is closed, while the other tunnel and the connection go on.
func TestH2ResetTearsDownOnlyItsTunnel(t *testing.T) {
	t.Parallel()
	app, p, c := h2FooHop(t)
	defer c.close()

	id1, u1 := h2OpenFoo(t, c, app)
	id2, u2 := h2OpenFoo(t, c, app)
	p.WaitStat("http.a.downstream_cx_upgrades_active", 2, 5*time.Second)

	c.reset(id1, http2.ErrCodeCancel)
	u1.WaitForEOF(5 * time.Second)
	p.WaitStat("http.a.downstream_cx_upgrades_active", 1, 5*time.Second)

	c.send(id2, "still", false)
	u2.WaitForData("still", 5*time.Second)
	u2.Write("here")
	c.waitData(id2, "here")
	c.send(id2, "", true)
	u2.WaitForEOF(5 * time.Second)
	u2.Close()
	c.waitEnd(id2)
	c.mu.Lock()
	goaway := c.goaway
	c.mu.Unlock()
	if goaway != nil {
		t.Errorf("connection got GOAWAY %v after one stream's reset", *goaway)
	}
	h2End(t, h2Hop{p, "a"})
	if v := p.Stat("http.a.downstream_cx_http2_total"); v != 1 {
		t.Errorf("downstream_cx_http2_total = %d, want 1", v)
	}
}

// TestH2ClientBytesBeforeThe101: an HTTP/2 client may send tunnel payload, and even END_STREAM,
// right after its extended CONNECT. The app sees none of it before its 101 (it is held until
// then, as for an HTTP/1.1 client), then all of it in order and the FIN; the app's bytes still
// reach the client. A client that resets while the app has not answered closes the app's
// connection, and nothing of it reaches the app.
func TestH2ClientBytesBeforeThe101(t *testing.T) {
	t.Parallel()
	app, p, c := h2FooHop(t)
	defer c.close()

	id := c.connect("foo", "/")
	c.send(id, "one,", false)
	c.send(id, "two,", false)
	c.send(id, "three", true)
	u := app.Accept(5 * time.Second)
	head := u.WaitForHead(5 * time.Second)
	time.Sleep(200 * time.Millisecond)
	if got := u.Received(); got != head {
		t.Fatalf("app got %q after the head before answering, want nothing", strings.TrimPrefix(got, head))
	}
	u.Write(upgSwitching("foo"))
	if h := c.waitHead(id); h[":status"] != "200" {
		t.Fatalf("client got %v, want :status 200", h)
	}
	if got := strings.TrimPrefix(u.WaitForEOF(5*time.Second), head); got != "one,two,three" {
		t.Fatalf("app got %q after the head, want %q then the FIN", got, "one,two,three")
	}
	u.Write("reply")
	u.Close()
	c.waitEnd(id)
	if got := c.data(id); got != "reply" {
		t.Errorf("client received %q, want %q", got, "reply")
	}

	// A reset before the 101: the app's connection closes, with nothing after the head.
	id = c.connect("foo", "/")
	c.send(id, "lost", false)
	u = app.Accept(5 * time.Second)
	head = u.WaitForHead(5 * time.Second)
	c.reset(id, http2.ErrCodeCancel)
	if got := strings.TrimPrefix(u.WaitForEOF(5*time.Second), head); got != "" {
		t.Errorf("app got %q from a stream reset before its 101, want nothing", got)
	}
	h2End(t, h2Hop{p, "a"})
}
