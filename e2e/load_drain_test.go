package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// loadDrainClient is one WebSocket client of TestLoadDrainWebSockets.
type loadDrainClient struct {
	ws         *websocket.Conn
	lastBefore atomic.Int64 // the last message number written before the SIGTERM
	// Owned by the reader until done is closed.
	echoed   int64 // the last message number echoed back, in order
	code     int   // the close code received, -1 for an error that was not a Close
	closedAt time.Time
	err      error
	done     chan struct{}
}

// TestLoadDrainWebSockets: SIGTERM with 1000 live WebSocket tunnels (or
// SWITCHYARD_DRAIN_TUNNELS) and --drain-time-s 2. The tunnels keep carrying messages through the
// drain time, so every message sent before the signal comes back; at the deadline every client
// and the app's end of every tunnel get a Close with code 1001; the process exits soon after.
func TestLoadDrainWebSockets(t *testing.T) {
	loadSkipShort(t)
	n := loadEnv(t, "SWITCHYARD_DRAIN_TUNNELS", 1000)
	const drain = 2 * time.Second
	var app1001, appOther atomic.Int64
	var appErr atomic.Value // the first way an app's end of a tunnel ended other than with a Close 1001
	upgrader := websocket.Upgrader{}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			k, m, err := c.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) && ce.Code == websocket.CloseGoingAway {
					app1001.Add(1)
				} else {
					appErr.CompareAndSwap(nil, "reading: "+err.Error())
					appOther.Add(1)
				}
				return
			}
			if err := c.WriteMessage(k, m); err != nil {
				appErr.CompareAndSwap(nil, "echoing: "+err.Error())
				appOther.Add(1)
				return
			}
		}
	}))
	t.Cleanup(app.Close)
	p := harness.StartNoRace(t, harness.Config{UpstreamPort: portOf(t, app.Listener.Addr().String()), HCM: upgHCMws, Cluster: loadCluster}.YAML(),
		"--drain-time-s", strconv.Itoa(int(drain/time.Second)), "-l", "info")

	clients := make([]*loadDrainClient, n)
	t.Cleanup(func() {
		for _, c := range clients {
			if c != nil {
				c.ws.Close()
			}
		}
	})
	dialer := websocket.Dialer{HandshakeTimeout: loadWait}
	start := time.Now()
	if err := loadParallel(n, 32, func(i int) error {
		ws, _, err := dialer.Dial("ws://"+p.Addr("")+"/drain", nil)
		if err != nil {
			return err
		}
		clients[i] = &loadDrainClient{ws: ws, done: make(chan struct{})}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p.WaitStat(upgActiveStat, int64(n), loadWait)
	t.Logf("%d WebSockets open in %v", n, time.Since(start).Round(time.Millisecond))

	// Each client sends a numbered message every 500 ms and reads the echoes.
	var signalled atomic.Bool
	for i, c := range clients {
		go func() {
			defer close(c.done)
			for {
				_, m, err := c.ws.ReadMessage()
				if err != nil {
					c.closedAt = time.Now()
					c.ws.Close() // as a client does once the close handshake is done
					var ce *websocket.CloseError
					if errors.As(err, &ce) {
						c.code = ce.Code
					} else {
						c.code, c.err = -1, err
					}
					return
				}
				if seq, _ := strconv.ParseInt(string(m), 10, 64); seq != c.echoed+1 && c.err == nil {
					c.err = fmt.Errorf("echo %q after %d: a message was lost or reordered", m, c.echoed)
				}
				c.echoed++
			}
		}()
		go func() {
			time.Sleep(time.Duration(i%500) * time.Millisecond) // spread the clients over the period
			for seq := int64(1); ; seq++ {
				before := !signalled.Load()
				if c.ws.WriteMessage(websocket.TextMessage, []byte(strconv.FormatInt(seq, 10))) != nil {
					return
				}
				if before {
					c.lastBefore.Store(seq)
				}
				select {
				case <-c.done:
					return
				case <-time.After(500 * time.Millisecond):
				}
			}
		}()
	}
	time.Sleep(time.Second)
	signalled.Store(true)
	sigterm := time.Now()
	p.Signal(syscall.SIGTERM)

	var first, last time.Duration
	var bad []string
	for i, c := range clients {
		select {
		case <-c.done:
		case <-time.After(time.Until(sigterm.Add(drain + 5*time.Second))):
			t.Fatalf("client #%d had no Close %v after the SIGTERM", i, drain+5*time.Second)
		}
		d := c.closedAt.Sub(sigterm)
		if first == 0 || d < first {
			first = d
		}
		last = max(last, d)
		switch {
		case c.code != websocket.CloseGoingAway:
			bad = append(bad, fmt.Sprintf("#%d: close code %d (%v)", i, c.code, c.err))
		case c.err != nil:
			bad = append(bad, fmt.Sprintf("#%d: %v", i, c.err))
		case c.echoed < c.lastBefore.Load():
			bad = append(bad, fmt.Sprintf("#%d: %d messages sent before the SIGTERM, %d echoed", i, c.lastBefore.Load(), c.echoed))
		}
	}
	exitErr := p.WaitExit(time.Until(sigterm.Add(drain + 3*time.Second)))
	exited := time.Since(sigterm)
	t.Logf("after the SIGTERM: Close 1001 reached the clients between %v and %v; the process exited after %v",
		first.Round(time.Millisecond), last.Round(time.Millisecond), exited.Round(time.Millisecond))
	if exitErr != nil {
		t.Errorf("exit: %v", exitErr)
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d clients went wrong; the first: %s", len(bad), n, strings.Join(bad[:min(len(bad), 5)], "; "))
	}
	if first < drain-100*time.Millisecond {
		t.Errorf("a tunnel was closed %v after the SIGTERM, before the %v drain time ran out", first, drain)
	}
	deadline := time.Now().Add(loadWait)
	for app1001.Load()+appOther.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := app1001.Load(); got != int64(n) {
		t.Errorf("the app saw Close 1001 on %d of %d tunnels (%d ended otherwise, the first %v)", got, n, appOther.Load(), appErr.Load())
	}
}

// TestLoadDrainBusyApp: a busy app still has messages to answer when the drain time runs out.
// The client answers the proxy's Close 1001 and hangs up at once; the proxy must still keep the
// app's connection until the app has read its Close and hung up too (the server's close grace
// bounds the wait), not cut it: a cut connection resets the app's next write, and an app that
// echoes before it reads never sees the Close.
func TestLoadDrainBusyApp(t *testing.T) {
	appSaw := make(chan string, 1)
	upgrader := websocket.Upgrader{}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			k, m, err := c.ReadMessage()
			if err != nil {
				appSaw <- "reading: " + err.Error()
				return
			}
			time.Sleep(250 * time.Millisecond) // busy
			if err := c.WriteMessage(k, m); err != nil {
				appSaw <- "echoing: " + err.Error()
				return
			}
		}
	}))
	t.Cleanup(app.Close)
	p := harness.Start(t, harness.Config{UpstreamPort: portOf(t, app.Listener.Addr().String()), HCM: upgHCMws}.YAML(),
		"--drain-time-s", "1")
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+p.Addr("")+"/busy", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	clientSaw := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				ws.Close() // hang up as soon as the close handshake is done
				clientSaw <- err
				return
			}
		}
	}()
	p.Signal(syscall.SIGTERM)
	time.Sleep(850 * time.Millisecond)
	for _, m := range []string{"one", "two", "three"} { // still queued at the app at the deadline
		if err := ws.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-clientSaw:
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Errorf("the client saw %v, want Close 1001", err)
		}
	case <-time.After(loadWait):
		t.Fatal("the client saw no Close")
	}
	select {
	case got := <-appSaw:
		if want := "reading: websocket: close 1001 (going away)"; got != want {
			t.Errorf("the app's end: %s; want %s", got, want)
		}
	case <-time.After(loadWait):
		t.Fatal("the app's end of the tunnel never ended")
	}
	if err := p.WaitExit(5 * time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
}

