package client

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/cancelctx"
)

// ClientStream is one request/response exchange (or one tunnel) on a ClientConn. Write is for
// one goroutine and Read for one goroutine (they may be different); Response, Reset and the
// accessors are safe from any goroutine.
type ClientStream struct {
	c       *ClientConn
	ctx     *cancelctx.Context
	stopCtx func() bool // stops the AfterFunc that resets the stream when ctx ends early
	method  string
	upgrade string // the Upgrade token when this is an extended CONNECT, else ""

	hdrReady chan struct{} // closed when the final response headers or an error arrived; nil once Response took them
	// cap 1, made under c.mu by the first wait (a tunnel whose DATA goes to a sink seldom waits):
	readNotify chan struct{} // read-side state changed (data, end, error)
	sendNotify chan struct{} // send window grew or the stream ended
	wdone      chan error    // cap 1: the writer's answer to NewStream's HEADERS and Write's last DATA

	// owned by the writer goroutine
	rstSent bool

	// guarded by c.mu
	id         uint32
	reserved   bool // counts in c.active
	registered bool // HEADERS written; in c.streams
	sentEnd    bool // END_STREAM queued
	recvEnd    bool // END_STREAM received
	closed     bool
	hdrClosed  bool
	resp       *headers.Map // the final response headers until Response hands them over
	respGot    bool         // the final response headers arrived
	respEnd    bool
	trailers   *headers.Map
	rerr       error // read side: why Read/Response fail
	werr       error // write side: why Write fails
	// rbuf holds received DATA not yet read, from roff; it is nil while empty, its array back in
	// rbufPool, and rbufHolder is the pool's holder for it, kept so that returning it is free.
	rbuf       []byte
	roff       int
	rbufHolder *[]byte
	recvWindow int64 // what the peer may still send on this stream
	recvUnack  int64 // consumed, not yet returned with WINDOW_UPDATE
	sendWindow int64
	contentLen int64 // declared response content-length, -1 if none or not checked
	recvBytes  int64
	sink       func(p []byte) int // see SetDataSink; nil: every DATA byte goes through Read
	readHook   func()             // see SetReadHook
	consuming  bool               // the reader has bytes from Read it has not finished with
}

func newStream(c *ClientConn, ctx context.Context, method, upgrade string) *ClientStream {
	s := &ClientStream{
		c:          c,
		method:     strings.Clone(method),  // not views of the request head: a tunnel would keep
		upgrade:    strings.Clone(upgrade), // the whole head for its life
		hdrReady:   make(chan struct{}),
		wdone:      make(chan error, 1),
		contentLen: -1,
	}
	s.ctx = cancelctx.New(ctx)
	return s
}

// Context is done when the stream has ended: both directions closed, reset, or the connection
// lost. It derives from NewStream's ctx.
func (s *ClientStream) Context() context.Context { return s.ctx }

// ID is the HTTP/2 stream identifier, for logs.
func (s *ClientStream) ID() uint32 {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.id
}

// Response waits for the final response headers: interim 1xx are skipped; the block is checked
// (RFC 9113 §8.2, a missing or 101 :status is malformed and resets the stream) and translated to
// the internal shape: for an upgrade, 200 becomes 101 + upgrade + connection: upgrade, other
// statuses pass unchanged. The map belongs to the caller: the stream lets go of it (a tunnel
// outlives its response by hours), and a second call gets errResponseTaken.
func (s *ClientStream) Response(ctx context.Context) (*headers.Map, error) {
	s.c.mu.Lock()
	ready := s.hdrReady
	s.c.mu.Unlock()
	if ready != nil {
		if err := cancelctx.Wait(ctx, ready); err != nil {
			return nil, err
		}
	}
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if !s.respGot {
		return nil, s.rerr
	}
	h := s.resp
	if h == nil {
		return nil, errResponseTaken
	}
	s.resp = nil
	s.hdrReady = nil // closed, and no one needs it now (hdrClosed keeps closeLocked off it)
	return h, nil
}

var errResponseTaken = errors.New("http2 client: the response headers were already taken")

// EndStreamOnHeaders reports whether the final response headers carried END_STREAM: there is
// no body (and, for an upgrade, the upstream already half-closed).
func (s *ClientStream) EndStreamOnHeaders() bool {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.respEnd
}

