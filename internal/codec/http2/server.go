package http2

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	h2 "golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/cancelctx"
	"github.com/switchyard-proxy/switchyard/internal/rawsys"
)

// ServerConfig is one listener's HTTP/2 settings, named after Envoy's http2_protocol_options.
// Zero fields take the defaults given on each.
type ServerConfig struct {
	// AllowConnect advertises SETTINGS_ENABLE_CONNECT_PROTOCOL=1 and accepts :protocol (RFC 8441).
	// Default false, as in Envoy (allow_connect).
	AllowConnect bool
	// MaxConcurrentStreams is advertised; a HEADERS past it gets RST_STREAM(REFUSED_STREAM) and
	// counts in stream_refused_errors. A stream counts until it is closed on the wire and its
	// handler has returned, so handlers still running after a reset use the budget too.
	// Default 1024.
	MaxConcurrentStreams uint32
	// InitialStreamWindowSize is advertised and opened again only as the handler reads.
	// Default 1 MiB.
	InitialStreamWindowSize uint32
	// InitialConnectionWindowSize is the connection window we open at the start (at least
	// 65535). Default 8 MiB.
	InitialConnectionWindowSize uint32
	// MaxHeaderListSize is advertised and enforced while decoding (RFC 9113 §6.5.2 sizes); a
	// bigger header list gets header_overflow and RST_STREAM(INTERNAL_ERROR), as Envoy does.
	// Default 60 KiB (max_request_headers_kb).
	MaxHeaderListSize uint32
	// StreamErrorOnInvalidMessage is Envoy's override_stream_error_on_invalid_http_message: a
	// malformed request gets RST_STREAM(PROTOCOL_ERROR) instead of GOAWAY(PROTOCOL_ERROR).
	// Default false: a connection error, like Envoy.
	StreamErrorOnInvalidMessage bool
	// MaxOutboundFrames bounds frames queued and not yet written; past it the connection is
	// closed (outbound_flood). Default 10000.
	MaxOutboundFrames int
	// MaxOutboundControlFrames bounds queued PING acks, SETTINGS acks and RST_STREAMs; past it the
	// connection is closed (outbound_control_flood). Default 1000.
	MaxOutboundControlFrames int
	// MaxConsecutiveInboundFramesWithEmptyPayload bounds HEADERS, CONTINUATION and DATA frames in a
	// row with no payload and no END_STREAM (CVE-2019-9518; inbound_empty_frames_flood). Default 1.
	MaxConsecutiveInboundFramesWithEmptyPayload int
	// MaxInboundPriorityFramesPerStream: more than this × (1 + streams opened) PRIORITY frames
	// close the connection (inbound_priority_frames_flood). Default 100.
	MaxInboundPriorityFramesPerStream int
	// MaxInboundWindowUpdateFramesPerDataFrameSent: more than 1 + 2 × (streams opened + this ×
	// DATA frames sent) WINDOW_UPDATE frames close the connection
	// (inbound_window_update_frames_flood). Default 10.
	MaxInboundWindowUpdateFramesPerDataFrameSent int
	// WriteTimeout is how long one socket write may make no progress before the connection is
	// closed, so a peer that never reads cannot hold the connection: at least half of it, at
	// most all (see WriteDeadline). Default 30 s.
	WriteTimeout time.Duration
	// DrainTimeout is the longest Shutdown waits between its first GOAWAY (the shutdown notice)
	// and the final one, while new streams are still taken (Envoy's drain_timeout). The final
	// GOAWAY goes sooner when the client acks the PING sent after the notice: by then it has
	// read the notice and opens no more streams. Zero: 5 s; negative: no wait (drain_timeout 0s).
	DrainTimeout time.Duration
	// Keepalive sends PINGs and closes the connection when one goes unanswered (Envoy's
	// connection_keepalive; keepalive_timeout). ConnectionIdleInterval does not apply to a
	// server, as in Envoy. Default off.
	Keepalive KeepaliveConfig
	// Stats receives the codec stats. Default NewStats(nil).
	Stats *Stats
	// ParkReads, if set, takes a quiet connection's reads (see ServeLeaving): for the tunnel
	// engine, so that an idle connection holds no goroutine. Only plain TCP sockets park.
	ParkReads ReadParker
	// QuietBeforePark is how long a client must send nothing before its reads park (they park
	// within twice that: the deadline is re-armed once per period while frames come). Default 1 s.
	QuietBeforePark time.Duration
}

func (cfg ServerConfig) withDefaults() ServerConfig {
	def := func(v *uint32, d uint32) {
		if *v == 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxConcurrentStreams, 1024)
	def(&cfg.InitialStreamWindowSize, 1<<20)
	def(&cfg.InitialConnectionWindowSize, 8<<20)
	def(&cfg.MaxHeaderListSize, 60<<10)
	cfg.InitialStreamWindowSize = min(cfg.InitialStreamWindowSize, maxWindow)
	cfg.InitialConnectionWindowSize = min(max(cfg.InitialConnectionWindowSize, initialWindow), maxWindow)
	defInt(&cfg.MaxOutboundFrames, 10000)
	defInt(&cfg.MaxOutboundControlFrames, 1000)
	defInt(&cfg.MaxConsecutiveInboundFramesWithEmptyPayload, 1)
	defInt(&cfg.MaxInboundPriorityFramesPerStream, 100)
	defInt(&cfg.MaxInboundWindowUpdateFramesPerDataFrameSent, 10)
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.QuietBeforePark <= 0 {
		cfg.QuietBeforePark = time.Second
	}
	switch {
	case cfg.DrainTimeout == 0:
		cfg.DrainTimeout = 5 * time.Second
	case cfg.DrainTimeout < 0:
		cfg.DrainTimeout = 0
	}
	if cfg.Stats == nil {
		cfg.Stats = NewStats(nil)
	}
	return cfg
}

