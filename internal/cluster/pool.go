package cluster

import (
	"bufio"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/internal/rawsys"
)

// pool is one host's stack of idle connections. LIFO: the most recently used connection is the
// warmest and the least likely to have been closed by the peer; the bottom is the longest idle.
type pool struct {
	host *Host

	mu     sync.Mutex
	idle   []*pconn
	timer  *time.Timer // closes connections idle for the idle timeout; one per pool, nil until used
	armed  bool        // timer is pending
	closed bool        // the host left its cluster or the manager closed: nothing is pooled any more
}

// put parks a released connection. A connection with unread or unflushed bytes cannot carry the
// next request, so it is closed instead.
func (p *pool) put(pc *pconn) {
	if pc.r.Buffered() > 0 || pc.w.Buffered() > 0 {
		pc.close()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pc.close()
		return
	}
	pc.idleSince = time.Now()
	p.idle = append(p.idle, pc)
	if !p.armed {
		p.armed = true
		if d := p.host.cluster.opts.idleTimeout; p.timer == nil {
			p.timer = time.AfterFunc(d, p.expire)
		} else {
			p.timer.Reset(d)
		}
	}
	p.mu.Unlock()
	p.host.cluster.wake()
}

// take pops the most recently released connection that is still open, or returns nil.
func (p *pool) take() *pconn {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		pc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if alive(pc.conn) {
			return pc
		}
		pc.close()
	}
}

// takeOldest pops the longest idle connection, or returns nil; the caller closes it.
func (p *pool) takeOldest() *pconn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) == 0 {
		return nil
	}
	pc := p.idle[0]
	p.idle = slices.Delete(p.idle, 0, 1)
	return pc
}

// expire runs on the pool's timer: it closes the connections idle for the idle timeout and
// re-arms the timer for the next one.
func (p *pool) expire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	timeout := p.host.cluster.opts.idleTimeout
	now := time.Now()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleSince) >= timeout {
		p.idle[n].close()
		p.host.cluster.Stats.UpstreamCxIdleTimeout.Inc()
		n++
	}
	p.idle = slices.Delete(p.idle, 0, n)
	if len(p.idle) == 0 {
		p.armed = false
		return
	}
	p.timer.Reset(timeout - now.Sub(p.idle[0].idleSince))
}

// close closes the idle connections and makes later puts close theirs.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	if p.timer != nil {
		p.timer.Stop()
	}
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, pc := range idle {
		pc.close()
	}
}

// pconn is one upstream connection with the buffers that live as long as it does.
type pconn struct {
	conn      net.Conn
	r         *bufio.Reader
	w         *bufio.Writer
	host      *Host
	idleSince time.Time // guarded by host.pool.mu

	once sync.Once
	err  error
}

func newPconn(conn net.Conn, h *Host) *pconn {
	var r io.Reader = conn
	var w io.Writer = conn
	// Raw reads and writes for a plain TCP socket (see rawsys): the request head goes out and the
	// response head comes in without a thread hand-off.
	if cr, cw := rawsys.NewConnPair(conn); cr != nil {
		r, w = cr, cw
	}
	return &pconn{conn: conn, r: buffer.GetReader(r), w: buffer.GetWriter(w), host: h}
}

// close closes the connection and does its accounting, once.
func (pc *pconn) close() error {
	pc.once.Do(func() {
		if pc.conn != nil {
			pc.err = pc.conn.Close()
		}
		pc.host.cluster.connClosed(pc.host)
	})
	return pc.err
}

// Lease is one request's hold on an upstream connection. Do not Close Conn: Release the lease, or
// Hijack the connection. Fields are for the holder only.
type Lease struct {
	Conn   net.Conn      // the raw connection; Reader and Writer wrap it
	Reader *bufio.Reader // 16 KiB, kept with the connection across leases
	Writer *bufio.Writer // 4 KiB; flush it before Release(true)
	Host   *Host
	// Reused says the connection served an earlier request, so a failure before any response byte
	// may be the peer's idle close racing this request (safe to retry).
	Reused bool

	pc       *pconn
	mu       sync.Mutex
	released bool
	hijacked *hijackedConn
}

// Release ends the lease: with reusable (a complete response was read and the connection may
// carry another request) the connection goes back to its host's idle pool, otherwise it is closed.
// After Hijack it only ends the lease; the hijacked connection stays open. Idempotent.
func (l *Lease) Release(reusable bool) {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return
	}
	l.released = true
	hijacked := l.hijacked != nil
	l.mu.Unlock()
	if hijacked {
		return // the host's request and the connection end when the hijacked conn is closed
	}
	l.Host.rqActive.Add(-1)
	if reusable {
		l.Host.pool.put(l.pc)
	} else {
		l.pc.close()
	}
}

// Hijack hands the connection to the caller for good, e.g. for an upgrade tunnel: it is never
// pooled, and its Close does the accounting (upstream_cx_active, max_connections, the host's
// active request, which lasts as long as the tunnel for LEAST_REQUEST). Bytes already in Reader
// belong to the tunnel: drain them first. Calling it again returns the same conn; after Release it
// returns nil.
func (l *Lease) Hijack() net.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hijacked == nil {
		if l.released {
			return nil
		}
		l.hijacked = &hijackedConn{Conn: l.pc.conn, pc: l.pc}
		// The connection never goes back to the pool: let its buffers go, so an idle tunnel
		// holds no copy buffer (take any buffered bytes before hijacking).
		// The holder reads nothing more through them (it took the buffered bytes), so they go
		// back to the pool for the next handshake.
		buffer.PutReader(l.pc.r)
		buffer.PutWriter(l.pc.w)
		l.pc.r, l.pc.w = nil, nil
	}
	return l.hijacked
}

// hijackedConn is an upstream connection taken out of the pool. It exists so that Close does the
// connection's accounting exactly once, however many times the tunnel closes it.
type hijackedConn struct {
	net.Conn
	pc   *pconn
	once sync.Once
}

// Close closes the connection and ends the host's request. Later calls return the first result.
func (c *hijackedConn) Close() error {
	c.once.Do(func() { c.pc.host.rqActive.Add(-1) })
	return c.pc.close()
}

// SocketTaken is for the holder of a hijacked connection whose socket now lives outside Go's net
// package (the tunnel engine duplicated its descriptor and closed this copy). It lets go of the
// net.Conn, so an idle tunnel does not keep one, and returns what is left of the connection: its
// accounting, done once when the tunnel ends. ok is false for a connection Hijack did not return;
// the connection must not be used after a true.
func SocketTaken(c net.Conn) (end func(), ok bool) {
	hc, ok := c.(*hijackedConn)
	if !ok {
		return nil, false
	}
	hc.Conn, hc.pc.conn = nil, nil
	return func() { hc.Close() }, true
}

// CloseWrite half-closes the connection (TCP FIN), so a tunnel can propagate a half-close.
func (c *hijackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// CloseRead shuts down the reading side of the connection.
func (c *hijackedConn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return errors.ErrUnsupported
}

// NetConn returns the underlying connection (a *net.TCPConn), for fast paths such as splice.
// Close the hijacked conn, not this one, or the accounting never happens.
func (c *hijackedConn) NetConn() net.Conn { return c.Conn }
