package http2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/cancelctx"
	"github.com/switchyard-proxy/switchyard/internal/memacct"
)

// StreamError is what ServerStream.Read and the write methods return once the stream can no
// longer carry bytes: the peer reset it (Remote), we reset it, or the connection ended (Conn).
// The proxy uses errors.As on it to tell a client abort from an upstream failure.
type StreamError struct {
	Code   h2.ErrCode
	Remote bool // the peer sent RST_STREAM
	Conn   bool // the whole connection ended (GOAWAY with Code, or the socket closed: CANCEL)
}

func (e *StreamError) Error() string {
	switch {
	case e.Remote:
		return fmt.Sprintf("http2: stream reset by peer: %v", e.Code)
	case e.Conn:
		return fmt.Sprintf("http2: connection closed: %v", e.Code)
	}
	return fmt.Sprintf("http2: stream reset: %v", e.Code)
}

var (
	errHeadersSent   = errors.New("http2: response headers already sent (trailers are not supported)")
	errNoHeaders     = errors.New("http2: DATA before response headers")
	errStreamEnded   = errors.New("http2: write after END_STREAM")
	errBadStatus     = errors.New("http2: response without a valid :status")
	errInfoEndStream = errors.New("http2: END_STREAM on a 1xx response")
)

// ServerStream is one request stream of a ServerConn, handed to the handler on its own goroutine.
// Read may run concurrently with WriteHeaders/WriteData (a tunnel reads and writes at once), and
// Reset may be called from any goroutine. Nothing may be called after the handler has returned
// (after finish, for a stream the handler detached): the handler owns every goroutine that uses
// the stream and waits for them.
type ServerStream struct {
	c         *ServerConn
	id        uint32
	hdr       *headers.Map
	extended  bool
	endStream bool
	ctx       *cancelctx.Context
	cond      sync.Cond  // L is &c.mu; signalled on every change a blocked Read or write waits for
	wmu       sync.Mutex // serialises WriteHeaders and WriteData callers

	// Guarded by c.mu.
	buf          recvBuf // request DATA not yet read by the handler: ≤ the stream window
	recvWin      int64   // bytes the client may still send before our next WINDOW_UPDATE
	recvUnacked  int64   // bytes consumed by the handler and not yet returned in a WINDOW_UPDATE
	sendWin      int64   // the peer's window for our DATA on this stream
	cl, got      int64   // declared content-length (-1: none) and DATA bytes received
	remoteClosed bool    // the client sent END_STREAM (half-closed remote)
	localClosed  bool    // we queued END_STREAM (half-closed local)
	answered     bool    // final (non-1xx) response headers queued
	wireClosed   bool    // closed on the wire: both END_STREAMs, or RST_STREAM either way
	handlerDone  bool
	done         bool               // wireClosed and handlerDone: no longer counted in streams_active
	err          error              // *StreamError once reset or the connection died
	dataQueued   bool               // a WriteData chunk waits in the writer's queue
	dataWritten  bool               // the writer wrote the last chunk
	sink         func(p []byte) int // see SetDataSink; nil: every DATA byte goes through Read
	readHook     func()             // see SetReadHook
	consuming    bool               // the handler has bytes from Read it has not finished with

	detached bool // see Detach; owned by the handler's goroutine
}

// Headers returns the request in the proxy's internal shape: CheckFields and RequestFromH2 have
// run, so an extended CONNECT reads as GET + upgrade + connection: upgrade.
func (s *ServerStream) Headers() *headers.Map { return s.hdr }

// TakeHeaders is Headers for a handler that keeps the map for as long as it needs it: the stream
// lets go of it (Headers returns nil from then on), so a tunnel that outlives its request does
// not keep it through the stream.
func (s *ServerStream) TakeHeaders() *headers.Map {
	h := s.hdr
	s.hdr = nil
	return h
}

// ID is the HTTP/2 stream identifier, for logs.
func (s *ServerStream) ID() uint32 { return s.id }

// ExtendedConnect reports whether the request was an RFC 8441 extended CONNECT, so a 101 answer
// goes out as :status 200.
func (s *ServerStream) ExtendedConnect() bool { return s.extended }

// EndStream reports whether the request HEADERS carried END_STREAM: there is no body.
func (s *ServerStream) EndStream() bool { return s.endStream }

// SetAccount charges the request DATA received and not yet read — what the stream holds now and
// from now on — to a, the stream's buffer account for reset_high_memory_stream (nil: none).
func (s *ServerStream) SetAccount(a *memacct.Account) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.buf.acct = a
	a.Charge(s.buf.n)
}

// Context is done when the stream is closed in both directions or reset, or the connection dies,
// so work done for the stream (an upstream dial) stops with it.
func (s *ServerStream) Context() context.Context { return s.ctx }