const (
	initialWindow  = 65535     // RFC 9113 §6.9.2: every window before SETTINGS say otherwise
	maxWindow      = 1<<31 - 1 // RFC 9113 §6.9.1
	maxReadFrame   = 16384     // we never raise SETTINGS_MAX_FRAME_SIZE
	prefaceTimeout = 10 * time.Second
	// closeGrace is how long a closing connection keeps reading after its last GOAWAY, so the
	// peer gets to read it instead of a TCP reset.
	closeGrace = time.Second
	// Rapid reset (CVE-2023-44487) and MadeYouReset (CVE-2025-8671): a stream the client resets
	// before its response headers, or one we reset because the client broke the protocol on it,
	// is an abusive reset. Within a window of resetWindow, more than maxAbusiveResets of them
	// that also outnumber twice the streams answered in the window end the connection with
	// GOAWAY(ENHANCE_YOUR_CALM). A browser cancelling a page's requests stays far below; a
	// client that only opens and cancels streams is cut off after 201.
	resetWindow      = 10 * time.Second
	maxAbusiveResets = 200
	recentClosed     = 32 // closed streams remembered to answer their late frames (RFC 9113 §5.1)
)

var shutdownPing = [8]byte{'s', 'h', 'u', 't', 'd', 'o', 'w', 'n'}

var (
	errClosed        = errors.New("http2: connection closed")
	errOutboundFlood = errors.New("http2: peer does not read what it makes us send")
)

// connError is a connection error (RFC 9113 §5.4.1): Serve sends GOAWAY with code and closes.
type connError struct {
	code   h2.ErrCode
	reason string
}

func (e *connError) Error() string {
	return fmt.Sprintf("http2: connection error %v: %s", e.code, e.reason)
}

func connErr(code h2.ErrCode, format string, args ...any) error {
	return &connError{code: code, reason: fmt.Sprintf(format, args...)}
}

// ServerConn is the server side of one HTTP/2 connection (RFC 9113), built on x/net's Framer
// and HPACK so that extended CONNECT is per listener, END_STREAM is a half-close both ways and
// windows open only as handlers consume. Serve's goroutine reads frames and owns the stream
// state machine; one writer goroutine owns all writes; each request runs its handler on its own
// goroutine. All shared state is guarded by mu.
type ServerConn struct {
	nc     net.Conn
	br     *bufio.Reader
	bw     *PooledWriter
	cfg    ServerConfig
	stats  *Stats
	handle func(*ServerStream)
	fr     *h2.Framer         // ReadFrame*: Serve's goroutine; Write*: the writer
	ka     *Keepalive         // nil when keepalive is off; set under mu by Serve before anything else uses it
	ctx    *cancelctx.Context // the parent of the streams' contexts; cancelled when the connection ends

	// Owned by Serve's goroutine (the reader).
	src      *FrameSource // what the Framer reads from
	hdec     *hpack.Decoder
	block    headerBlock
	emptyRun int // consecutive empty HEADERS/CONTINUATION/DATA frames

	// Owned by the writer goroutine.
	henc *hpack.Encoder
	hbuf bytes.Buffer

	handlers   sync.WaitGroup
	writerDone chan struct{}

	mu            sync.Mutex
	queue         []outFrame
	batch         []outFrame // the queue's other half, kept between writer runs
	queued        int        // frames queued or being written: MaxOutboundFrames
	queuedControl int        // of which control frames: MaxOutboundControlFrames
	// The streams not yet done (closed on the wire and handler returned); openLocked finds those
	// not yet closed on the wire among them.
	active         map[uint32]*ServerStream
	maxClientID    uint32                      // highest stream id the client opened
	recent         *[recentClosed]closedStream // made at the first close: most tunnels' connections never close one
	recentNext     int
	opened         int          // streams opened over the connection's life (flood ratios)
	dataFramesSent atomic.Int64 // counted by the writer as each frame goes out
	priorityFrames int
	windowUpdates  int
	abuse          struct {
		start            time.Time
		resets, answered int
	}
	sendWin          int64 // the peer's connection window for our DATA
	recvWin          int64 // bytes the client may still send on the connection
	recvUnacked      int64 // bytes consumed or dropped, not yet returned in a WINDOW_UPDATE
	peerInitWin      int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame     uint32
	peerConnect      bool // the peer sent ENABLE_CONNECT_PROTOCOL=1
	settingsAcked    bool
	shutdown         bool // Shutdown: first GOAWAY sent
	goawayFinal      bool // the GOAWAY with the real last stream id sent: new streams are refused
	goawayReceived   bool
	shutdownTimer    *time.Timer
	closing          bool // a final GOAWAY is out; the connection ends when the writer is done
	closeWriteQueued bool
	writing          bool // the writer goroutine or a stream's direct write has the socket
	sending          bool // the tunnel engine is sending on the socket (BeginData..EndData)
	closePending     bool // abortLocked left the socket's close to EndData
	vec              vectored
	raw              bool // the reader reads the socket itself (serveRaw): close it asynchronously
	writerClosed     bool // the writer has ended for good (writerExit)
	writerOn         bool // a writer goroutine is running (kickWriterLocked)
	serving          bool // Serve has started: the writer may run
	closed           bool // the socket is closed
	err              error

	rawStop atomic.Bool // set with closed: serveRaw stops at the next frame

	// Set by Serve (or ServeLeaving) before it reads.
	serveCtx  context.Context
	stopWatch func() bool
	// The reader's: the socket (plain TCP), and the connection's read counter.
	rc      syscall.RawConn
	counter ReadCounter
	noPark  bool      // the reads never park (Serve, or ParkReads failed)
	closeBy time.Time // finishLocked's end of reading; guarded by mu
	pk      *parking  // the parked reads, once they first park (see ServeLeaving)
}

// headerBlock is the header block being decoded, filled by the HPACK emit callback.
type headerBlock struct {
	h          *headers.Map
	size       uint32 // RFC 9113 §6.5.2 size: name + value + 32 per field
	overflow   bool   // size passed MaxHeaderListSize: later fields were dropped
	err        error  // the first malformed field
	sawRegular bool
}

