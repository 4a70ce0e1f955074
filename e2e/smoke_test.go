package e2e

import (
	"bytes"
	"crypto/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

func echoServer(t *testing.T) *httptest.Server {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			k, m, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(k, m); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestWebSocketRoundTrip1MiB(t *testing.T) {
	app := echoServer(t)
	port := app.Listener.Addr().(*net.TCPAddr).Port
	p := harness.Start(t, harness.Config{UpstreamPort: port, HCM: "upgrade_configs:\n- upgrade_type: websocket"}.YAML())
	d := websocket.Dialer{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
	c, resp, err := d.Dial("ws://"+p.Addr("")+"/echo", nil)
	if err != nil {
		t.Fatalf("dial: %v (resp %v)\n%s", err, resp, p.Log())
	}
	msg := make([]byte, 1<<20)
	rand.Read(msg)
	if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, got, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo mismatch: %d bytes back", len(got))
	}
	if v := p.Stat("http.ingress.downstream_cx_upgrades_active"); v != 1 {
		t.Errorf("upgrades_active = %d, want 1", v)
	}
	c.Close()
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0, 5*time.Second)
	if v := p.Stat("http.ingress.upgrades.websocket.established"); v != 1 {
		t.Errorf("established = %d\n%s", v, p.Log())
	}
}
