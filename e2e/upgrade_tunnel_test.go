package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coderws "github.com/coder/websocket"
	"github.com/gorilla/websocket"
	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// Tunnel tests: what happens after the 101 — bytes, half-close, close, timeouts, back-pressure,
// and which filter chain an upgrade runs through.

// TestUpgradeTunnelByteExact: 256 KiB of random bytes each way at once arrive unchanged, and the
// per-type byte counters count exactly the tunnel payload.
func TestUpgradeTunnelByteExact(t *testing.T) {
	t.Parallel()
	p, up := upgStart(t, harness.Config{HCM: upgHCMws})
	c, u, off := upgOpenTunnel(t, p, up, upgWSReq("/bytes"), "websocket")
	headLen := len(u.Received())
	upData, downData := make([]byte, 256<<10), make([]byte, 256<<10)
	rand.Read(upData)
	rand.Read(downData)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.Conn().Write(upData) }()
	go func() { defer wg.Done(); u.Conn().Write(downData) }()
	wg.Wait()
	if got := u.WaitForLen(headLen+len(upData), upgWait)[headLen:]; got != string(upData) {
		t.Fatalf("upstream got %d tunnel bytes, not the %d sent", len(got), len(upData))
	}
	if got := c.WaitForLen(off+len(downData), upgWait)[off:]; got != string(downData) {
		t.Fatalf("client got %d tunnel bytes, not the %d sent", len(got), len(downData))
	}
	if got := p.Stat("http.ingress.upgrades.websocket.active"); got != 1 {
		t.Errorf("upgrades.websocket.active = %d during the tunnel, want 1", got)
	}
	c.Close()
	u.WaitForEOF(upgWait)
	u.Close()
	upgEnd(t, p)
	for stat, want := range map[string]int64{
		"http.ingress.upgrades.websocket.bytes_to_upstream":   int64(len(upData)),
		"http.ingress.upgrades.websocket.bytes_to_downstream": int64(len(downData)),
		"http.ingress.upgrades.websocket.active":              0,
		"http.ingress.downstream_cx_upgrades_total":           1,
	} {
		if got := p.Stat(stat); got != want {
			t.Errorf("%s = %d, want %d", stat, got, want)
		}
	}
}

// TestUpgradeHalfClose: a FIN in one direction is passed on while the other direction keeps
// flowing; the tunnel ends when both directions have ended.
func TestUpgradeHalfClose(t *testing.T) {
	t.Parallel()
	for _, clientFirst := range []bool{true, false} {
		name := "upstream first"
		if clientFirst {
			name = "client first"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, up := upgStart(t, harness.Config{HCM: upgHCMfoo})
			c, u, off := upgOpenTunnel(t, p, up, upgReq("/half", "Upgrade", "foo"), "foo")
			headLen := len(u.Received())
			first, second := c, u // first half-closes, second keeps writing
			firstOff, secondOff := off, headLen
			if !clientFirst {
				first, second = u, c
				firstOff, secondOff = headLen, off
			}
			first.Write("last words")
			first.CloseWrite()
			if got := second.WaitForEOF(upgWait)[secondOff:]; got != "last words" {
				t.Fatalf("peer got %q before EOF, want %q", got, "last words")
			}
			if first.Closed() {
				t.Fatalf("the half-closing side was closed too")
			}
			for _, msg := range []string{"still ", "flowing"} {
				second.Write(msg)
				time.Sleep(50 * time.Millisecond)
			}
			if got := first.WaitForData("still flowing", upgWait)[firstOff:]; got != "still flowing" {
				t.Fatalf("half-closed side got %q", got)
			}
			if got := p.Stat(upgActiveStat); got != 1 {
				t.Errorf("%s = %d with one direction open, want 1", upgActiveStat, got)
			}
			second.CloseWrite()
			first.WaitForEOF(upgWait)
			upgEnd(t, p)
		})
	}
}