// Trailers returns the response trailers, or nil; they are complete once Read returned io.EOF.
func (s *ClientStream) Trailers() *headers.Map {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.trailers
}

// Read reads response DATA; io.EOF once END_STREAM arrived and everything was read. Windows
// are returned to the peer only as data is read here, in batches of a quarter window.
func (s *ClientStream) Read(p []byte) (int, error) {
	c := s.c
	for {
		c.mu.Lock()
		s.consuming = false
		if s.rerr != nil {
			err := s.rerr
			c.mu.Unlock()
			return 0, err
		}
		if s.roff < len(s.rbuf) {
			if len(p) == 0 {
				c.mu.Unlock()
				return 0, nil
			}
			n := copy(p, s.rbuf[s.roff:])
			s.roff += n
			if s.roff == len(s.rbuf) {
				s.releaseRbufLocked()
			}
			cr := c.creditLocked(s, int64(n))
			s.consuming = true
			c.mu.Unlock()
			c.sendCredit(cr)
			return n, nil
		}
		if s.recvEnd {
			c.mu.Unlock()
			return 0, io.EOF
		}
		wake := s.readWaitLocked()
		c.mu.Unlock()
		select {
		case <-wake:
		case <-s.ctx.Done():
			s.onCtxDone()
		}
	}
}

// SetDataSink lets the connection's reader hand response DATA to sink itself, from the frame it
// just read, instead of queueing it for Read: a tunnel then costs no wake-up of the reading
// goroutine and no copy per message. sink must not block: it takes what it can at once and
// returns how much; the rest is queued for Read as before. The reader offers DATA only while
// nothing is queued and Read's caller is back in Read or WaitReadable (not still passing on what
// it read last), so bytes reach sink and Read in the order they came. Bytes sink takes count as
// read for flow control.
func (s *ClientStream) SetDataSink(sink func(p []byte) int) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.sink = sink
}

// SetReadHook has the connection's reader call hook whenever a Read would newly return at once:
// DATA was queued for Read (the sink, if any, did not take it), END_STREAM came, or the stream
// failed. It lets a caller read on demand instead of parking a goroutine in Read (see
// TryWaitReadable); such a caller must watch the stream's context itself, as Read would. hook
// runs with the connection's lock held: it must not block or call into the stream. nil removes
// it.
func (s *ClientStream) SetReadHook(hook func()) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.readHook = hook
}

// TryWaitReadable is WaitReadable that does not wait: it reports whether a Read would return at
// once. Like WaitReadable it marks the caller as done with what it read before, so the sink may
// take DATA again.
func (s *ClientStream) TryWaitReadable() bool {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	s.consuming = false
	return s.rerr != nil || s.roff < len(s.rbuf) || s.recvEnd
}

// Buffered is how many response DATA bytes are waiting to be read, so a reader can take a larger
// buffer when bulk data is queued.
func (s *ClientStream) Buffered() int {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return len(s.rbuf) - s.roff
}

// WaitReadable blocks until a Read would return at once — data, END_STREAM or an error — without
// taking any bytes, so a caller borrows a buffer only when there is something to copy into it.
func (s *ClientStream) WaitReadable() {
	c := s.c
	for {
		c.mu.Lock()
		s.consuming = false
		ready := s.rerr != nil || s.roff < len(s.rbuf) || s.recvEnd
		var wake chan struct{}
		if !ready {
			wake = s.readWaitLocked()
		}
		c.mu.Unlock()
		if ready {
			return
		}
		select {
		case <-wake:
		case <-s.ctx.Done():
			s.onCtxDone()
		}
	}
}

