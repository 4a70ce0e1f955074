// Package client is the proxy's HTTP/2 client codec toward upstreams (RFC 9113), built on
// golang.org/x/net/http2's Framer and HPACK rather than its Transport, because the proxy needs
// what the Transport hides:
//
//   - extended CONNECT (RFC 8441) only once the peer's SETTINGS advertised it, and the
//     Upgrade→CONNECT rewrite at the wire edge (http2.RequestToH2 / http2.ResponseFromH2);
//   - END_STREAM as a half-close in both directions, so a tunnel can finish one way and go on
//     the other;
//   - receive windows opened only as the caller consumes the data (backpressure reaches the
//     upstream), and multiplexing whose limits the connection pool can see (Available,
//     ErrNoCapacity).
//
// One ClientConn owns two goroutines: a reader (frames in, state machine) and a writer (the only
// user of the write Framer and the HPACK encoder, fed by a bounded queue). Both end when the
// connection closes; Close waits for them.
package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	h2 "golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/codec/http2"
	"github.com/switchyard-proxy/switchyard/internal/rawsys"
)

// ErrCode is an HTTP/2 error code (RFC 9113 §7), re-exported so callers of Reset need not
// import x/net.
type ErrCode = h2.ErrCode

// Config tunes one ClientConn. The zero value is usable: every zero field takes its default.
type Config struct {
	// InitialStreamWindowSize is advertised as SETTINGS_INITIAL_WINDOW_SIZE and replenished only
	// as the caller reads, so a slow downstream slows the upstream. Default 1 MiB; at least 65535.
	InitialStreamWindowSize uint32
	// InitialConnectionWindowSize is the connection receive window. Default 8 MiB; at least 65535.
	InitialConnectionWindowSize uint32
	// MaxHeaderListSize bounds a response header block (advertised as
	// SETTINGS_MAX_HEADER_LIST_SIZE); bigger responses are reset and count header_overflow.
	// Default 60 KiB, Envoy's max_request_headers_kb default.
	MaxHeaderListSize uint32
	// WriteTimeout bounds every socket write, so a peer that stops reading cannot block the
	// connection forever: when it fires the connection fails. Default 30s.
	WriteTimeout time.Duration
	// Keepalive sends PINGs (every Interval, and before a stream on a connection idle for
	// ConnectionIdleInterval) and closes the connection when one goes unanswered for Timeout
	// (Envoy's connection_keepalive; keepalive_timeout): its streams fail with ErrConnLost and
	// Err reports http2.ErrKeepaliveTimeout. Default off.
	Keepalive http2.KeepaliveConfig
	// Stats receives the codec stats (cluster.<name>.http2.*). Default: http2.NewStats(nil).
	Stats *http2.Stats
}

// Defaults of Config.
const (
	DefaultStreamWindow  = 1 << 20
	DefaultConnWindow    = 8 << 20
	DefaultMaxHeaderList = 60 << 10
	DefaultWriteTimeout  = 30 * time.Second
)

const (
	initialWindow     = 65535     // RFC 9113 §6.9.2
	maxWindow         = 1<<31 - 1 // RFC 9113 §6.9.1
	maxStreamID       = 1<<31 - 1
	defaultFrameSize  = 16384 // RFC 9113 §6.5.2 SETTINGS_MAX_FRAME_SIZE initial value
	hpackTableLimit   = 4096  // our bound on both HPACK dynamic tables
	assumedMaxStreams = 100   // before the peer's SETTINGS arrive (as x/net's Transport)
	writeQueueLen     = 128
	bufSize           = 64 << 10
	maxDataChunk      = 64 << 10 // one DATA request to the writer: framed at the peer's MAX_FRAME_SIZE
	minFrameSize      = 16384    // the smallest MAX_FRAME_SIZE a peer may set (RFC 9113 §6.5.2)
	frameHeaderLen    = 9
)