// NewServerConn wraps an accepted connection. br, when not nil, is the reader the listener
// sniffed the client preface with (its buffered bytes are read first); the connection owns it
// from then on, and gives it back to the buffer pool once it reads the socket directly. handle
// runs on its own goroutine for every request stream.
func NewServerConn(nc net.Conn, br *bufio.Reader, cfg ServerConfig, handle func(*ServerStream)) *ServerConn {
	cfg = cfg.withDefaults()
	if br == nil {
		br = bufio.NewReaderSize(nc, 16<<10)
	}
	c := &ServerConn{
		nc:           nc,
		br:           br,
		cfg:          cfg,
		stats:        cfg.Stats,
		handle:       handle,
		writerDone:   make(chan struct{}),
		active:       make(map[uint32]*ServerStream),
		sendWin:      initialWindow,
		recvWin:      int64(cfg.InitialConnectionWindowSize),
		peerInitWin:  initialWindow,
		peerMaxFrame: 16384,
	}
	c.ctx = cancelctx.New(context.Background())
	sock := rawsys.NewConnWriter(nc)
	deadline := &WriteDeadline{Timeout: cfg.WriteTimeout}
	c.bw = NewPooledWriter(deadlineWriter{nc: nc, sock: sock, deadline: deadline})
	if tc := plainTCP(nc); tc != nil && sock != nil {
		c.vec.w, c.vec.sock, c.vec.deadline = tc, sock, deadline
	}
	c.vec.sendFD = -1
	if c.vec.w != nil {
		if rc, err := c.vec.w.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { c.vec.sendFD = int(fd) })
		}
	}
	c.src = NewFrameSource(br)
	c.src.ReleaseReader(buffer.PutReader)
	c.fr = h2.NewFramer(c.bw, c.src)
	c.fr.SetMaxReadFrameSize(maxReadFrame)
	c.fr.SetReuseFrames()
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.hdec = hpack.NewDecoder(4096, c.emit)
	c.hdec.SetMaxStringLength(int(cfg.MaxHeaderListSize))
	// Our SETTINGS are the first frame (RFC 9113 §3.4), then the connection window.
	c.enqueueLocked(outFrame{kind: outSettings})
	if inc := cfg.InitialConnectionWindowSize - initialWindow; inc > 0 {
		c.enqueueLocked(outFrame{kind: outWindowUpdate, val: inc})
	}
	return c
}

// Serve runs the connection: it reads the client preface and SETTINGS, then frames, until the
// connection ends or ctx is done. It returns only after every handler goroutine it started has
// returned; the error is nil for an orderly end (peer close, Shutdown, Close).
func (c *ServerConn) Serve(ctx context.Context) error {
	c.noPark = true // Serve's caller waits for the end: nothing to gain from parking
	c.start(ctx)
	return c.finish(c.serve())
}

// start begins serving: the context's watch, keepalive, and the writer for our SETTINGS.
func (c *ServerConn) start(ctx context.Context) {
	c.serveCtx = ctx
	c.stopWatch = cancelctx.AfterFunc(ctx, c.Close)
	ka := c.cfg.Keepalive
	ka.ConnectionIdleInterval = 0 // a client-side option (Envoy's ClientConnectionImpl)
	c.mu.Lock()
	if !c.closed {
		c.ka = StartKeepalive(ka, c.sendKeepalive, c.keepaliveTimeout)
	}
	c.serving = true
	c.kickWriterLocked() // our SETTINGS are queued
	c.mu.Unlock()
}

// finish ends the connection once reading has stopped (why: err) and returns what Serve does.
func (c *ServerConn) finish(err error) error {
	var ce *connError
	if errors.As(err, &ce) {
		c.mu.Lock()
		c.goAwayLocked(ce.code, ce.reason)
		c.mu.Unlock()
		// Keep reading (and dropping) until the peer closes or closeGrace passes, so the GOAWAY
		// is read rather than lost to a reset of unread data.
		_ = c.nc.SetReadDeadline(time.Now().Add(closeGrace))
		var rest io.Reader = c.nc
		if c.br != nil {
			rest = c.br // not released: it may hold bytes
		}
		_, _ = io.Copy(io.Discard, rest)
	}
	c.src.end()
	c.mu.Lock()
	orderly := c.closing && c.err == nil
	c.abortLocked(err)
	c.mu.Unlock()
	<-c.writerDone
	c.handlers.Wait()
	c.stopWatch()
	switch {
	case c.serveCtx.Err() != nil:
		return c.serveCtx.Err()
	case ce != nil:
		return ce
	case orderly, errors.Is(c.err, errClosed), errors.Is(c.err, io.EOF):
		return nil
	}
	return c.err
}