// loadConnLimitYAML puts envoy.filters.network.connection_limit with max_connections in front of the
// connection manager of cfg.
func loadConnLimitYAML(cfg harness.Config, maxConns int) string {
	const hcm = "      - name: envoy.filters.network.http_connection_manager\n"
	limit := fmt.Sprintf(`      - name: envoy.filters.network.connection_limit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit
          stat_prefix: limit
          max_connections: %d
`, maxConns)
	return strings.Replace(cfg.YAML(), hcm, limit+hcm, 1)
}

// TestLoadConnectionLimit: with envoy.filters.network.connection_limit (max_connections 100) in
// front of the connection manager, 100 WebSocket tunnels open, the next connection is closed
// without reaching the upstream, and a closed tunnel makes room for a new one. It is skipped
// while the config loader does not accept the filter.
func TestLoadConnectionLimit(t *testing.T) {
	const limit = 100
	var mu sync.Mutex
	ups := map[string]*loadEnd{}
	up := newLoadUpstream(t, "websocket", func(path string, e *loadEnd) {
		mu.Lock()
		ups[path] = e
		mu.Unlock()
	})
	yaml := loadConnLimitYAML(harness.Config{UpstreamPort: up.port(), HCM: upgHCMws}, limit)
	if code, _, stderr := runCLI(t, "--mode", "validate", "-c", writeConfig(t, yaml)); code != 0 {
		t.Skipf("envoy.filters.network.connection_limit is not supported by the config loader yet: %s", strings.TrimSpace(stderr))
	}
	p := harness.Start(t, yaml, "-l", "info")
	clients := make([]*loadEnd, limit)
	t.Cleanup(func() {
		loadCloseAll(clients)
		mu.Lock()
		for _, u := range ups {
			u.Close()
		}
		mu.Unlock()
	})
	loadOpen(t, p, up, clients, 0, limit, func(i int) string { return upgWSReq(fmt.Sprintf("/limit/%d", i)) }, 0)

	// One over the limit: accepted by the kernel, then closed without a response or an upstream.
	over, err := net.DialTimeout("tcp", p.Addr(""), loadWait)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	io.WriteString(over, upgWSReq("/over"))
	over.SetReadDeadline(time.Now().Add(loadWait))
	if b, err := io.ReadAll(over); len(b) > 0 || loadIsTimeout(err) {
		t.Fatalf("connection %d over the limit got %q, %v; want it closed without a response", limit+1, b, err)
	}
	mu.Lock()
	_, reached := ups["/over"]
	mu.Unlock()
	if reached {
		t.Error("the connection over the limit reached the upstream")
	}
	if got := p.Stat("connection_limit.limit.limited_connections"); got < 1 {
		t.Errorf("connection_limit.limit.limited_connections = %d, want at least 1", got)
	}

	// A tunnel that ends makes room.
	clients[0].Close()
	mu.Lock()
	ups["/limit/0"].Close()
	mu.Unlock()
	p.WaitStat(upgActiveStat, limit-1, loadWait)
	deadline := time.Now().Add(loadWait)
	for {
		c, err := loadDial(p.Addr(""), upgWSReq("/again"), 0)
		if err == nil {
			c.Close()
			up.wait(t, limit+1)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room for a new tunnel after one closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	loadCloseAll(clients)
	mu.Lock()
	for _, u := range ups {
		u.Close()
	}
	mu.Unlock()
	upgEnd(t, p)
}

// loadIsTimeout reports whether err is a deadline expiring.
func loadIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