// Errors that decide what the router and the pool do next (errors.Is).
var (
	// ErrNoExtendedConnect: the upstream did not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL
	// (RFC 8441 §3), so an upgrade cannot be sent; nothing was sent. The router answers 503.
	ErrNoExtendedConnect = errors.New("upstream did not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL")
	// ErrNoCapacity: the peer's MAX_CONCURRENT_STREAMS is reached; the pool opens another
	// connection.
	ErrNoCapacity = errors.New("no stream capacity")
	// ErrConnClosed: the connection is closed or going away and the stream was never processed
	// by the peer (never sent, refused with REFUSED_STREAM, or above a GOAWAY's last-stream-id),
	// so it is safe to retry on another connection.
	ErrConnClosed = errors.New("connection closed or going away")
	// ErrConnLost: the connection failed after the stream was sent; the upstream may have acted
	// on it, so only an idempotent request may be retried.
	ErrConnLost = errors.New("connection lost with the stream in flight")
	// ErrResponseHeadersTooLarge: the response header block exceeded Config.MaxHeaderListSize.
	ErrResponseHeadersTooLarge = errors.New("response headers exceed max_header_list_size")
	// ErrRequestHeadersTooLarge: the request exceeds the peer's SETTINGS_MAX_HEADER_LIST_SIZE;
	// nothing was sent.
	ErrRequestHeadersTooLarge = errors.New("request headers exceed the upstream's max_header_list_size")
	// ErrStreamClosed: Write after END_STREAM was sent or after the stream ended.
	ErrStreamClosed = errors.New("stream closed for writing")
)

// StreamError is a stream ended by RST_STREAM. Remote says the peer sent it (rx_reset) rather
// than this side (tx_reset). A remote REFUSED_STREAM unwraps to ErrConnClosed: RFC 9113 §8.7
// guarantees the request was not processed, so the router may retry it.
type StreamError struct {
	Code   ErrCode
	Remote bool
	Cause  error // why this side reset, when it did; may be nil
}

func (e *StreamError) Error() string {
	who := "local"
	if e.Remote {
		who = "remote"
	}
	if e.Cause != nil {
		return fmt.Sprintf("stream reset (%s %v): %v", who, e.Code, e.Cause)
	}
	return fmt.Sprintf("stream reset (%s %v)", who, e.Code)
}

// Unwrap exposes ErrConnClosed for a refused stream and the local cause otherwise.
func (e *StreamError) Unwrap() error {
	if e.Remote && e.Code == h2.ErrCodeRefusedStream {
		return ErrConnClosed
	}
	return e.Cause
}

// ClientConn is one HTTP/2 connection to an upstream, multiplexing ClientStreams. Its methods
// are safe for concurrent use.
type ClientConn struct {
	nc    net.Conn
	cfg   Config
	stats *http2.Stats
	ka    *http2.Keepalive // nil when keepalive is off; set under mu before the goroutines start

	wq         chan writeReq // to the writer; bounded
	closing    chan struct{} // closed when the connection starts closing (Done)
	settingsCh chan struct{} // closed at the peer's first SETTINGS
	readerDone chan struct{}
	writerDone chan struct{}

	// owned by the reader goroutine
	rfr   *h2.Framer
	br    *bufio.Reader      // under src
	src   *http2.FrameSource // rfr's reader
	wuBuf [4]byte            // a WINDOW_UPDATE payload

	// pending counts requests enqueued and not yet written; wlock is held by whoever writes —
	// the writer goroutine, or a stream writing its own DATA while nothing is pending
	// (writeDirect) — and gives it everything below.
	pending atomic.Int32
	wlock   sync.Mutex

	rawStop atomic.Bool // set when closing begins: the reader stops at the next frame

	// owned by the holder of wlock
	wfr       *h2.Framer
	bw        *bufio.Writer
	dw        *deadlineWriter
	henc      *hpack.Encoder
	hbuf      bytes.Buffer // encoded header block being written
	werr      error        // first write error; later writes are skipped
	wMaxFrame uint32       // peer's MAX_FRAME_SIZE as the writer applies it

	mu sync.Mutex
	// guarded by mu
	streams           map[uint32]*ClientStream
	active            int    // streams reserved or open: counts against MAX_CONCURRENT_STREAMS
	nextID            uint32 // next stream id to assign (odd)
	lastSentID        uint32 // highest stream id whose HEADERS were written
	settingsKnown     bool
	peerConnect       bool
	peerMaxStreams    uint32
	peerInitWindow    int64
	peerMaxFrame      uint32
	peerMaxHdrList    uint32
	sendWindow        int64 // connection send window
	recvWindow        int64 // connection receive window left to the peer
	recvUnacked       int64 // connection bytes consumed but not yet returned by WINDOW_UPDATE
	goAwayRecv        bool
	goAwayLastID      uint32
	shutdown          bool  // we sent (or queued) GOAWAY
	closed            bool  // closing has begun
	closeErr          error // why
	goAwayOnClose     bool  // the writer sends GOAWAY(goAwayOnCloseCode) before closing the socket
	goAwayOnCloseCode ErrCode
}