// serve reads the preface and then every frame; it returns why reading stopped.
func (c *ServerConn) serve() error {
	_ = c.nc.SetReadDeadline(time.Now().Add(prefaceTimeout))
	var preface [len(h2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, preface[:]); err != nil {
		return err
	}
	if string(preface[:]) != h2.ClientPreface {
		return connErr(h2.ErrCodeProtocol, "invalid connection preface")
	}
	f, err := c.readFrame()
	if err != nil {
		return err
	}
	sf, ok := f.(*h2.SettingsFrame)
	if !ok || sf.IsAck() {
		return connErr(h2.ErrCodeProtocol, "first frame is not SETTINGS")
	}
	c.mu.Lock()
	if !c.closing {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	c.mu.Unlock()
	if err = c.onSettings(sf); err != nil {
		return err
	}
	if rc, counter := RawSocket(c.nc); rc != nil {
		return c.serveRaw(rc, counter)
	}
	for err == nil {
		f, err = c.readFrame()
		if se, ok := err.(h2.StreamError); ok {
			err = c.peerStreamError(se)
		} else if err == nil {
			err = c.processFrame(f)
		}
	}
	return err
}

// readFrame reads the next frame, mapping the Framer's errors to connection errors. A zero
// WINDOW_UPDATE increment on a stream comes back as an h2.StreamError for processFrame.
func (c *ServerConn) readFrame() (h2.Frame, error) {
	fh, err := c.fr.ReadFrameHeader()
	if err != nil {
		if errors.Is(err, h2.ErrFrameTooLarge) {
			return nil, connErr(h2.ErrCodeFrameSize, "%v frame of %d bytes", fh.Type, fh.Length)
		}
		return nil, c.framerErr(err)
	}
	c.ka.Received()
	f, err := c.fr.ReadFrameForHeader(fh)
	if err != nil {
		var se h2.StreamError
		if errors.As(err, &se) && fh.Type == h2.FrameWindowUpdate {
			return nil, se
		}
		return nil, c.framerErr(err)
	}
	return f, nil
}

func (c *ServerConn) framerErr(err error) error {
	var ce h2.ConnectionError
	var se h2.StreamError
	switch {
	case errors.As(err, &ce):
		reason := "invalid frame"
		if d := c.fr.ErrorDetail(); d != nil {
			reason = d.Error()
		}
		return connErr(h2.ErrCode(ce), "%s", reason)
	case errors.As(err, &se):
		// A HEADERS frame we cannot parse leaves HPACK state unknown: the connection must go.
		return connErr(h2.ErrCodeProtocol, "%v", se)
	}
	return err
}

// processFrame applies one frame to the connection (RFC 9113 §5.1 and §6).
func (c *ServerConn) processFrame(f h2.Frame) error {
	switch f := f.(type) {
	case *h2.DataFrame:
		return c.onData(f)
	case *h2.HeadersFrame:
		return c.onHeaders(f)
	case *h2.PriorityFrame:
		return c.onPriority(f)
	case *h2.RSTStreamFrame:
		return c.onRSTStream(f)
	case *h2.SettingsFrame:
		return c.onSettings(f)
	case *h2.PushPromiseFrame:
		return connErr(h2.ErrCodeProtocol, "PUSH_PROMISE from a client")
	case *h2.PingFrame:
		return c.onPing(f)
	case *h2.GoAwayFrame:
		return c.onGoAway()
	case *h2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *h2.ContinuationFrame:
		return connErr(h2.ErrCodeProtocol, "CONTINUATION without HEADERS")
	}
	return nil // RFC 9113 §5.5: unknown frame types are ignored
}

// peerStreamError applies a stream error the client caused with a frame on se.StreamID.
func (c *ServerConn) peerStreamError(se h2.StreamError) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if se.StreamID > c.maxClientID {
		return connErr(h2.ErrCodeProtocol, "stream error on idle stream %d", se.StreamID)
	}
	s := c.openLocked(se.StreamID)
	if s == nil {
		return nil
	}
	return c.resetLocked(se.StreamID, s, se.Code, true)
}

// trackEmpty counts consecutive frames without payload (CVE-2019-9518).
func (c *ServerConn) trackEmpty(empty bool) error {
	if !empty {
		c.emptyRun = 0
		return nil
	}
	c.emptyRun++
	if c.emptyRun > c.cfg.MaxConsecutiveInboundFramesWithEmptyPayload {
		c.stats.InboundEmptyFramesFlood.Inc()
		return connErr(h2.ErrCodeEnhanceYourCalm, "too many consecutive empty frames")
	}
	return nil
}

// emit is the HPACK decoder's callback: it builds c.block within MaxHeaderListSize.
func (c *ServerConn) emit(f hpack.HeaderField) {
	b := &c.block
	if b.overflow {
		return
	}
	b.size += f.Size()
	if b.size > c.cfg.MaxHeaderListSize {
		b.overflow = true
		return
	}
	if b.err == nil {
		b.err = AddWireField(b.h, f.Name, f.Value, &b.sawRegular)
	}
}

// readBlock decodes a header block: the HEADERS fragment and every CONTINUATION after it. It
// always decodes to the end, whatever becomes of the stream, because HPACK state is shared by the
// connection. The encoded block may be at most twice MaxHeaderListSize (at least 32 KiB): past
// that the sender is flooding (the CONTINUATION flood: Go CVE-2023-45288, Envoy CVE-2024-27919)
// and the connection ends.
func (c *ServerConn) readBlock(f *h2.HeadersFrame) (*headerBlock, error) {
	c.block = headerBlock{h: headers.New()}
	limit := max(2*int(c.cfg.MaxHeaderListSize), 32<<10) // serveRaw buffers up to this much too
	frag, ended := f.HeaderBlockFragment(), f.HeadersEnded()
	for encoded := 0; ; {
		if encoded += len(frag); encoded > limit {
			c.stats.HeaderOverflow.Inc()
			return nil, connErr(h2.ErrCodeEnhanceYourCalm, "header block over %d bytes", limit)
		}
		if _, err := c.hdec.Write(frag); err != nil {
			return nil, c.hpackErr(err)
		}
		if ended {
			break
		}
		next, err := c.readFrame()
		if err != nil {
			return nil, err
		}
		cf, ok := next.(*h2.ContinuationFrame)
		if !ok { // the Framer's order check makes this unreachable
			return nil, connErr(h2.ErrCodeProtocol, "expected CONTINUATION")
		}
		if err := c.trackEmpty(len(cf.HeaderBlockFragment()) == 0); err != nil {
			return nil, err
		}
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := c.hdec.Close(); err != nil {
		return nil, c.hpackErr(err)
	}
	return &c.block, nil
}

func (c *ServerConn) hpackErr(err error) error {
	if errors.Is(err, hpack.ErrStringLength) {
		c.stats.HeaderOverflow.Inc()
		return connErr(h2.ErrCodeEnhanceYourCalm, "header field longer than %d bytes", c.cfg.MaxHeaderListSize)
	}
	return connErr(h2.ErrCodeCompression, "%v", err)
}

func (c *ServerConn) onHeaders(f *h2.HeadersFrame) error {
	id, endStream := f.StreamID, f.StreamEnded()
	selfDep := f.HasPriority() && f.Priority.StreamDep == id
	if err := c.trackEmpty(len(f.HeaderBlockFragment()) == 0 && !endStream); err != nil {
		return err
	}
	blk, err := c.readBlock(f)
	// The stream (or the trailers) own the map from here: a connection that carries one tunnel
	// and then goes quiet for hours must not keep its request's headers through the block.
	defer func() { c.block.h = nil }()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if id%2 == 0 {
		return connErr(h2.ErrCodeProtocol, "HEADERS on even stream %d", id)
	}
	if s := c.openLocked(id); s != nil {
		return c.onTrailersLocked(s, blk, endStream)
	}
	if id <= c.maxClientID {
		switch cs := c.closedLocked(id); {
		case cs == nil: // never opened: the client went back in stream ids (RFC 9113 §5.1.1)
			return connErr(h2.ErrCodeProtocol, "HEADERS on stream %d after stream %d", id, c.maxClientID)
		case cs.reset:
			return nil
		}
		return connErr(h2.ErrCodeStreamClosed, "HEADERS on closed stream %d", id)
	}
	c.maxClientID = id
	switch {
	case selfDep:
		return c.resetLocked(id, nil, h2.ErrCodeProtocol, true)
	case c.goawayFinal || c.goawayReceived || c.closing:
		return c.resetLocked(id, nil, h2.ErrCodeRefusedStream, false)
	case blk.overflow:
		c.stats.HeaderOverflow.Inc()
		return c.resetLocked(id, nil, h2.ErrCodeInternal, true)
	case blk.err != nil:
		return c.malformedLocked(id, nil, blk.err)
	}
	h := blk.h
	if err := CheckFields(h, true); err != nil {
		return c.malformedLocked(id, nil, err)
	}
	extended, err := RequestFromH2(h, c.cfg.AllowConnect)
	if err != nil {
		return c.malformedLocked(id, nil, err)
	}
	cl, err := contentLength(h)
	if err != nil {
		return c.malformedLocked(id, nil, err)
	}
	if endStream && cl > 0 {
		return c.malformedLocked(id, nil, malformed("content-length %d without DATA", cl))
	}
	if len(c.active) >= int(c.cfg.MaxConcurrentStreams) {
		c.stats.StreamRefusedErrors.Inc()
		return c.resetLocked(id, nil, h2.ErrCodeRefusedStream, false)
	}
	s := &ServerStream{
		c: c, id: id, hdr: h, extended: extended, endStream: endStream,
		recvWin: c.streamRecvWindowLocked(), sendWin: c.peerInitWin, cl: cl, remoteClosed: endStream,
	}
	s.cond.L = &c.mu
	s.ctx = cancelctx.New(c.ctx)
	c.active[id] = s
	c.opened++
	c.stats.StreamsActive.Inc()
	c.handlers.Add(1)
	go c.runHandler(s)
	return nil
}

// contentLength parses the request's content-length: -1 when absent; several values must agree.
func contentLength(h *headers.Map) (int64, error) {
	vals := h.Values("content-length")
	if len(vals) == 0 {
		return -1, nil
	}
	n, err := strconv.ParseInt(vals[0], 10, 64)
	if err != nil || n < 0 || strings.TrimLeft(vals[0], "0123456789") != "" {
		return 0, malformed("invalid content-length")
	}
	for _, v := range vals[1:] {
		if v != vals[0] {
			return 0, malformed("conflicting content-length")
		}
	}
	return n, nil
}

// onTrailersLocked handles a second HEADERS on an open stream: trailers, which must end the
// stream and carry no pseudo-header (RFC 9113 §8.1). They are counted and dropped.
func (c *ServerConn) onTrailersLocked(s *ServerStream, blk *headerBlock, endStream bool) error {
	switch {
	case s.remoteClosed:
		return c.resetLocked(s.id, s, h2.ErrCodeStreamClosed, true)
	case blk.overflow:
		c.stats.HeaderOverflow.Inc()
		return c.resetLocked(s.id, s, h2.ErrCodeInternal, true)
	case !endStream:
		return c.malformedLocked(s.id, s, malformed("HEADERS without END_STREAM after the request headers"))
	case blk.err != nil:
		return c.malformedLocked(s.id, s, blk.err)
	}
	for _, f := range blk.h.Fields() {
		if strings.HasPrefix(f.Name, ":") {
			return c.malformedLocked(s.id, s, malformed("pseudo-header %s in trailers", f.Name))
		}
	}
	if err := CheckFields(blk.h, true); err != nil {
		return c.malformedLocked(s.id, s, err)
	}
	c.stats.Trailers.Inc()
	return c.endRemoteLocked(s)
}

func (c *ServerConn) onData(f *h2.DataFrame) error {
	data := f.Data()
	if err := c.trackEmpty(len(data) == 0 && !f.StreamEnded()); err != nil {
		return err
	}
	n := int64(f.Length) // padding counts against flow control (RFC 9113 §6.1)
	id := f.StreamID
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.recvWin {
		return connErr(h2.ErrCodeFlowControl, "DATA beyond the connection window")
	}
	c.recvWin -= n
	s := c.openLocked(id)
	if s == nil || s.remoteClosed {
		c.creditConnLocked(n)
		if s == nil && id > c.maxClientID {
			return connErr(h2.ErrCodeProtocol, "DATA on idle stream %d", id)
		}
		if cs := c.closedLocked(id); s == nil && cs != nil && cs.reset {
			return nil
		}
		return c.resetLocked(id, s, h2.ErrCodeStreamClosed, true)
	}
	if n > s.recvWin {
		c.creditConnLocked(n)
		return c.resetLocked(id, s, h2.ErrCodeFlowControl, true)
	}
	s.recvWin -= n
	if pad := n - int64(len(data)); pad > 0 {
		c.creditLocked(s, pad)
	}
	if len(data) > 0 {
		s.got += int64(len(data))
		if s.cl >= 0 && s.got > s.cl {
			c.creditConnLocked(int64(len(data)))
			return c.malformedLocked(id, s, malformed("more DATA than content-length"))
		}
		if s.sink != nil && s.buf.n == 0 && !s.consuming {
			if data = c.passLocked(s, data); s.err != nil {
				return nil // reset while the sink ran: the stream is gone
			}
		}
		if len(data) > 0 {
			s.buf.write(data)
			s.readableLocked()
		}
	}
	if f.StreamEnded() {
		return c.endRemoteLocked(s)
	}
	return nil
}

// passLocked offers p to the stream's sink (see SetDataSink), with c.mu released meanwhile, and
// returns what the sink did not take. Only this goroutine adds to the stream's queue, so the
// queue is still empty when the lock is back. What the sink took opens the windows as Read would.
func (c *ServerConn) passLocked(s *ServerStream, p []byte) []byte {
	sink := s.sink
	c.mu.Unlock()
	n := sink(p)
	c.mu.Lock()
	if n > 0 {
		c.creditLocked(s, int64(n))
	}
	if p = p[n:]; s.err != nil {
		c.creditConnLocked(int64(len(p))) // nobody will read it
		return nil
	}
	return p
}

// endRemoteLocked applies the client's END_STREAM.
func (c *ServerConn) endRemoteLocked(s *ServerStream) error {
	if s.cl >= 0 && s.got != s.cl {
		return c.malformedLocked(s.id, s, malformed("content-length %d but %d bytes of DATA", s.cl, s.got))
	}
	s.remoteClosed = true
	s.readableLocked()
	if s.localClosed {
		c.closeStreamLocked(s, nil)
	}
	return nil
}

// endLocalLocked applies our END_STREAM.
func (c *ServerConn) endLocalLocked(s *ServerStream) {
	s.localClosed = true
	if s.remoteClosed {
		c.closeStreamLocked(s, nil)
	}
}

func (c *ServerConn) onPriority(f *h2.PriorityFrame) error {
	c.mu.Lock()
	c.priorityFrames++
	flood := c.priorityFrames > c.cfg.MaxInboundPriorityFramesPerStream*(1+c.opened)
	c.mu.Unlock()
	if flood {
		c.stats.InboundPriorityFramesFlood.Inc()
		return connErr(h2.ErrCodeEnhanceYourCalm, "too many PRIORITY frames")
	}
	if f.StreamDep == f.StreamID { // RFC 9113 §5.3.1: a stream cannot depend on itself
		return c.peerStreamError(h2.StreamError{StreamID: f.StreamID, Code: h2.ErrCodeProtocol})
	}
	return nil
}

func (c *ServerConn) onRSTStream(f *h2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID > c.maxClientID {
		return connErr(h2.ErrCodeProtocol, "RST_STREAM on idle stream %d", f.StreamID)
	}
	s := c.openLocked(f.StreamID)
	if s == nil {
		return nil
	}
	c.stats.RxReset.Inc()
	premature := !s.answered
	c.closeStreamLocked(s, &StreamError{Code: f.ErrCode, Remote: true})
	if premature {
		return c.noteAbuseLocked()
	}
	return nil
}

func (c *ServerConn) onSettings(f *h2.SettingsFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.IsAck() {
		if !c.settingsAcked {
			// A smaller INITIAL_WINDOW_SIZE than the default binds the client only from its ack.
			c.settingsAcked = true
			if delta := int64(c.cfg.InitialStreamWindowSize) - initialWindow; delta < 0 {
				for _, s := range c.active {
					if !s.wireClosed {
						s.recvWin += delta
					}
				}
			}
		}
		return nil
	}
	err := f.ForeachSetting(func(st h2.Setting) error {
		if err := st.Valid(); err != nil {
			var ce h2.ConnectionError
			errors.As(err, &ce)
			return connErr(h2.ErrCode(ce), "invalid %v", st)
		}
		switch st.ID {
		case h2.SettingHeaderTableSize:
			c.enqueueLocked(outFrame{kind: outTableSize, val: st.Val})
		case h2.SettingInitialWindowSize:
			// RFC 9113 §6.9.2: the change applies to every open stream's window.
			delta := int64(st.Val) - c.peerInitWin
			c.peerInitWin = int64(st.Val)
			for _, s := range c.active {
				if s.wireClosed {
					continue
				}
				if s.sendWin += delta; s.sendWin > maxWindow {
					return connErr(h2.ErrCodeFlowControl, "stream window over 2^31-1")
				}
				s.cond.Broadcast()
			}
		case h2.SettingMaxFrameSize:
			c.peerMaxFrame = st.Val
		case h2.SettingEnableConnectProtocol:
			if c.peerConnect && st.Val == 0 { // RFC 8441 §3: 0 must not follow 1
				return connErr(h2.ErrCodeProtocol, "ENABLE_CONNECT_PROTOCOL changed from 1 to 0")
			}
			c.peerConnect = st.Val == 1
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.enqueueLocked(outFrame{kind: outSettingsAck})
	return nil
}

func (c *ServerConn) onPing(f *h2.PingFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.IsAck() {
		c.ka.Acked()
		if f.Data == shutdownPing {
			c.finalGoAwayLocked()
		}
		return nil
	}
	c.enqueueLocked(outFrame{kind: outPing, end: true, ping: f.Data})
	return nil
}

// onGoAway: the client will open no more streams; the connection ends when the open ones do.
func (c *ServerConn) onGoAway() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goawayReceived = true
	if len(c.active) == 0 {
		c.finishLocked()
	}
	return nil
}

func (c *ServerConn) onWindowUpdate(f *h2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.windowUpdates++
	if c.windowUpdates > 1+2*(c.opened+c.cfg.MaxInboundWindowUpdateFramesPerDataFrameSent*int(c.dataFramesSent.Load())) {
		c.stats.InboundWindowUpdateFramesFlood.Inc()
		return connErr(h2.ErrCodeEnhanceYourCalm, "too many WINDOW_UPDATE frames")
	}
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if c.sendWin += inc; c.sendWin > maxWindow {
			return connErr(h2.ErrCodeFlowControl, "connection window over 2^31-1")
		}
		c.wakeWritersLocked()
		return nil
	}
	if f.StreamID > c.maxClientID {
		return connErr(h2.ErrCodeProtocol, "WINDOW_UPDATE on idle stream %d", f.StreamID)
	}
	s := c.openLocked(f.StreamID)
	if s == nil {
		return nil
	}
	if s.sendWin += inc; s.sendWin > maxWindow {
		return c.resetLocked(s.id, s, h2.ErrCodeFlowControl, true)
	}
	s.cond.Broadcast()
	return nil
}

// streamRecvWindowLocked is the window a new stream starts with, as the client sees it. A larger
// window than the default is trusted at once (a client may use it as soon as it reads our SETTINGS,
// before its ack reaches us); a smaller one only once acked.
func (c *ServerConn) streamRecvWindowLocked() int64 {
	if c.settingsAcked {
		return int64(c.cfg.InitialStreamWindowSize)
	}
	return max(int64(c.cfg.InitialStreamWindowSize), initialWindow)
}

// wakeWritersLocked wakes every stream that may wait for the connection window.
func (c *ServerConn) wakeWritersLocked() {
	for _, s := range c.active {
		if !s.wireClosed {
			s.cond.Broadcast()
		}
	}
}

// creditLocked returns n bytes the handler consumed (or we dropped) to the stream and connection
// windows, batching WINDOW_UPDATEs to half of each initial window.
func (c *ServerConn) creditLocked(s *ServerStream, n int64) {
	if !s.remoteClosed && !s.wireClosed {
		s.recvUnacked += n
		if s.recvUnacked >= max(int64(c.cfg.InitialStreamWindowSize)/2, 1) {
			c.enqueueLocked(outFrame{kind: outWindowUpdate, id: s.id, val: uint32(s.recvUnacked)})
			s.recvWin += s.recvUnacked
			s.recvUnacked = 0
		}
	}
	c.creditConnLocked(n)
}

func (c *ServerConn) creditConnLocked(n int64) {
	c.recvUnacked += n
	if c.recvUnacked >= int64(c.cfg.InitialConnectionWindowSize)/2 {
		c.enqueueLocked(outFrame{kind: outWindowUpdate, val: uint32(c.recvUnacked)})
		c.recvWin += c.recvUnacked
		c.recvUnacked = 0
	}
}

// malformedLocked handles a malformed request (RFC 9113 §8.1.1): rx_messaging_error, then a
// connection error, or with StreamErrorOnInvalidMessage a stream error.
func (c *ServerConn) malformedLocked(id uint32, s *ServerStream, why error) error {
	c.stats.RxMessagingError.Inc()
	if !c.cfg.StreamErrorOnInvalidMessage {
		return connErr(h2.ErrCodeProtocol, "stream %d: %v", id, why)
	}
	return c.resetLocked(id, s, h2.ErrCodeProtocol, true)
}

// resetLocked sends RST_STREAM(code) on id and closes s (which may be nil for a stream that never
// reached a handler). fault marks a reset the client caused, which counts as abusive.
func (c *ServerConn) resetLocked(id uint32, s *ServerStream, code h2.ErrCode, fault bool) error {
	if s != nil {
		if s.wireClosed {
			return nil
		}
		c.closeStreamLocked(s, &StreamError{Code: code})
	}
	if c.enqueueLocked(outFrame{kind: outRST, id: id, val: uint32(code)}) {
		c.stats.TxReset.Inc()
	}
	if s == nil {
		c.rememberClosedLocked(id, true)
	}
	if fault {
		return c.noteAbuseLocked()
	}
	return nil
}

// closedStream remembers how a stream closed. Frames the client sent before it saw our
// RST_STREAM are ignored; other frames on a closed stream are STREAM_CLOSED errors, and a HEADERS
// on a lower id that was never opened is a PROTOCOL_ERROR (RFC 9113 §5.1, §5.1.1).
type closedStream struct {
	id    uint32
	reset bool // we sent RST_STREAM
}

func (c *ServerConn) rememberClosedLocked(id uint32, reset bool) {
	if c.recent == nil {
		c.recent = new([recentClosed]closedStream)
	}
	c.recent[c.recentNext] = closedStream{id: id, reset: reset}
	c.recentNext = (c.recentNext + 1) % recentClosed
}

// closedLocked finds id among the recently closed streams, or nil.
func (c *ServerConn) closedLocked(id uint32) *closedStream {
	if c.recent == nil {
		return nil
	}
	for i := range c.recent {
		if c.recent[i].id == id {
			return &c.recent[i]
		}
	}
	return nil
}

// noteAbuseLocked counts one abusive reset and applies the rapid-reset rule (see resetWindow).
func (c *ServerConn) noteAbuseLocked() error {
	c.rollAbuseWindowLocked()
	c.abuse.resets++
	if c.abuse.resets > maxAbusiveResets && c.abuse.resets > 2*c.abuse.answered {
		return connErr(h2.ErrCodeEnhanceYourCalm, "%d streams reset before a response", c.abuse.resets)
	}
	return nil
}

func (c *ServerConn) noteAnsweredLocked() {
	c.rollAbuseWindowLocked()
	c.abuse.answered++
}

func (c *ServerConn) rollAbuseWindowLocked() {
	if now := time.Now(); now.Sub(c.abuse.start) > resetWindow {
		c.abuse.start, c.abuse.resets, c.abuse.answered = now, 0, 0
	}
}

// closeStreamLocked closes s on the wire: openLocked no longer finds it, its context ends and blocked
// calls wake. err (a *StreamError) marks a reset; its unread bytes are dropped.
func (c *ServerConn) closeStreamLocked(s *ServerStream, err error) {
	if s.wireClosed {
		return
	}
	s.wireClosed = true
	var se *StreamError
	c.rememberClosedLocked(s.id, errors.As(err, &se) && !se.Remote && !se.Conn)
	if err != nil {
		s.err = err
		c.creditConnLocked(int64(s.buf.reset()))
	}
	s.ctx.Cancel()
	s.readableLocked()
	c.maybeDoneLocked(s)
}

// openLocked returns stream id if it is open on the wire (not yet closed by both END_STREAMs or
// a reset), else nil. One map serves both sets: a connection per tunnel paid ~140 bytes for a
// second.
func (c *ServerConn) openLocked(id uint32) *ServerStream {
	if s := c.active[id]; s != nil && !s.wireClosed {
		return s
	}
	return nil
}

// maybeDoneLocked retires s once it is closed on the wire and its handler has returned.
func (c *ServerConn) maybeDoneLocked(s *ServerStream) {
	if s.done || !s.wireClosed || !s.handlerDone {
		return
	}
	s.done = true
	delete(c.active, s.id)
	c.stats.StreamsActive.Dec()
	if len(c.active) == 0 && (c.goawayFinal || c.goawayReceived) {
		c.finishLocked()
	}
}

// runHandler is the goroutine of one request stream. A handler that detached the stream leaves
// its end to the finish Detach gave it.
func (c *ServerConn) runHandler(s *ServerStream) {
	defer func() {
		if !s.detached {
			c.handlerReturned(s)
			c.handlers.Done()
		}
	}()
	c.handle(s)
}

// handlerReturned finishes what the handler left: unread request bytes go back to the connection
// window; a response without END_STREAM is reset (INTERNAL_ERROR: a truncated response must not
// look complete); a finished response while the client still sends gets RST_STREAM(NO_ERROR)
// (RFC 9113 §8.1).
func (c *ServerConn) handlerReturned(s *ServerStream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.handlerDone = true
	c.creditConnLocked(int64(s.buf.reset()))
	if !s.wireClosed {
		code := h2.ErrCodeNo
		if !s.localClosed {
			code = h2.ErrCodeInternal
		}
		_ = c.resetLocked(s.id, s, code, false)
	}
	c.maybeDoneLocked(s)
}

// Shutdown starts a graceful close, as Go and Envoy do: a GOAWAY with the largest stream id (so
// requests already in flight are still taken), a PING, and once its ack arrives or DrainTimeout
// passes, a GOAWAY with the real last stream id. Later streams are refused, and the connection
// closes when the open ones finish.
func (c *ServerConn) Shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shutdown || c.closing || c.closed {
		return
	}
	c.shutdown = true
	if c.enqueueLocked(outFrame{kind: outGoAway, id: maxWindow, val: uint32(h2.ErrCodeNo)}) {
		c.stats.GoawaySent.Inc()
	}
	c.enqueueLocked(outFrame{kind: outPing, ping: shutdownPing})
	c.shutdownTimer = time.AfterFunc(c.cfg.DrainTimeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.finalGoAwayLocked()
	})
}

func (c *ServerConn) finalGoAwayLocked() {
	if !c.shutdown || c.goawayFinal || c.closing || c.closed {
		return
	}
	c.goawayFinal = true
	c.shutdownTimer.Stop()
	if c.enqueueLocked(outFrame{kind: outGoAway, id: c.maxClientID, val: uint32(h2.ErrCodeNo)}) {
		c.stats.GoawaySent.Inc()
	}
	if len(c.active) == 0 {
		c.finishLocked()
	}
}

// finishLocked ends an orderly connection with no streams left: the writer flushes and
// half-closes, and reading stops after closeGrace unless the client closes first.
func (c *ServerConn) finishLocked() {
	if c.closing || c.closed {
		return
	}
	c.closing = true
	c.enqueueLocked(outFrame{kind: outCloseWrite})
	c.closeBy = time.Now().Add(closeGrace)
	_ = c.nc.SetReadDeadline(c.closeBy)
	c.unparkLocked()
}

// goAwayLocked starts closing on a connection error: GOAWAY(code) with the last stream id we
// processed, every stream fails, and the writer half-closes after the GOAWAY.
func (c *ServerConn) goAwayLocked(code h2.ErrCode, reason string) {
	if c.closing || c.closed {
		return
	}
	if c.enqueueLocked(outFrame{kind: outGoAway, id: c.maxClientID, val: uint32(code), data: []byte(reason)}) {
		c.stats.GoawaySent.Inc()
	}
	c.closing = true
	c.enqueueLocked(outFrame{kind: outCloseWrite})
	for _, s := range c.active {
		c.closeStreamLocked(s, &StreamError{Code: code, Conn: true})
	}
}

// Close closes the connection at once: no GOAWAY; every stream fails and Serve returns once the
// handlers have.
func (c *ServerConn) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.abortLocked(errClosed)
}