// Write sends request DATA: split into frames no larger than the peer's MAX_FRAME_SIZE and
// blocked by the peer's stream and connection windows. end sets END_STREAM on the last frame,
// half-closing the request side; Write(nil, true) sends an empty DATA frame with END_STREAM.
// p is not retained after Write returns.
func (s *ClientStream) Write(p []byte, end bool) error {
	c := s.c
	for {
		c.mu.Lock()
		if s.werr != nil {
			err := s.werr
			c.mu.Unlock()
			return err
		}
		if s.sentEnd {
			c.mu.Unlock()
			return ErrStreamClosed
		}
		if len(p) == 0 && !end {
			c.mu.Unlock()
			return nil
		}
		n := int64(len(p))
		if n > 0 {
			win := min(s.sendWindow, c.sendWindow)
			if win <= 0 {
				wake := s.sendWaitLocked()
				c.mu.Unlock()
				select {
				case <-wake:
				case <-s.ctx.Done():
					s.onCtxDone()
				}
				continue
			}
			n = min(n, win, maxDataChunk) // framed by the writer at the peer's MAX_FRAME_SIZE
			s.sendWindow -= n
			c.sendWindow -= n
		}
		last := n == int64(len(p))
		req := writeReq{kind: wData, s: s, data: p[:n], end: last && end}
		if last {
			req.done = s.wdone
			if end {
				s.sentEnd = true
				s.maybeFinishLocked()
			}
		}
		c.mu.Unlock()
		if ok, err := c.writeDirect(req); ok {
			if err != nil || last {
				return err
			}
			p = p[n:]
			continue
		}
		if err := c.enqueue(req); err != nil {
			return err
		}
		if last {
			return c.waitDone(s.wdone)
		}
		p = p[n:]
	}
}

// Reset abandons the stream with RST_STREAM(code) (counted in tx_reset). Read, Write and a
// pending Response fail afterwards. It does nothing once the stream has ended.
func (s *ClientStream) Reset(code ErrCode) {
	s.reset(code, nil)
}

func (s *ClientStream) reset(code ErrCode, cause error) {
	c := s.c
	c.mu.Lock()
	send, cr := s.resetLocked(code, cause)
	c.mu.Unlock()
	c.sendCredit(cr)
	if send {
		c.enqueue(writeReq{kind: wRST, s: s, code: code})
	}
}

// onCtxDone resets a stream whose context ended before the stream did.
func (s *ClientStream) onCtxDone() {
	s.reset(h2.ErrCodeCancel, s.ctx.Cause())
}

// resetLocked ends the stream from this side. It reports whether an RST_STREAM must be sent
// (the stream's HEADERS went out) and the window credit freed by discarded data.
func (s *ClientStream) resetLocked(code ErrCode, cause error) (send bool, cr credit) {
	if s.closed {
		return false, credit{}
	}
	s.c.stats.TxReset.Inc()
	n := s.failLocked(&StreamError{Code: code, Cause: cause}, true)
	return s.registered, s.c.creditLocked(nil, n)
}

// failLocked ends the stream with err. A response already complete (END_STREAM received)
// stays readable unless discard; otherwise unread data is dropped and its byte count returned
// so the caller can return it to the connection window.
func (s *ClientStream) failLocked(err error, discard bool) (dropped int64) {
	if s.closed {
		return 0
	}
	if s.werr == nil {
		s.werr = err
	}
	if !s.recvEnd || discard {
		if s.rerr == nil {
			s.rerr = err
		}
		dropped = int64(len(s.rbuf) - s.roff)
		s.releaseRbufLocked()
	}
	s.closeLocked()
	return dropped
}

// maybeFinishLocked closes a stream whose two directions have both ended.
func (s *ClientStream) maybeFinishLocked() {
	if s.sentEnd && s.recvEnd && !s.closed {
		if s.werr == nil {
			s.werr = ErrStreamClosed
		}
		s.closeLocked()
	}
}

// closeLocked moves the stream to closed (RFC 9113 §5.1): it leaves the connection's table,
// frees its concurrency slot, wakes every waiter and ends its context.
func (s *ClientStream) closeLocked() {
	c := s.c
	s.closed = true
	if !s.hdrClosed {
		s.hdrClosed = true
		close(s.hdrReady)
	}
	if s.registered {
		delete(c.streams, s.id)
		c.stats.StreamsActive.Dec()
	}
	s.notifyRead()
	s.notifySend()
	if s.stopCtx != nil {
		s.stopCtx()
	}
	s.ctx.Cancel()
	if s.reserved {
		s.reserved = false
		c.releaseLocked()
	}
}

