package e2e

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// drainTunnel opens a raw upgrade tunnel through p to up and returns both ends.
func drainTunnel(t *testing.T, p *harness.Proxy, up *harness.RawUpstream) (client, upstream *harness.RawConn) {
	t.Helper()
	c := harness.Dial(t, p.Addr(""))
	c.Write("GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	u := up.Accept(5 * time.Second)
	u.WaitForHead(5 * time.Second)
	u.Write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	c.WaitForHead(5 * time.Second)
	return c, u
}

// TestDrainKeepsTunnels: /drain_listeners stops new connections and closes idle keep-alive ones,
// while an established tunnel keeps flowing both ways; SIGTERM then waits for the tunnel to end
// and exits 0 at once when it does.
func TestDrainKeepsTunnels(t *testing.T) {
	t.Parallel()
	up := harness.NewRawUpstream(t)
	p := harness.Start(t, harness.Config{UpstreamPort: up.Port(), HCM: "upgrade_configs: [{upgrade_type: websocket}]"}.YAML(),
		"--drain-time-s", "30")
	c, u := drainTunnel(t, p, up)

	idle := harness.Dial(t, p.Addr(""))
	idle.Write("GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")
	u2 := up.Accept(5 * time.Second)
	u2.WaitForHead(5 * time.Second)
	u2.Write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	idle.WaitForData("ok", 5*time.Second)

	resp, err := http.Post("http://"+p.Admin+"/drain_listeners?graceful", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("drain_listeners: %v %v", resp, err)
	}
	resp.Body.Close()
	idle.WaitForEOF(5 * time.Second)
	if _, err := net.DialTimeout("tcp", p.Addr(""), time.Second); err == nil {
		t.Error("the listener still accepts connections after a drain")
	}
	if resp, err := http.Get("http://" + p.Admin + "/ready"); err != nil || resp.StatusCode != 503 {
		t.Errorf("/ready while draining: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	c.Write("still up")
	u.WaitForData("still up", 5*time.Second)
	u.Write("still down")
	c.WaitForData("still down", 5*time.Second)

	p.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	if p.Exited() {
		t.Fatal("SIGTERM killed a live tunnel instead of draining")
	}
	c.Write("after sigterm")
	u.WaitForData("after sigterm", 5*time.Second)
	c.CloseWrite()
	u.WaitForEOF(5 * time.Second)
	u.Close()
	c.WaitForEOF(5 * time.Second)
	start := time.Now()
	if err := p.WaitExit(5 * time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("exit took %v after the last tunnel ended", d)
	}
	if !strings.Contains(p.Log(), "draining") {
		t.Errorf("no drain in the log:\n%s", p.Log())
	}
}

// TestDrainTimeClosesTunnels: a tunnel still open when --drain-time-s runs out is closed on both
// sides and the process exits; a second SIGTERM exits at once.
func TestDrainTimeClosesTunnels(t *testing.T) {
	t.Parallel()
	t.Run("deadline", func(t *testing.T) {
		t.Parallel()
		up := harness.NewRawUpstream(t)
		p := harness.Start(t, harness.Config{UpstreamPort: up.Port(), HCM: "upgrade_configs: [{upgrade_type: websocket}]"}.YAML(),
			"--drain-time-s", "1")
		c, u := drainTunnel(t, p, up)
		start := time.Now()
		p.Signal(syscall.SIGTERM)
		c.WaitForEOF(5 * time.Second)
		u.WaitForEOF(5 * time.Second)
		if d := time.Since(start); d < 800*time.Millisecond {
			t.Errorf("tunnel closed after %v, before the drain time", d)
		}
		if err := p.WaitExit(5 * time.Second); err != nil {
			t.Fatalf("exit: %v", err)
		}
	})
	t.Run("second signal", func(t *testing.T) {
		t.Parallel()
		up := harness.NewRawUpstream(t)
		p := harness.Start(t, harness.Config{UpstreamPort: up.Port(), HCM: "upgrade_configs: [{upgrade_type: websocket}]"}.YAML(),
			"--drain-time-s", "60")
		c, _ := drainTunnel(t, p, up)
		p.Signal(syscall.SIGTERM)
		time.Sleep(200 * time.Millisecond)
		p.Signal(syscall.SIGTERM)
		if err := p.WaitExit(5 * time.Second); err != nil {
			t.Fatalf("exit: %v", err)
		}
		c.WaitForEOF(5 * time.Second)
	})
}

// TestDrainHTTP2GoAway: draining sends an HTTP/2 client a graceful GOAWAY (NO_ERROR) while its
// extended CONNECT tunnel keeps flowing.
func TestDrainHTTP2GoAway(t *testing.T) {
	t.Parallel()
	app := harness.NewRawUpstream(t)
	p := harness.Start(t, seedYAML("a", h2ListenerConnect, app.Port(), false, "[{upgrade_type: foo}]"), "--drain-time-s", "30")
	c := dialH2(t, p.Addr(""))
	defer c.close()
	c.waitSettings()
	id := c.connect("foo", "/drain")
	u := app.Accept(5 * time.Second)
	u.WaitForHead(5 * time.Second)
	u.Write(upgSwitching("foo"))
	c.waitHead(id)

	resp, err := http.Post("http://"+p.Admin+"/drain_listeners", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code := c.waitGoAway(); code != 0 {
		t.Fatalf("GOAWAY code %v, want NO_ERROR", code)
	}
	c.send(id, "through the drain", false)
	u.WaitForData("through the drain", 5*time.Second)
	u.Write("back")
	c.waitData(id, "back")
	c.send(id, "", true)
	u.WaitForEOF(5 * time.Second)
	u.Close()
	c.waitEnd(id)
	p.WaitStat("http.a.downstream_cx_upgrades_active", 0, 5*time.Second)
}

// TestDrainDeadlineClosesWebSocketsWith1001: a WebSocket still open when the drain time runs out
// gets a Close frame with code 1001 (Going Away) on both sides — real WebSocket libraries on each
// end read it as a proper close, even while messages are flowing — and the process exits. Also in
// the seed's two-hop deployment, draining either proxy: there the HTTP/2 hop's readers write
// tunnel bytes on directly, and a deadline that finds such a write under way must still close.
func TestDrainDeadlineClosesWebSocketsWith1001(t *testing.T) {
	t.Parallel()
	drainFlags := []string{"--drain-time-s", "1"}
	tests := []struct {
		name  string
		start func(t *testing.T, appPort int) (addr string, drained *harness.Proxy)
	}{
		{"one hop", func(t *testing.T, appPort int) (string, *harness.Proxy) {
			p := harness.Start(t, harness.Config{UpstreamPort: appPort,
				HCM: "upgrade_configs: [{upgrade_type: websocket}]"}.YAML(), drainFlags...)
			return p.Addr(""), p
		}},
		{"two hops, front drained", func(t *testing.T, appPort int) (string, *harness.Proxy) {
			sidecar := harness.Start(t, seedYAML("b", h2ListenerConnect, appPort, false, "[{upgrade_type: websocket}]"))
			front := harness.Start(t, seedYAML("a", h2Listener, portOf(t, sidecar.Addr("")), true, "[{upgrade_type: websocket}]"), drainFlags...)
			return front.Addr(""), front
		}},
		{"two hops, sidecar drained", func(t *testing.T, appPort int) (string, *harness.Proxy) {
			sidecar := harness.Start(t, seedYAML("b", h2ListenerConnect, appPort, false, "[{upgrade_type: websocket}]"), drainFlags...)
			front := harness.Start(t, seedYAML("a", h2Listener, portOf(t, sidecar.Addr("")), true, "[{upgrade_type: websocket}]"))
			return front.Addr(""), sidecar
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			drain1001(t, tt.start)
		})
	}
}

// drain1001 runs TestDrainDeadlineClosesWebSocketsWith1001 on the proxies start makes: a gorilla
// client at addr, a gorilla app at appPort, messages both ways, SIGTERM to drained.
func drain1001(t *testing.T, start func(t *testing.T, appPort int) (addr string, drained *harness.Proxy)) {
	serverSaw := make(chan int, 1)
	up := websocket.Upgrader{}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					serverSaw <- ce.Code
				} else {
					serverSaw <- -1
				}
				return
			}
			// A steady stream of messages toward the client, so the close must find a boundary.
			if err := c.WriteMessage(websocket.BinaryMessage, make([]byte, 3000)); err != nil {
				return
			}
		}
	}))
	t.Cleanup(app.Close)
	addr, p := start(t, portOf(t, app.Listener.Addr().String()))
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	clientSaw := make(chan int, 1)
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					clientSaw <- ce.Code
				} else {
					clientSaw <- -1
				}
				return
			}
		}
	}()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				if c.WriteMessage(websocket.BinaryMessage, make([]byte, 2000)) != nil {
					return
				}
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	p.Signal(syscall.SIGTERM)
	for name, ch := range map[string]chan int{"client": clientSaw, "app": serverSaw} {
		select {
		case code := <-ch:
			if code != websocket.CloseGoingAway {
				t.Errorf("%s saw close code %d, want 1001", name, code)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s saw no close", name)
		}
	}
	if err := p.WaitExit(10 * time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
}