// Read reads request DATA in order. It returns io.EOF after the client's END_STREAM (the client
// half-closed; we may still write) and a *StreamError after a reset or the connection's end. The
// windows open again only by what Read hands out, in batches of half the initial window.
func (s *ServerStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	s.consuming = false
	for {
		if s.err != nil {
			return 0, s.err
		}
		if s.buf.n > 0 {
			n := s.buf.read(p)
			c.creditLocked(s, int64(n))
			s.consuming = true
			return n, nil
		}
		if s.remoteClosed {
			return 0, io.EOF
		}
		s.cond.Wait()
	}
}

// SetDataSink lets the connection's reader hand request DATA to sink itself, from the frame it
// just read, instead of queueing it for Read: a tunnel then costs no wake-up of the handler's
// goroutine and no copy per message. sink must not block: it takes what it can at once and
// returns how much; the rest is queued for Read as before. The reader offers DATA only while
// nothing is queued and the handler is waiting in Read or WaitReadable (not still passing on
// what it read last), so bytes reach sink and Read in the order they came. Bytes sink takes count
// as read for flow control.
func (s *ServerStream) SetDataSink(sink func(p []byte) int) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.sink = sink
}

// Detach lets the handler's goroutine return while the stream goes on, carried by callbacks (a
// read hook, a data sink, the tunnel engine) instead of a goroutine that would only wait: an idle
// tunnel then holds no goroutine of its own. The stream counts as the handler's until finish is
// called, which must be, once, when nothing uses the stream any more: it does what the handler's
// return would have (the connection's Serve waits for it as for a handler). Detach must be called
// on the handler's goroutine, before the handler returns.
func (s *ServerStream) Detach() (finish func()) {
	s.detached = true
	c := s.c
	return sync.OnceFunc(func() {
		defer c.handlers.Done()
		c.handlerReturned(s)
	})
}

// SetReadHook has the connection's reader call hook whenever a Read would newly return at once:
// DATA was queued for Read (the sink, if any, did not take it), END_STREAM came, or the stream
// failed. It lets a handler read on demand instead of parking a goroutine in Read (see
// TryWaitReadable). hook runs with the connection's lock held: it must not block or call into the
// stream. nil removes it.
func (s *ServerStream) SetReadHook(hook func()) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.readHook = hook
}

// TryWaitReadable is WaitReadable that does not wait: it reports whether a Read would return at
// once. Like WaitReadable it marks the handler as done with what it read before, so the sink may
// take DATA again.
func (s *ServerStream) TryWaitReadable() bool {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	s.consuming = false
	return s.err != nil || s.buf.n > 0 || s.remoteClosed
}

// readableLocked wakes a Read waiting for what just changed, or the read hook.
func (s *ServerStream) readableLocked() {
	s.cond.Broadcast()
	if s.readHook != nil {
		s.readHook()
	}
}

// Buffered is how many request DATA bytes are waiting to be read, so a reader can take a larger
// buffer when bulk data is queued.
func (s *ServerStream) Buffered() int {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.buf.n
}

// WaitReadable blocks until a Read would return at once — data, END_STREAM or an error — without
// taking any bytes, so a caller borrows a buffer only when there is something to copy into it.
func (s *ServerStream) WaitReadable() {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	s.consuming = false
	for s.err == nil && s.buf.n == 0 && !s.remoteClosed {
		s.cond.Wait()
	}
}

// WriteHeaders sends the response headers, given in the internal shape: ResponseToH2 runs on a
// copy (for an extended CONNECT a 101 becomes 200). 1xx responses may precede the final one;
// end=true sends END_STREAM (no body). Trailers are not supported.
func (s *ServerStream) WriteHeaders(h *headers.Map, end bool) error {
	out := h.Clone()
	if err := ResponseToH2(out, s.extended); err != nil {
		return err
	}
	st := out.Get(headers.Status)
	code, err := strconv.Atoi(st)
	if err != nil || len(st) != 3 || code < 100 {
		return errBadStatus
	}
	if err := CheckFields(out, false); err != nil {
		return err
	}
	informational := code < 200
	if informational && end {
		return errInfoEndStream
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case s.err != nil:
		return s.err
	case s.localClosed:
		return errStreamEnded
	case s.answered:
		return errHeadersSent
	}
	if !c.enqueueLocked(outFrame{kind: outHeaders, s: s, id: s.id, hdr: out, end: end}) {
		return c.connLostLocked()
	}
	if !informational {
		s.answered = true
		c.noteAnsweredLocked()
	}
	if end {
		c.endLocalLocked(s)
	}
	return nil
}