// deadlineWriter keeps a write deadline ahead of every socket write so that one stalled write
// fails within WriteTimeout (see http2.WriteDeadline) instead of blocking the writer goroutine
// forever. On a plain TCP socket it writes through sock (see rawsys).
type deadlineWriter struct {
	nc       net.Conn
	sock     *rawsys.ConnWriter // nil: write to nc
	deadline http2.WriteDeadline
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if err := w.deadline.Extend(w.nc); err != nil {
		return 0, err
	}
	if w.sock != nil {
		return w.sock.Write(p)
	}
	return w.nc.Write(p)
}

// NewClientConn starts HTTP/2 on nc (already connected, TLS with ALPN h2 or prior-knowledge
// h2c): it writes the client preface, SETTINGS and the connection WINDOW_UPDATE, then starts the
// reader and writer goroutines. The ClientConn owns nc from then on.
func NewClientConn(nc net.Conn, cfg Config) (*ClientConn, error) {
	cfg = withDefaults(cfg)
	c := &ClientConn{
		nc:             nc,
		cfg:            cfg,
		stats:          cfg.Stats,
		wq:             make(chan writeReq, writeQueueLen),
		closing:        make(chan struct{}),
		settingsCh:     make(chan struct{}),
		readerDone:     make(chan struct{}),
		writerDone:     make(chan struct{}),
		streams:        make(map[uint32]*ClientStream),
		nextID:         1,
		peerMaxStreams: assumedMaxStreams,
		peerInitWindow: initialWindow,
		peerMaxFrame:   defaultFrameSize,
		peerMaxHdrList: math.MaxUint32,
		sendWindow:     initialWindow,
		recvWindow:     int64(cfg.InitialConnectionWindowSize),
		wMaxFrame:      defaultFrameSize,
	}
	c.dw = &deadlineWriter{nc: nc, sock: rawsys.NewConnWriter(nc), deadline: http2.WriteDeadline{Timeout: cfg.WriteTimeout}}
	c.bw = bufio.NewWriterSize(c.dw, bufSize+maxDataChunk/minFrameSize*frameHeaderLen) // a whole chunk's frames in one write
	c.wfr = h2.NewFramer(c.bw, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.henc.SetMaxDynamicTableSizeLimit(hpackTableLimit)

	c.br = bufio.NewReaderSize(nc, bufSize)
	c.src = http2.NewFrameSource(c.br)
	c.rfr = h2.NewFramer(nil, c.src)
	c.rfr.SetReuseFrames()
	c.rfr.SetMaxReadFrameSize(defaultFrameSize)
	c.rfr.MaxHeaderListSize = cfg.MaxHeaderListSize
	c.rfr.ReadMetaHeaders = hpack.NewDecoder(hpackTableLimit, nil)

	// RFC 9113 §3.4: the preface, then SETTINGS. Push is off: this is a proxy.
	err := func() error {
		if _, err := c.bw.WriteString(h2.ClientPreface); err != nil {
			return err
		}
		if err := c.wfr.WriteSettings(
			h2.Setting{ID: h2.SettingEnablePush, Val: 0},
			h2.Setting{ID: h2.SettingInitialWindowSize, Val: cfg.InitialStreamWindowSize},
			h2.Setting{ID: h2.SettingMaxHeaderListSize, Val: cfg.MaxHeaderListSize},
		); err != nil {
			return err
		}
		if inc := cfg.InitialConnectionWindowSize - initialWindow; inc > 0 {
			if err := c.wfr.WriteWindowUpdate(0, inc); err != nil {
				return err
			}
		}
		return c.bw.Flush()
	}()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("http2 client preface: %w", err)
	}
	c.mu.Lock() // its timeout may reach closeLocked, which reads c.ka under mu
	c.ka = http2.StartKeepalive(cfg.Keepalive, c.sendKeepalive, c.keepaliveTimeout)
	c.mu.Unlock()
	go c.writeLoop()
	go c.readLoop()
	return c, nil
}

