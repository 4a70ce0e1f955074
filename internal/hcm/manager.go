// Package hcm is the HTTP connection manager: it reads requests off a downstream connection,
// gates upgrades with upgrade_configs, runs each stream through its filter chain, writes the
// response, and owns the stream's timers and stats.
package hcm

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/filter"
	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/cancelctx"
	"github.com/switchyard-proxy/switchyard/internal/codec/http1"
	"github.com/switchyard-proxy/switchyard/internal/codec/http2"
	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/memacct"
	"github.com/switchyard-proxy/switchyard/internal/rawsys"
	"github.com/switchyard-proxy/switchyard/internal/stats"
)

// namedFactory is one compiled chain entry.
type namedFactory struct {
	name    string
	factory filter.Factory
}

// Manager serves one listener's connections with one compiled HCM config. It is immutable.
type Manager struct {
	cfg          *config.HCM
	bufferLimit  int
	stats        *Stats
	log          *slog.Logger
	defaultChain []namedFactory
	chains       map[*config.HTTPFilter]namedFactory
	draining     atomic.Bool
	drainStart   atomic.Int64 // unix nanos when the drain began
	drainGradual bool         // set before draining flips, read after
	drainOver    time.Duration
	h2cfg        http2.ServerConfig
	shedRequest  func() bool      // set before serving: true sheds a new request (stop_accepting_requests); nil never
	memory       *memacct.Tracker // set before serving: opens each stream's buffer account; nil: no accounting

	liveMu  sync.Mutex
	live    map[drainer]struct{}    // open connections, told when the listener drains
	tunnels map[openTunnel]struct{} // open tunnels, closed cleanly when the drain time runs out

	// The parked tunnels' idle timeouts (see watchIdle), guarded by liveMu.
	idleTimer *time.Timer
	idleNext  time.Time // when idleTimer fires; zero: it is not set
}

// CloseTunnels ends every open tunnel cleanly, at the end of the drain time: a WebSocket gets a
// Close frame with code 1001 (Going Away) in both directions, placed between frames; other
// upgrades get a FIN or END_STREAM each way. The peers then close, and the server closes what
// is left shortly after.
func (m *Manager) CloseTunnels() {
	m.liveMu.Lock()
	ts := make([]openTunnel, 0, len(m.tunnels))
	for t := range m.tunnels {
		ts = append(ts, t)
	}
	m.liveMu.Unlock()
	for _, t := range ts {
		t.goingAway()
	}
}

// AbortTunnels tears down the tunnels the tunnel engine carries, for a server closing at once:
// their connections have no goroutine that would see the server's context end.
func (m *Manager) AbortTunnels() {
	m.liveMu.Lock()
	var ts []openTunnel
	for t := range m.tunnels {
		ts = append(ts, t)
	}
	m.liveMu.Unlock()
	for _, t := range ts {
		t.abortEngine()
	}
}

// drainer is an open connection that can be asked to wind down: an idle HTTP/1.1 connection
// closes, an HTTP/2 connection sends GOAWAY; requests in flight and tunnels go on.
type drainer interface{ drain() }

func (m *Manager) track(d drainer) (untrack func()) {
	m.liveMu.Lock()
	m.live[d] = struct{}{}
	m.liveMu.Unlock()
	if m.draining.Load() {
		d.drain()
	}
	return func() {
		m.liveMu.Lock()
		delete(m.live, d)
		m.liveMu.Unlock()
	}
}

