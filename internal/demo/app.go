// Package demo is the small WebSocket chat app that `switchyard demo` puts behind its front and
// sidecar proxies: a page with a chat box, and a WebSocket endpoint that echoes each message to
// every open socket.
package demo

import (
	_ "embed"
	"net"
	"net/http"
	"sync"

	"github.com/gorilla/websocket"
)

//go:embed index.html
var indexHTML []byte

// App is the chat app. It is a plain HTTP/1.1 server, like the apps Switchyard fronts.
type App struct {
	srv      *http.Server
	ln       net.Listener
	upgrader websocket.Upgrader
	mu       sync.Mutex
	peers    map[*websocket.Conn]*sync.Mutex
	done     chan struct{}
}

// StartApp serves the app on addr ("127.0.0.1:0" for any port).
func StartApp(addr string) (*App, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	a := &App{ln: ln, peers: map[*websocket.Conn]*sync.Mutex{}, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(indexHTML)
	})
	mux.HandleFunc("/ws", a.serveWS)
	a.srv = &http.Server{Handler: mux}
	go func() {
		defer close(a.done)
		a.srv.Serve(ln)
	}()
	return a, nil
}

// Addr is where the app listens.
func (a *App) Addr() net.Addr { return a.ln.Addr() }

// Close stops the app and closes every socket.
func (a *App) Close() {
	a.srv.Close()
	a.mu.Lock()
	for c := range a.peers {
		c.Close()
	}
	a.mu.Unlock()
	<-a.done
}

func (a *App) serveWS(w http.ResponseWriter, r *http.Request) {
	c, err := a.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	a.mu.Lock()
	a.peers[c] = &sync.Mutex{}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.peers, c)
		a.mu.Unlock()
		c.Close()
	}()
	for {
		kind, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		a.mu.Lock()
		for p, wmu := range a.peers {
			wmu.Lock()
			p.WriteMessage(kind, msg)
			wmu.Unlock()
		}
		a.mu.Unlock()
	}
}