func withDefaults(cfg Config) Config {
	clamp := func(v *uint32, def uint32) {
		switch {
		case *v == 0:
			*v = def
		case *v < initialWindow:
			*v = initialWindow
		case *v > maxWindow:
			*v = maxWindow
		}
	}
	clamp(&cfg.InitialStreamWindowSize, DefaultStreamWindow)
	clamp(&cfg.InitialConnectionWindowSize, DefaultConnWindow)
	if cfg.MaxHeaderListSize == 0 {
		cfg.MaxHeaderListSize = DefaultMaxHeaderList
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Stats == nil {
		cfg.Stats = http2.NewStats(nil)
	}
	return cfg
}

// NewStream sends a request's HEADERS and returns the stream. h is the proxy's internal request
// (pseudo-headers; an upgrade is Upgrade + Connection: upgrade); it is not modified. An upgrade
// becomes an extended CONNECT, sent only once the peer's first SETTINGS (awaited, bounded by ctx)
// advertised ENABLE_CONNECT_PROTOCOL; otherwise ErrNoExtendedConnect and nothing is sent.
// endStream sends END_STREAM with the headers (no body). ctx bounds the whole stream: when it is
// done before the stream ends, the stream is reset with CANCEL.
func (c *ClientConn) NewStream(ctx context.Context, h *headers.Map, endStream bool) (*ClientStream, error) {
	rh := h.Clone()
	if rh.Get(headers.Authority) == "" {
		if host := rh.Get("host"); host != "" {
			rh.Set(headers.Authority, host)
		}
	}
	upgrade := http2.RequestToH2(rh)
	method := rh.Get(headers.Method)
	if method == "CONNECT" && upgrade == "" {
		// RFC 9113 §8.5: a plain CONNECT carries only :method and :authority.
		rh.Del(headers.Path)
		rh.Del(headers.Scheme)
	} else if rh.Get(headers.Scheme) == "" {
		rh.Set(headers.Scheme, "http")
	}
	if v, ok := rh.Lookup(headers.Authority); ok && v == "" {
		rh.Del(headers.Authority)
	}
	if err := checkRequest(rh, method, upgrade); err != nil {
		return nil, err
	}

	if upgrade != "" {
		// The SETTINGS usually came long ago: look first without asking for ctx's Done, which
		// a stream's context (cancelctx) makes only when asked and keeps for the tunnel's life.
		select {
		case <-c.settingsCh:
		default:
			select {
			case <-c.settingsCh:
			case <-ctx.Done():
				return nil, fmt.Errorf("waiting for the upstream's SETTINGS: %w", ctx.Err())
			case <-c.closing:
				return nil, ErrConnClosed
			}
		}
		c.mu.Lock()
		allowed := c.peerConnect
		c.mu.Unlock()
		if !allowed {
			return nil, ErrNoExtendedConnect
		}
	}

	s := newStream(c, ctx, method, upgrade)
	c.mu.Lock()
	switch {
	case c.closed || c.goAwayRecv || c.shutdown || c.nextID > maxStreamID:
		c.mu.Unlock()
		s.ctx.Cancel()
		return nil, ErrConnClosed
	case uint32(c.active) >= c.peerMaxStreams:
		c.mu.Unlock()
		s.ctx.Cancel()
		return nil, ErrNoCapacity
	case headerListSize(rh) > uint64(c.peerMaxHdrList):
		c.mu.Unlock()
		s.ctx.Cancel()
		return nil, ErrRequestHeadersTooLarge
	}
	c.active++
	s.reserved = true
	c.mu.Unlock()
	c.ka.BeforeNewStream() // its PING, if any, is queued ahead of the HEADERS

	err := c.enqueue(writeReq{kind: wHeaders, s: s, h: rh, end: endStream, done: s.wdone})
	if err == nil {
		err = c.waitDone(s.wdone)
	}
	if err != nil {
		c.mu.Lock()
		if s.reserved && !s.registered {
			s.reserved = false
			c.releaseLocked()
		}
		c.mu.Unlock()
		s.ctx.Cancel()
		return nil, err
	}
	c.mu.Lock()
	if !s.closed {
		s.stopCtx = s.ctx.AfterFunc(s.onCtxDone)
	}
	c.mu.Unlock()
	return s, nil
}

// checkRequest refuses, before anything is sent, a request HTTP/2 could not carry.
func checkRequest(h *headers.Map, method, upgrade string) error {
	if err := http2.CheckFields(h, true); err != nil {
		return err
	}
	switch {
	case method == "":
		return errors.New("request without :method")
	case method == "CONNECT" && upgrade == "":
		if h.Get(headers.Authority) == "" {
			return errors.New("CONNECT without :authority")
		}
	case h.Get(headers.Path) == "":
		return errors.New("request without :path")
	case upgrade != "" && h.Get(headers.Authority) == "":
		return errors.New("extended CONNECT without :authority") // RFC 8441 §4
	}
	return nil
}

// headerListSize is RFC 9113 §6.5.2's measure: name + value + 32 per field.
func headerListSize(h *headers.Map) uint64 {
	var n uint64
	for _, f := range h.Fields() {
		n += uint64(len(f.Name) + len(f.Value) + 32)
	}
	return n
}

// Available reports whether NewStream can open a stream now: not closing, not going away, and
// under the peer's MAX_CONCURRENT_STREAMS. The pool uses it to pick a connection.
func (c *ClientConn) Available() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && !c.goAwayRecv && !c.shutdown && c.nextID <= maxStreamID &&
		uint32(c.active) < c.peerMaxStreams
}