// TestUpgradeCloseFlushes: when one side closes, the other receives everything already sent,
// then an EOF, and the proxy closes it instead of keeping a dead tunnel.
func TestUpgradeCloseFlushes(t *testing.T) {
	t.Parallel()
	for _, clientCloses := range []bool{true, false} {
		name := "upstream closes"
		if clientCloses {
			name = "client closes"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, up := upgStart(t, harness.Config{HCM: upgHCMws})
			c, u, off := upgOpenTunnel(t, p, up, upgWSReq("/close"), "websocket")
			headLen := len(u.Received())
			closer, peer, peerOff := c, u, headLen
			if !clientCloses {
				closer, peer, peerOff = u, c, off
			}
			tail := make([]byte, 128<<10)
			rand.Read(tail)
			if _, err := closer.Conn().Write(tail); err != nil {
				t.Fatal(err)
			}
			closer.Close()
			if got := peer.WaitForEOF(upgWait)[peerOff:]; got != string(tail) {
				t.Fatalf("peer got %d bytes before EOF, want the %d sent", len(got), len(tail))
			}
			// The peer's side is dead too: its writes must start failing and the tunnel must end
			// without the peer closing.
			deadline := time.Now().Add(upgWait)
			for {
				if _, err := peer.Conn().Write([]byte("x")); err != nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("peer can still write %v after the other side closed", upgWait)
				}
				time.Sleep(20 * time.Millisecond)
			}
			upgEnd(t, p)
		})
	}
}

// TestUpgradeIdleTimeout: after the 101 the route idle_timeout (else stream_idle_timeout) ends an
// idle tunnel and closes both sides; traffic either way keeps it alive.
func TestUpgradeIdleTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, hcm, route string
		expires          bool
	}{
		{"route idle_timeout", upgHCMws, "idle_timeout: 1s", true},
		{"hcm stream_idle_timeout", upgHCMws + "\nstream_idle_timeout: 1s", "", true},
		{"route overrides hcm", upgHCMws + "\nstream_idle_timeout: 1s", "idle_timeout: 5s", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, up := upgStart(t, harness.Config{HCM: tc.hcm, RouteExtra: tc.route})
			c, u, _ := upgOpenTunnel(t, p, up, upgWSReq("/idle"), "websocket")
			// 700 ms of traffic, alternating directions, every 100 ms: never idle for 1 s, even on
			// a loaded machine.
			for i := 0; i < 7; i++ {
				if i%2 == 0 {
					c.Write("u")
				} else {
					u.Write("d")
				}
				time.Sleep(100 * time.Millisecond)
			}
			if c.Closed() || u.Closed() {
				t.Fatalf("a busy tunnel was closed")
			}
			if !tc.expires {
				time.Sleep(1500 * time.Millisecond)
				c.Write("alive")
				u.WaitForData("alive", upgWait)
				c.Close()
				u.WaitForEOF(upgWait)
				u.Close()
				upgEnd(t, p)
				return
			}
			start := time.Now()
			c.WaitForEOF(upgWait)
			u.WaitForEOF(upgWait)
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("idle tunnel closed after %v, want about 1s", d)
			}
			if got := p.Stat("http.ingress.downstream_rq_idle_timeout"); got != 1 {
				t.Errorf("downstream_rq_idle_timeout = %d, want 1", got)
			}
			upgEnd(t, p)
		})
	}
}

// TestUpgradeIdleTimeoutPerTunnel: tunnels with different idle timeouts each end on their own
// time. The short one opens after the long one, so its deadline is the earlier of the two when it
// arrives (one sweep timer serves every engine-carried tunnel).
func TestUpgradeIdleTimeoutPerTunnel(t *testing.T) {
	t.Parallel()
	routes := "- match: {prefix: \"/long\"}\n  route: {cluster: app, idle_timeout: 4s}\n" +
		"- match: {prefix: \"/\"}\n  route: {cluster: app, idle_timeout: 0.5s}\n"
	p, up := upgStart(t, harness.Config{HCM: upgHCMws, Routes: routes})
	lc, lu, _ := upgOpenTunnel(t, p, up, upgWSReq("/long"), "websocket")
	sc, su, _ := upgOpenTunnel(t, p, up, upgWSReq("/short"), "websocket")
	opened := time.Now()
	sc.WaitForEOF(upgWait)
	su.WaitForEOF(upgWait)
	if d := time.Since(opened); d > 2500*time.Millisecond {
		t.Errorf("the 0.5s tunnel closed after %v: it waited for the 4s tunnel's deadline", d)
	}
	if lc.Closed() || lu.Closed() {
		t.Fatal("the 4s tunnel closed with the 0.5s one")
	}
	lc.Write("still here")
	lu.WaitForData("still here", upgWait)
	if got := p.Stat("http.ingress.downstream_rq_idle_timeout"); got != 1 {
		t.Errorf("downstream_rq_idle_timeout = %d, want 1", got)
	}
	lc.Close()
	lu.WaitForEOF(upgWait)
	lu.Close()
	upgEnd(t, p)
}