// New compiles the HCM's filter chains with the given builders (by filter name).
func New(cfg *config.HCM, bufferLimit int, st *stats.Store, builders map[string]filter.Builder, log *slog.Logger) (*Manager, error) {
	if bufferLimit <= 0 {
		bufferLimit = config.DefaultBufferLimit
	}
	m := &Manager{cfg: cfg, bufferLimit: bufferLimit, stats: newStats(st, cfg), log: log,
		chains: map[*config.HTTPFilter]namedFactory{}, live: map[drainer]struct{}{},
		tunnels: map[openTunnel]struct{}{}}
	maxKB := cfg.MaxRequestHeadersKB
	if maxKB <= 0 {
		maxKB = config.DefaultMaxHeadersKB
	}
	m.h2cfg = h2Config(cfg.HTTP2, maxKB, cfg.DrainTimeout, http2.NewStats(st.Scope("http."+cfg.StatPrefix+".http2")))
	compile := func(fs []*config.HTTPFilter) ([]namedFactory, error) {
		out := make([]namedFactory, 0, len(fs))
		for _, f := range fs {
			b := builders[f.Name]
			if b == nil {
				return nil, fmt.Errorf("http filter %q is not supported", f.Name)
			}
			fac, err := b(f.Config)
			if err != nil {
				return nil, err
			}
			nf := namedFactory{name: f.Name, factory: fac}
			m.chains[f] = nf
			out = append(out, nf)
		}
		return out, nil
	}
	var err error
	if m.defaultChain, err = compile(cfg.HTTPFilters); err != nil {
		return nil, err
	}
	for _, u := range cfg.Upgrades {
		if _, err := compile(u.Filters); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Stats returns the manager's stats.
func (m *Manager) Stats() *Stats { return m.stats }

// SetStopAcceptingRequests installs the overload manager's envoy.overload_actions.stop_accepting_requests:
// each new request for which shed returns true is answered 503 "envoy overloaded" before any filter
// exists. Call it before the first ServeConn.
func (m *Manager) SetStopAcceptingRequests(shed func() bool) { m.shedRequest = shed }

// SetMemoryTracker turns on per-stream buffer accounting for the overload manager's
// envoy.overload_actions.reset_high_memory_stream: each stream opens an account with t, charged
// with what its filter chain, router and HTTP/2 receive buffer hold, and t may reset the stream
// like any other reset. Call it before the first ServeConn.
func (m *Manager) SetMemoryTracker(t *memacct.Tracker) { m.memory = t }

// Drain winds the listener's connections down: HTTP/1.1 responses carry Connection: close and
// idle HTTP/1.1 connections close, HTTP/2 connections get a graceful GOAWAY; requests in flight and
// established tunnels go on until they end or the server closes them.
//
// With gradual set (Envoy's --drain-strategy gradual), a response gets Connection: close with a
// probability that grows from 0 to 1 over the drain time, so clients do not all reconnect at once;
// otherwise every response does at once.
func (m *Manager) Drain(gradual bool, over time.Duration) {
	m.liveMu.Lock()
	if m.draining.Load() {
		m.liveMu.Unlock()
		return
	}
	m.drainGradual, m.drainOver = gradual, over
	m.drainStart.Store(time.Now().UnixNano())
	m.draining.Store(true)
	m.liveMu.Unlock()
	m.liveMu.Lock()
	defer m.liveMu.Unlock()
	for d := range m.live {
		d.drain()
	}
}

// drainClose says whether a response during a drain should close its connection.
func (m *Manager) drainClose() bool {
	if !m.draining.Load() {
		return false
	}
	if !m.drainGradual || m.drainOver <= 0 {
		return true
	}
	elapsed := time.Since(time.Unix(0, m.drainStart.Load()))
	return rand.Float64() < float64(elapsed)/float64(m.drainOver)
}

// conn is one downstream HTTP/1.1 connection. Its goroutine reads requests one at a time and
// answers each before reading the next, so pipelined requests are answered in order.
type conn struct {
	m        *Manager
	nc       net.Conn
	br       *bufio.Reader // nil once an upgrade has taken the connection over
	bw       *bufio.Writer
	remote   string
	scheme   string // "http" or "https"
	idleMu   sync.Mutex
	idle     bool // waiting for the next request: a drain may close the connection now
	requests int
	closing  atomic.Bool // set from any goroutine of a stream that ends the connection
	wmu      sync.Mutex  // serialises writes to nc (the encode path and 100-continue)
	life     *lifetime
	stopWake func() // stops the server context's wake-up of the reader; nil once a tunnel detached
}

// lifetime is what must happen when a connection ends, last added first (like defer). A
// connection whose tunnel went to the tunnel engine is detached: its goroutine returns without
// ending it, and the engine's Done ends it later.
type lifetime struct {
	fns      []lifeFn
	detached bool   // set by the connection's goroutine before it returns
	left     bool   // the goroutine returned with the connection open: see leave
	onDetach func() // the owner's ConnHooks.Detached
}

// lifeFn is one step of a connection's end. A local step refers to the connection's own objects
// (its net.Conn, reader, context watch): at a detach it runs at once, so the engine's tunnel
// does not keep them.
type lifeFn struct {
	f     func()
	local bool
}

// add adds a step that refers to nothing of the connection but counters and its owner's record.
func (l *lifetime) add(f func()) { l.fns = append(l.fns, lifeFn{f: f}) }

// addLocal adds a step that refers to the connection's objects.
func (l *lifetime) addLocal(f func()) { l.fns = append(l.fns, lifeFn{f: f, local: true}) }

func (l *lifetime) end() {
	for i := len(l.fns) - 1; i >= 0; i-- {
		l.fns[i].f()
	}
	l.fns = nil
}

// detach is the tunnel engine taking the connection's socket: the local steps run now and the
// owner hears of it; what is returned ends the rest when the tunnel ends.
func (l *lifetime) detach() (end func()) {
	l.detached = true
	var rest []func()
	for i := len(l.fns) - 1; i >= 0; i-- {
		if l.fns[i].local {
			l.fns[i].f()
		} else {
			rest = append(rest, l.fns[i].f)
		}
	}
	l.fns = nil
	if l.onDetach != nil {
		l.onDetach()
		l.onDetach = nil
	}
	return func() {
		for _, f := range rest {
			f()
		}
	}
}

// leave is the connection's goroutine returning while the connection goes on, its client's reads
// on the tunnel engine: the owner forgets the net.Conn as for a detach (Close must not close the
// socket under the engine: it reaches an HTTP/1.1 tunnel through AbortTunnels, and an HTTP/2
// connection through the codec's watch of the server's context), and whoever ends the connection
// calls end.
func (l *lifetime) leave() {
	l.left = true
	if l.onDetach != nil {
		l.onDetach()
		l.onDetach = nil
	}
}

// ConnHooks tell the owner of an accepted connection (the server) about its end.
type ConnHooks struct {
	// Ended runs once the connection is over: before ServeConn returns, or later for a tunnel
	// the engine carries.
	Ended func()
	// Detached runs when the tunnel engine takes the connection's socket (ServeConn returns at
	// once then, and Ended comes when the tunnel ends). The net.Conn is closed and will not be
	// used again: the owner should let go of it, and keep only what Ended needs.
	Detached func()
}

// countingConn counts the connection's bytes into the HCM's rx/tx counters.
type countingConn struct {
	net.Conn
	rx, tx *stats.Counter
	sock   *rawsys.ConnWriter
	in     *rawsys.ConnReader
}

func (c *countingConn) Read(p []byte) (int, error) {
	if c.in != nil {
		return c.in.Read(p) // counts through CountRead
	}
	n, err := c.Conn.Read(p)
	c.rx.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	if c.sock != nil {
		return c.sock.Write(p)
	}
	n, err := c.Conn.Write(p)
	c.tx.Add(uint64(n))
	return n, err
}

// CountRead counts bytes a tunnel read from the socket underneath (tunnel.SlabReader's fast path).
func (c *countingConn) CountRead(n int) { c.rx.Add(uint64(n)) }

// CountWrite counts bytes written to the socket underneath (the HTTP/2 codec's vectored writes).
func (c *countingConn) CountWrite(n int) { c.tx.Add(uint64(n)) }

// SocketWriter shares the connection's writer with the HTTP/2 codec (rawsys.NewConnWriter).
func (c *countingConn) SocketWriter() *rawsys.ConnWriter { return c.sock }

// NetConn exposes the socket so the tunnel can wait for readability without a buffer.
func (c *countingConn) NetConn() net.Conn { return c.Conn }

// CloseWrite passes a half-close through to the socket.
func (c *countingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("half-close not supported")
}

// ServeConn serves one accepted connection until it closes or ctx ends. It closes nc. A TLS
// connection's handshake runs here, and its ALPN picks the codec; on cleartext, codec_type AUTO
// tells HTTP/2 (prior knowledge) from HTTP/1.1 by the client's first bytes.
//
// hooks tell the owner of the connection when it ends, which for a tunnel handed to the tunnel
// engine is after ServeConn has returned (no goroutine waits for the tunnel).
func (m *Manager) ServeConn(ctx context.Context, nc net.Conn, hooks ConnHooks) {
	life := &lifetime{onDetach: hooks.Detached}
	defer func() {
		if !life.detached && !life.left {
			life.end()
		}
	}()
	if hooks.Ended != nil {
		life.add(hooks.Ended)
	}
	s := m.stats
	s.CxTotal.Inc()
	s.CxActive.Inc()
	life.add(func() {
		s.CxActive.Dec()
		s.CxDestroy.Inc()
	})
	life.addLocal(func() { nc.Close() })
	scheme, alpn := "http", ""
	if tc, ok := nc.(*tls.Conn); ok {
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			m.log.Debug("TLS handshake failed", "remote", nc.RemoteAddr().String(), "err", err)
			return
		}
		s.CxSSLTotal.Inc()
		scheme, alpn = "https", tc.ConnectionState().NegotiatedProtocol
	}
	cc := &countingConn{Conn: nc, rx: s.CxRxBytes, tx: s.CxTxBytes}
	cc.in, cc.sock = rawsys.NewConnPair(cc)
	c := &conn{m: m, nc: cc, br: buffer.GetReader(cc), remote: nc.RemoteAddr().String(), scheme: scheme, life: life}
	stop := cancelctx.AfterFunc(ctx, func() { nc.SetReadDeadline(time.Now()) })
	c.stopWake = func() { stop() }
	life.addLocal(func() {
		if c.stopWake != nil {
			c.stopWake()
		}
	})

	useH2 := false
	switch {
	case m.cfg.Codec == config.CodecHTTP2:
		useH2 = true
	case m.cfg.Codec == config.CodecHTTP1:
	case scheme == "https":
		useH2 = alpn == "h2"
	default:
		var err error
		if useH2, err = c.sniffPreface(); err != nil && c.br.Buffered() == 0 {
			// Not a byte within the idle timeout (or the client left): close now rather than
			// let serveOne wait a second idle period.
			if isTimeout(err) && ctx.Err() == nil && !m.draining.Load() {
				s.CxIdleTimeout.Inc()
			}
			return
		}
	}
	if useH2 {
		// The codec watches the context itself (its Close ends the connection's reads): the
		// wake-up the sniffing read needed can go, and an idle connection holds one watch less.
		c.stopWake()
		c.stopWake = nil
		m.serveH2(ctx, nc, c, scheme)
		return
	}
	s.CxHTTP1Total.Inc()
	s.CxHTTP1Active.Inc()
	life.add(s.CxHTTP1Active.Dec)
	life.addLocal(m.track(c))
	// Only this goroutine reads the connection, so its reader can go back to the pool at the end
	// (the writer only at a switch: a late timer may still write a reply through it).
	life.addLocal(func() {
		buffer.PutReader(c.br)
		c.br = nil
	})
	c.bw = buffer.GetWriter(cc)
	for !c.closing.Load() && ctx.Err() == nil {
		if !c.serveOne(ctx) {
			return
		}
	}
}

// handshakeTimeout bounds a TLS handshake.
const handshakeTimeout = 10 * time.Second

// sniffPreface reports whether the client opened with the HTTP/2 connection preface. It reads
// only as far as it must: a short HTTP/1.1 request is told apart by its first differing byte. A
// read error (idle timeout, EOF) before the bytes differ is returned: the connection is done.
func (c *conn) sniffPreface() (bool, error) {
	if d := c.m.cfg.IdleTimeout; d > 0 {
		c.nc.SetReadDeadline(time.Now().Add(d))
		defer c.nc.SetReadDeadline(time.Time{})
	}
	n := 1
	for {
		p, err := c.br.Peek(n)
		if string(p) != http2Preface[:len(p)] {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if len(p) == len(http2Preface) {
			return true, nil
		}
		// Check everything already here at once; otherwise wait for one more byte.
		n = min(max(c.br.Buffered(), n+1), len(http2Preface))
	}
}

// http2Preface is RFC 9113 §3.4's client connection preface.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// serveOne reads and answers one request. It reports whether the connection may carry another.
func (c *conn) serveOne(ctx context.Context) bool {
	m := c.m
	// Between requests the connection idle timeout applies; once the first byte arrives, the
	// request headers timeout.
	if d := m.cfg.IdleTimeout; d > 0 {
		c.nc.SetReadDeadline(time.Now().Add(d))
	} else {
		c.nc.SetReadDeadline(time.Time{})
	}
	c.idleMu.Lock()
	if m.draining.Load() {
		c.idleMu.Unlock()
		return false
	}
	c.idle = true
	c.idleMu.Unlock()
	_, err := c.br.Peek(1)
	c.idleMu.Lock()
	c.idle = false
	c.idleMu.Unlock()
	if err != nil {
		if isTimeout(err) && ctx.Err() == nil && !m.draining.Load() {
			m.stats.CxIdleTimeout.Inc()
		}
		return false
	}
	if d := m.cfg.RequestHeadersTimeout; d > 0 {
		c.nc.SetReadDeadline(time.Now().Add(d))
	} else {
		c.nc.SetReadDeadline(time.Time{})
	}
	limit := m.cfg.MaxRequestHeadersKB * 1024
	if limit <= 0 {
		limit = config.DefaultMaxHeadersKB * 1024
	}
	req, err := http1.ReadRequest(c.br, http1.Limits{MaxHeaderBytes: limit})
	c.nc.SetReadDeadline(time.Time{})
	if err != nil {
		var pe *http1.ParseError
		switch {
		case errors.As(err, &pe):
			m.stats.CxProtocolError.Inc()
			c.writeEarlyError(pe.Status, pe.Details)
		case isTimeout(err) && ctx.Err() == nil:
			m.stats.RqHeaderTimeout.Inc()
			c.writeEarlyError(408, "request_headers_timeout")
		}
		return false
	}
	c.requests++
	m.stats.RqHTTP1Total.Inc()
	d := newH1Stream(c, req)
	st := newStream(ctx, m, d, req.Headers)
	d.s = st
	return st.run()
}

// drain closes the connection if it is waiting for a request; a request in flight finishes
// with Connection: close.
func (c *conn) drain() {
	c.idleMu.Lock()
	defer c.idleMu.Unlock()
	if c.idle {
		c.nc.SetReadDeadline(time.Now())
	}
}

// wakeReader makes a blocked read on the connection return, so the decode goroutine sees that its
// stream is over.
func (c *conn) wakeReader() { c.nc.SetReadDeadline(time.Now()) }

// writeEarlyError answers a request that never became a stream (bad bytes, header timeout) and
// makes the connection close: after a framing error the next request cannot be found safely.
func (c *conn) writeEarlyError(status int, details string) {
	body := http1StatusText(status)
	h := headers.New(headers.Status, fmt.Sprint(status), "content-length", fmt.Sprint(len(body)),
		"content-type", "text/plain", "connection", "close")
	c.m.stats.countResponse(status)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if http1.WriteResponseHead(c.bw, h) == nil {
		io.WriteString(c.bw, body)
		c.bw.Flush()
	}
	c.m.log.Debug("rejected request", "status", status, "details", details, "remote", c.remote)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