// rbufPool holds the receive buffers of streams that have nothing left to read, so an idle stream
// (a quiet tunnel, a response waiting on its upstream) holds no buffer while busy ones reuse warm
// ones. Its items are *[]byte holders that travel with the buffer, so Get and Put do not allocate.
var rbufPool sync.Pool

const (
	minRbuf       = 16 << 10 // a new buffer's capacity: one default-size DATA frame
	maxPooledRbuf = 4 << 20  // bigger buffers (a window raised far past the default) go to the GC
)

// appendRbufLocked adds received DATA to the stream's buffer, taking one from rbufPool when the
// stream holds none, and compacting before growing.
func (s *ClientStream) appendRbufLocked(data []byte) {
	if s.rbuf == nil {
		if h, _ := rbufPool.Get().(*[]byte); h != nil {
			s.rbuf, s.rbufHolder, *h = (*h)[:0], h, nil
		} else {
			s.rbuf = make([]byte, 0, max(len(data), minRbuf))
		}
	}
	if s.roff > 0 && len(s.rbuf)+len(data) > cap(s.rbuf) {
		m := copy(s.rbuf, s.rbuf[s.roff:])
		s.rbuf, s.roff = s.rbuf[:m], 0
	}
	s.rbuf = append(s.rbuf, data...)
}

// releaseRbufLocked empties the stream's buffer and returns its array to rbufPool.
func (s *ClientStream) releaseRbufLocked() {
	b := s.rbuf
	s.rbuf, s.roff = nil, 0
	if b == nil || cap(b) > maxPooledRbuf {
		return
	}
	h := s.rbufHolder
	if h == nil {
		h = new([]byte)
	}
	s.rbufHolder = nil
	*h = b[:0]
	rbufPool.Put(h)
}

// readWaitLocked is the channel a reader about to wait selects on: made now, under the lock the
// state was checked under, so a notify after the check finds it.
func (s *ClientStream) readWaitLocked() chan struct{} {
	if s.readNotify == nil {
		s.readNotify = make(chan struct{}, 1)
	}
	return s.readNotify
}

// sendWaitLocked is readWaitLocked for a writer waiting for the send window.
func (s *ClientStream) sendWaitLocked() chan struct{} {
	if s.sendNotify == nil {
		s.sendNotify = make(chan struct{}, 1)
	}
	return s.sendNotify
}

// notifyRead wakes a Read, or the read hook. Called with the connection's lock held. (A nil
// channel: no one has waited yet, and whoever waits next checks the state first.)
func (s *ClientStream) notifyRead() {
	select {
	case s.readNotify <- struct{}{}:
	default:
	}
	if s.readHook != nil {
		s.readHook()
	}
}

// notifySend wakes a writer waiting for the send window. Called with the connection's lock held.
func (s *ClientStream) notifySend() {
	select {
	case s.sendNotify <- struct{}{}:
	default:
	}
}

// credit is window to return to the peer: conn on the connection, stream on stream id.
type credit struct {
	conn, stream uint32
	id           uint32
}

// creditLocked records n bytes consumed (read, dropped or padding) and returns the
// WINDOW_UPDATEs due: each window is replenished once a quarter of it has been consumed, so the
// peer never sees more room than the proxy has freed. s may be nil (connection only).
func (c *ClientConn) creditLocked(s *ClientStream, n int64) credit {
	var cr credit
	if n <= 0 {
		return cr
	}
	c.recvUnacked += n
	if c.recvUnacked >= int64(c.cfg.InitialConnectionWindowSize)/4 {
		cr.conn = uint32(c.recvUnacked)
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
	}
	if s != nil && !s.recvEnd && !s.closed {
		s.recvUnack += n
		if s.recvUnack >= int64(c.cfg.InitialStreamWindowSize)/4 {
			cr.stream, cr.id = uint32(s.recvUnack), s.id
			s.recvWindow += s.recvUnack
			s.recvUnack = 0
		}
	}
	return cr
}

// sendCredit queues the WINDOW_UPDATEs of cr.
func (c *ClientConn) sendCredit(cr credit) {
	if cr.conn > 0 {
		c.enqueue(writeReq{kind: wWindow, n: cr.conn})
	}
	if cr.stream > 0 {
		c.enqueue(writeReq{kind: wWindow, id: cr.id, n: cr.stream})
	}
}