// TestUpgradeMaxStreamDuration: common_http_protocol_options.max_stream_duration ends a tunnel
// even while it is busy.
func TestUpgradeMaxStreamDuration(t *testing.T) {
	t.Parallel()
	p, up := upgStart(t, harness.Config{HCM: upgHCMws + "\ncommon_http_protocol_options:\n  max_stream_duration: 0.5s"})
	start := time.Now()
	c, u, _ := upgOpenTunnel(t, p, up, upgWSReq("/max"), "websocket")
	for !c.Closed() && time.Since(start) < upgWait {
		if _, err := c.Conn().Write([]byte("busy")); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.WaitForEOF(upgWait)
	u.WaitForEOF(upgWait)
	if d := time.Since(start); d < 400*time.Millisecond || d > 2*time.Second {
		t.Errorf("tunnel ended after %v, want about 0.5s", d)
	}
	if got := p.Stat("http.ingress.downstream_rq_max_duration_reached"); got != 1 {
		t.Errorf("downstream_rq_max_duration_reached = %d, want 1", got)
	}
	upgEnd(t, p)
}

// TestUpgradeSlowReader: a side that stops reading stops the proxy reading from the other side,
// so the writer blocks instead of the bytes piling up in the proxy; then everything arrives
// byte-exact. Both ends are plain sockets with small buffers, so only the proxy's own sockets
// (whose kernel buffers autotune to a few MiB) hold bytes in flight.
func TestUpgradeSlowReader(t *testing.T) {
	t.Parallel()
	for _, slowClient := range []bool{true, false} {
		name := "slow upstream"
		if slowClient {
			name = "slow client"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			p := harness.Start(t, harness.Config{UpstreamPort: ln.Addr().(*net.TCPAddr).Port, HCM: upgHCMws}.YAML())
			client, err := net.DialTimeout("tcp", p.Addr(""), upgWait)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if _, err := client.Write([]byte(upgWSReq("/slow"))); err != nil {
				t.Fatal(err)
			}
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(upgWait))
			upstream, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer upstream.Close()
			upBR := bufio.NewReader(upstream)
			upstream.SetReadDeadline(time.Now().Add(upgWait))
			if _, err := http.ReadRequest(upBR); err != nil {
				t.Fatal(err)
			}
			upstream.Write([]byte(upgSwitching("websocket")))
			clBR := bufio.NewReader(client)
			client.SetReadDeadline(time.Now().Add(upgWait))
			if resp, err := http.ReadResponse(clBR, nil); err != nil || resp.StatusCode != 101 {
				t.Fatalf("handshake: %v %v", resp, err)
			}
			writer, reader, br := upstream.(*net.TCPConn), client.(*net.TCPConn), clBR
			if !slowClient {
				writer, reader, br = client.(*net.TCPConn), upstream.(*net.TCPConn), upBR
			}
			writer.SetWriteBuffer(64 << 10)
			reader.SetReadBuffer(64 << 10)
			upgAssertBackPressure(t, writer, reader, br)
			client.Close()
			upstream.Close()
			upgEnd(t, p)
		})
	}
}

