package main

import (
	"bytes"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchyard-proxy/switchyard/internal/bench"
)

// startEcho runs the load tool's echo app and returns its address.
func startEcho(t *testing.T) string {
	t.Helper()
	e, err := bench.NewEchoServer("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Serve() }()
	t.Cleanup(func() {
		e.Close()
		<-done
	})
	return e.Addr()
}

// echoThrough makes the handshake workload's operation through the floor at addr (upgrade, one
// echo, close) with a real WebSocket client, several times, and checks each echo.
func echoThrough(t *testing.T, addr string) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	for i := range 20 {
		c, resp, err := d.Dial("ws://"+addr+"/echo", nil)
		if err != nil {
			t.Fatalf("handshake %d: %v", i, err)
		}
		if resp.StatusCode != 101 {
			t.Fatalf("handshake %d: status %d", i, resp.StatusCode)
		}
		msg := bytes.Repeat([]byte{byte('a' + i)}, 64+i)
		c.NetConn().SetDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo %d: %q, %v; want %q", i, got, err, msg)
		}
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			t.Fatalf("close %d: %v, want the echoed Close", i, err)
		}
		c.Close()
	}
}

func TestGoroutinesFloor(t *testing.T) {
	up := startEcho(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serveGoroutines(ln, up) }()
	echoThrough(t, ln.Addr().String())
	ln.Close()
	if err := <-done; err != nil {
		t.Errorf("serveGoroutines: %v", err)
	}
}

// epollLoop is what both epoll floors offer a test.
type epollLoop interface {
	run(stop *atomic.Bool) error
	port() int
}

// startLoop runs l and returns its address and a stop that waits for run to return.
func startLoop(t *testing.T, l epollLoop) (addr string, stop func()) {
	t.Helper()
	var stopped atomic.Bool
	done := make(chan error, 1)
	go func() { done <- l.run(&stopped) }()
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(l.port())).String(), func() {
		stopped.Store(true)
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}
}

func TestEventLoopFloor(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the event loop is epoll: Linux only")
	}
	up := startEcho(t)
	l, err := newEventLoop(netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort(up))
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := startLoop(t, l)
	echoThrough(t, addr)
	stop()
}

func TestCoroutinesFloor(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the coroutines' loop is epoll: Linux only")
	}
	up := startEcho(t)
	l, err := newCoroLoop(netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort(up))
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := startLoop(t, l)
	echoThrough(t, addr)
	// A tunnel still open when the loop stops: its coroutines end and close both sockets.
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop()
	c.NetConn().SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("read after the loop stopped: %v, want the connection closed", err)
	}
}

func TestModeUnknown(t *testing.T) {
	if err := run("threads", "127.0.0.1:0", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "threads") {
		t.Errorf("run(threads) = %v, want an error naming the mode", err)
	}
}