// abortLocked closes the socket and fails everything still open.
func (c *ServerConn) abortLocked(err error) {
	if c.closed {
		return
	}
	c.closed = true
	if c.err == nil {
		c.err = err
	}
	if c.shutdownTimer != nil {
		c.shutdownTimer.Stop()
	}
	c.ka.Stop()
	c.ctx.Cancel()
	if c.sending {
		c.closePending = true // EndData closes it: the engine is sending on the descriptor
	} else {
		c.closeSocketLocked()
	}
	for _, s := range c.active {
		c.closeStreamLocked(s, &StreamError{Code: h2.ErrCodeCancel, Conn: true})
		s.cond.Broadcast()
	}
	c.kickWriterLocked() // a writer that runs now sees closed and ends for good
}

// closeSocketLocked closes the connection's socket.
func (c *ServerConn) closeSocketLocked() {
	c.closePending = false
	if c.closeParkedLocked() {
		return
	}
	if c.raw {
		// The reader holds the socket while it processes frames, and may be waiting for c.mu
		// (or be the caller); Go's Close waits for every holder. Close from a goroutine of its
		// own: it wakes the reader and the writer at once, and completes when they let go.
		c.rawStop.Store(true)
		go c.nc.Close()
	} else {
		_ = c.nc.Close()
	}
}

// sendKeepalive queues a keepalive PING; it runs on the Keepalive's timer goroutine.
func (c *ServerConn) sendKeepalive(data [8]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enqueueLocked(outFrame{kind: outPing, ping: data})
}

// keepaliveTimeout closes a connection whose keepalive PING went unanswered: no GOAWAY (the peer
// is presumed dead), every stream fails, and Serve returns ErrKeepaliveTimeout.
func (c *ServerConn) keepaliveTimeout() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.stats.KeepaliveTimeout.Inc()
	c.abortLocked(ErrKeepaliveTimeout)
}

// connLostLocked is the error for a write on a connection that is going away.
func (c *ServerConn) connLostLocked() error {
	return &StreamError{Code: h2.ErrCodeCancel, Conn: true}
}