// upgAssertBackPressure writes 20 MiB into writer while nobody reads reader for 2 s, checks that
// the writer blocked, then reads everything from br and compares.
func upgAssertBackPressure(t *testing.T, writer net.Conn, reader net.Conn, br *bufio.Reader) {
	t.Helper()
	const total, chunk = 20 << 20, 64 << 10
	payload := make([]byte, total)
	rand.Read(payload)
	var written atomic.Int64
	writeDone := make(chan error, 1)
	writer.SetWriteDeadline(time.Now().Add(30 * time.Second))
	go func() {
		for off := 0; off < total; off += chunk {
			n, err := writer.Write(payload[off : off+chunk])
			written.Add(int64(n))
			if err != nil {
				writeDone <- err
				return
			}
		}
		writeDone <- nil
	}()
	// Past the kernel buffers the writer must be blocked: far from 20 MiB written, and no
	// progress at all in the last half second.
	time.Sleep(1500 * time.Millisecond)
	w1 := written.Load()
	time.Sleep(500 * time.Millisecond)
	w2 := written.Load()
	t.Logf("%d KiB written while nobody read", w2>>10)
	if w2 >= 12<<20 || w2 != w1 {
		t.Fatalf("%d KiB written, then %d KiB more, while nobody read: the proxy does not push back", w1>>10, (w2-w1)>>10)
	}
	reader.SetReadDeadline(time.Now().Add(30 * time.Second))
	got := make([]byte, total)
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("reading the tunnel: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("the %d MiB arrived corrupted", total>>20)
	}
	if err := <-writeDone; err != nil {
		t.Fatalf("write: %v", err)
	}
}

// TestUpgradeFilterChains: a WebSocket upgrade runs through the default chain (a 1 KiB buffer
// filter answers 413 to 2 KiB), a type with its own router-only chain passes 2 KiB intact, and a
// route can disable a filter for itself.
func TestUpgradeFilterChains(t *testing.T) {
	t.Parallel()
	hcm := `upgrade_configs:
- upgrade_type: websocket
- upgrade_type: foo
  filters:
` + upgIndent(harness.RouterFilter, "  ")
	routes := `- match: {prefix: "/nobuffer"}
  route: {cluster: app}
  typed_per_filter_config:
    envoy.filters.http.buffer:
      "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
      disabled: true
- match: {prefix: "/"}
  route: {cluster: app}`
	p, up := upgStart(t, harness.Config{HCM: hcm, Routes: routes, Filters: harness.BufferFilter(1024) + "\n" + harness.RouterFilter})
	payload := make([]byte, 2048)
	rand.Read(payload)

	t.Run("websocket on the default chain", func(t *testing.T) {
		c := harness.Dial(t, p.Addr(""))
		c.Write(upgWSReq("/ws") + string(payload))
		got := c.WaitForEOF(upgWait)
		if upgStatus(t, got) != 413 {
			t.Fatalf("client got %q, want 413", got)
		}
		up.NoConnection(200 * time.Millisecond)
		upgEnd(t, p)
	})
	for _, tc := range []struct{ name, path, typ, req string }{
		{"foo on its own chain", "/foo", "foo", upgReq("/foo", "Upgrade", "foo")},
		{"websocket with the filter disabled on the route", "/nobuffer", "websocket", upgWSReq("/nobuffer")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := harness.Dial(t, p.Addr(""))
			c.Write(tc.req + string(payload))
			u := up.Accept(upgWait)
			head := u.WaitForHead(upgWait)
			if !strings.HasPrefix(head, "GET "+tc.path+" ") {
				t.Fatalf("upstream head %q", head)
			}
			u.Write(upgSwitching(tc.typ))
			if h := c.WaitForHead(upgWait); upgStatus(t, h) != 101 {
				t.Fatalf("client got %q, want 101", h)
			}
			if got := u.WaitForLen(len(head)+len(payload), upgWait)[len(head):]; got != string(payload) {
				t.Fatalf("upstream got %d tunnel bytes, not the 2 KiB sent", len(got))
			}
			c.Close()
			u.WaitForEOF(upgWait)
			u.Close()
			upgEnd(t, p)
		})
	}
	if got := p.Stat("http.ingress.downstream_rq_4xx"); got != 1 {
		t.Errorf("downstream_rq_4xx = %d, want 1 (the 413)", got)
	}
}