// ActiveStreams is the number of streams open or being opened.
func (c *ClientConn) ActiveStreams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active
}

// PeerAllowsExtendedConnect reports whether the peer's first SETTINGS has arrived (known) and
// whether it advertised SETTINGS_ENABLE_CONNECT_PROTOCOL=1 (allowed).
func (c *ClientConn) PeerAllowsExtendedConnect() (known, allowed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.settingsKnown, c.peerConnect
}

// Shutdown starts a graceful close: GOAWAY(NO_ERROR) is sent, no new stream is opened, and the
// connection closes once the existing streams have finished.
func (c *ClientConn) Shutdown() {
	c.mu.Lock()
	if c.closed || c.shutdown {
		c.mu.Unlock()
		return
	}
	c.shutdown = true
	c.mu.Unlock()
	if c.enqueue(writeReq{kind: wGoAway, code: h2.ErrCodeNo}) != nil {
		return
	}
	c.mu.Lock()
	c.closeIfIdleLocked()
	c.mu.Unlock()
}

// Close closes the connection at once: open streams fail with ErrConnLost (or ErrConnClosed if
// never sent). It waits for the reader and writer goroutines. Use Shutdown to drain instead.
func (c *ClientConn) Close() error {
	c.mu.Lock()
	c.closeLocked(ErrConnClosed, false, 0)
	c.mu.Unlock()
	err := c.nc.Close()
	<-c.readerDone
	<-c.writerDone
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Done is closed when the connection starts closing; the pool drops it then.
func (c *ClientConn) Done() <-chan struct{} { return c.closing }

// Err says why the connection closed, or nil while it is open.
func (c *ClientConn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// closeLocked begins closing: every stream still open fails, Done is closed, and the writer
// drains its queue (sending GOAWAY(code) first when goAway), flushes and closes the socket.
func (c *ClientConn) closeLocked(cause error, goAway bool, code ErrCode) {
	if c.closed {
		return
	}
	c.closed = true
	c.rawStop.Store(true)
	c.closeErr = cause
	c.ka.Stop()
	c.goAwayOnClose = goAway
	c.goAwayOnCloseCode = code
	for _, s := range c.streams {
		var err error
		if c.goAwayRecv && s.id > c.goAwayLastID {
			err = ErrConnClosed
		} else {
			err = fmt.Errorf("%w: %v", ErrConnLost, cause)
		}
		s.failLocked(err, false)
	}
	close(c.closing)
}

// sendKeepalive queues a keepalive PING; it runs on the Keepalive's timer goroutine.
func (c *ClientConn) sendKeepalive(data [8]byte) {
	c.enqueue(writeReq{kind: wPing, ping: data})
}

// keepaliveTimeout closes a connection whose keepalive PING went unanswered, at once and without
// GOAWAY, as Envoy does (the peer is presumed dead): every stream fails.
func (c *ClientConn) keepaliveTimeout() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.stats.KeepaliveTimeout.Inc()
	c.closeLocked(http2.ErrKeepaliveTimeout, false, 0)
	c.mu.Unlock()
	c.nc.Close()
}

// releaseLocked returns one stream's share of MAX_CONCURRENT_STREAMS.
func (c *ClientConn) releaseLocked() {
	c.active--
	c.closeIfIdleLocked()
}

// closeIfIdleLocked closes a connection that is going away once its last stream has ended.
func (c *ClientConn) closeIfIdleLocked() {
	if c.active == 0 && (c.goAwayRecv || c.shutdown) {
		c.closeLocked(ErrConnClosed, false, 0)
	}
}

// enqueue hands a frame to the writer, blocking while the queue is full.
func (c *ClientConn) enqueue(req writeReq) error {
	c.pending.Add(1)
	select {
	case c.wq <- req:
		return nil
	case <-c.closing:
		// Closing drains the queue; a frame may still fit (an RST or END_STREAM after the last
		// stream ended), but never block on a writer that is gone.
		select {
		case c.wq <- req:
			return nil
		case <-c.writerDone:
			c.pending.Add(-1)
			return ErrConnClosed
		}
	}
}

// writeDirect writes a DATA request on the caller's goroutine and flushes, when nothing is
// pending (so nothing enqueued earlier, such as the stream's HEADERS, would be overtaken) and no
// one is writing. That saves waking the writer goroutine and being woken back by it, two
// goroutine switches per message. ok is false when the request must be enqueued instead.
func (c *ClientConn) writeDirect(req writeReq) (ok bool, err error) {
	if c.pending.Load() != 0 || !c.wlock.TryLock() {
		return false, nil
	}
	defer c.wlock.Unlock()
	select {
	case <-c.closing:
		return false, nil // the writer drains and closes; keep to its order
	default:
	}
	if c.pending.Load() != 0 {
		return false, nil
	}
	if err = c.write(req); err == nil {
		c.flush()
		if c.werr != nil {
			err = fmt.Errorf("%w: %v", ErrConnLost, c.werr)
		}
	}
	return true, err
}

// waitDone waits for the writer's answer to a request that carried done.
func (c *ClientConn) waitDone(done chan error) error {
	select {
	case err := <-done:
		return err
	case <-c.writerDone:
		select {
		case err := <-done:
			return err
		default:
			return ErrConnClosed
		}
	}
}