// WriteData sends response DATA. It blocks while the peer's stream or connection window is
// closed, until the window opens or the stream ends, and splits p into frames no larger than the
// peer's SETTINGS_MAX_FRAME_SIZE. p is not copied: the call returns once the writer has framed it.
// end=true ends our direction (WriteData(nil, true) is an empty DATA with END_STREAM).
func (s *ServerStream) WriteData(p []byte, end bool) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if err := s.writableLocked(); err != nil {
			return err
		}
		n := int64(len(p))
		if n > 0 {
			for s.sendWin <= 0 || c.sendWin <= 0 {
				s.cond.Wait()
				if err := s.writableLocked(); err != nil {
					return err
				}
			}
			n = min(n, s.sendWin, c.sendWin, maxDataChunk)
		}
		last := n == int64(len(p))
		s.sendWin -= n
		c.sendWin -= n
		if c.canWriteDirectLocked() {
			if end && last {
				c.endLocalLocked(s) // closed before the peer can see the END_STREAM
			}
			if err := c.writeDataDirectLocked(s, p[:n], end && last); err != nil {
				return c.connLostLocked()
			}
			if p = p[n:]; last {
				return nil
			}
			continue
		}
		if !c.enqueueLocked(outFrame{kind: outData, s: s, id: s.id, data: p[:n], end: end && last}) {
			return c.connLostLocked()
		}
		s.dataQueued, s.dataWritten = true, false
		if end && last {
			// Closed now, before the peer can see the END_STREAM and send its next frame.
			c.endLocalLocked(s)
		}
		for s.dataQueued && !c.writerClosed {
			s.cond.Wait()
		}
		if !s.dataWritten {
			if s.err != nil {
				return s.err
			}
			return c.connLostLocked()
		}
		if p = p[n:]; last {
			return nil
		}
	}
}

// TryWriteData writes p as DATA now, on the caller's goroutine, if that needs no wait: the
// stream's and the connection's windows hold all of it, no other write is queued or under way,
// and the socket is a plain TCP one. For a caller that must not block (the tunnel engine passing
// an upstream's bytes to an HTTP/2 client): it reports whether p was taken, and when not, nothing
// was sent and WriteData is the way. A socket too full for all of the frames takes what it can,
// and a goroutine of the connection's sends the rest before anything else (p is copied for it).
// Never END_STREAM: that goes through WriteData.
func (s *ServerStream) TryWriteData(p []byte) bool {
	if len(p) == 0 || len(p) > maxTryData || !s.wmu.TryLock() {
		return false
	}
	defer s.wmu.Unlock()
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tryWriteDataLocked(s, p)
}

// maxDataChunk bounds one WriteData hand-off to the writer, so a stream with a large window
// cannot hold the writer while other streams' frames wait.
const maxDataChunk = 64 << 10

// writableLocked says why DATA cannot be sent on s now, or nil.
func (s *ServerStream) writableLocked() error {
	switch {
	case s.err != nil:
		return s.err
	case s.c.closed || s.c.writerClosed:
		return s.c.connLostLocked()
	case s.localClosed:
		return errStreamEnded
	case !s.answered:
		return errNoHeaders
	}
	return nil
}

// Reset sends RST_STREAM with code (counted in tx_reset) unless the stream is already closed.
// Blocked Read and write calls return a *StreamError.
func (s *ServerStream) Reset(code h2.ErrCode) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !s.wireClosed {
		_ = c.resetLocked(s.id, s, code, false)
	}
}

// recvBuf is a stream's queue of received DATA bytes, in pooled slabs so that an idle stream holds
// none and a busy one holds at most its window.
type recvBuf struct {
	slabs []*[]byte
	r, w  int // read offset in slabs[0]; write offset in the last slab
	n     int
	acct  *memacct.Account // charged with n; nil: no accounting
}

func (b *recvBuf) write(p []byte) {
	b.acct.Charge(len(p))
	for len(p) > 0 {
		if len(b.slabs) == 0 || b.w == buffer.SlabSize {
			b.slabs = append(b.slabs, buffer.GetSlab())
			b.w = 0
		}
		k := copy((*b.slabs[len(b.slabs)-1])[b.w:], p)
		b.w += k
		b.n += k
		p = p[k:]
	}
}

func (b *recvBuf) read(p []byte) int {
	total := 0
	for len(p) > 0 && b.n > 0 {
		end := buffer.SlabSize
		if len(b.slabs) == 1 {
			end = b.w
		}
		k := copy(p, (*b.slabs[0])[b.r:end])
		b.r += k
		b.n -= k
		total += k
		p = p[k:]
		if b.r == end {
			buffer.PutSlab(b.slabs[0])
			copy(b.slabs, b.slabs[1:])
			b.slabs[len(b.slabs)-1] = nil
			b.slabs = b.slabs[:len(b.slabs)-1]
			b.r = 0
		}
	}
	b.acct.Credit(total)
	if b.n == 0 {
		b.reset()
	}
	return total
}

// reset drops every byte held and returns how many there were.
func (b *recvBuf) reset() int {
	for i, sl := range b.slabs {
		buffer.PutSlab(sl)
		b.slabs[i] = nil
	}
	n := b.n
	b.slabs, b.r, b.w, b.n = b.slabs[:0], 0, 0, 0
	b.acct.Credit(n)
	return n
}