// upgIndent prefixes every line of s with pad, to nest a YAML snippet.
func upgIndent(s, pad string) string {
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

// upgEchoApp is a WebSocket server (gorilla) that answers every message with "echo:" and the
// message, and records the Connection value each handshake arrived with.
func upgEchoApp(t *testing.T) (port int, sawConnection *atomic.Value) {
	sawConnection = &atomic.Value{}
	upgrader := websocket.Upgrader{}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawConnection.Store(r.Header.Get("Connection"))
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			k, m, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(k, append([]byte("echo:"), m...)); err != nil {
				return
			}
		}
	}))
	t.Cleanup(app.Close)
	return app.Listener.Addr().(*net.TCPAddr).Port, sawConnection
}

// TestUpgradeGorillaWebSocket: a real WebSocket client and server talk through the proxy: text,
// binary, a 70 KB message, ping/pong and the close handshake.
func TestUpgradeGorillaWebSocket(t *testing.T) {
	t.Parallel()
	port, sawConnection := upgEchoApp(t)
	p := harness.Start(t, harness.Config{UpstreamPort: port, HCM: upgHCMws}.YAML())
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+p.Addr("")+"/chat", nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(upgWait))
	for _, m := range []struct {
		kind int
		data string
	}{{websocket.TextMessage, "hello"}, {websocket.BinaryMessage, "\x00\x01\xff"}, {websocket.TextMessage, strings.Repeat("z", 70000)}} {
		if err := ws.WriteMessage(m.kind, []byte(m.data)); err != nil {
			t.Fatal(err)
		}
		k, got, err := ws.ReadMessage()
		if err != nil || k != m.kind || string(got) != "echo:"+m.data {
			t.Fatalf("echo of %d bytes: kind %d, %d bytes, err %v", len(m.data), k, len(got), err)
		}
	}
	pong := make(chan string, 1)
	ws.SetPongHandler(func(s string) error { pong <- s; return nil })
	ws.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(time.Second))
	go ws.ReadMessage() // runs the pong handler, then sees the close
	select {
	case s := <-pong:
		if s != "p1" {
			t.Errorf("pong %q", s)
		}
	case <-time.After(upgWait):
		t.Fatal("no pong through the proxy")
	}
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	ws.Close()
	upgEnd(t, p)
	if got := p.Stat("http.ingress.upgrades.websocket.established"); got != 1 {
		t.Errorf("established = %d, want 1", got)
	}
	if got, _ := sawConnection.Load().(string); !strings.EqualFold(got, "upgrade") {
		t.Errorf("app saw Connection %q", got)
	}
}

// TestUpgradeCoderWebSocket: a second client implementation (coder/websocket) against the gorilla
// server: messages up to 1 MiB, a ping, and a clean close handshake through the proxy.
func TestUpgradeCoderWebSocket(t *testing.T) {
	t.Parallel()
	port, _ := upgEchoApp(t)
	p := harness.Start(t, harness.Config{UpstreamPort: port, HCM: upgHCMws}.YAML())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := coderws.Dial(ctx, "ws://"+p.Addr("")+"/chat", nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer c.CloseNow()
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.SetReadLimit(2 << 20)
	big := make([]byte, 1<<20)
	rand.Read(big)
	for _, m := range []struct {
		kind coderws.MessageType
		data []byte
	}{{coderws.MessageText, []byte("hi")}, {coderws.MessageBinary, big}} {
		if err := c.Write(ctx, m.kind, m.data); err != nil {
			t.Fatal(err)
		}
		k, got, err := c.Read(ctx)
		if err != nil || k != m.kind || !bytes.Equal(got, append([]byte("echo:"), m.data...)) {
			t.Fatalf("echo of %d bytes: kind %v, %d bytes, err %v", len(m.data), k, len(got), err)
		}
	}
	readCtx := c.CloseRead(ctx) // a reader must run for Ping and Close to see their answers
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping through the proxy: %v", err)
	}
	if err := c.Close(coderws.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close handshake through the proxy: %v", err)
	}
	<-readCtx.Done()
	upgEnd(t, p)
	if got := p.Stat("http.ingress.upgrades.websocket.bytes_to_downstream"); got < 1<<20 {
		t.Errorf("bytes_to_downstream = %d, want at least 1 MiB", got)
	}
}
