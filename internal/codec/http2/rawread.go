package http2

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/internal/rawsys"
)

// The reader of a plain TCP connection (server and client codecs) reads the socket itself, inside
// one syscall.RawConn.Read, and processes every complete frame before it reads again. That lets it
// skip the read that would only say "nothing more" (EAGAIN): when a read left the socket empty
// (the kernel's TCP_INQ hint says so, and also says when a FIN is still to be read: a read that
// only came back short cannot tell that), the reader goes straight back to waiting for Go's poller. Go's
// own Read cannot skip it — each call starts by forgetting any readiness already signalled — and on
// this kind of VM that read costs about 2 µs, one per client message. Frame processing does not wait
// for the network (it queues frames for the writer — the client's queue is bounded, so at worst it
// waits for the writer — and hands DATA to streams), so holding the socket's read side while it runs
// delays only Close: the codecs never close under their connection lock, the server closes from a
// goroutine of its own, and a stop flag ends the reader at the next frame.

// frameBufSize holds a 64 KiB message in frames (4 × (9 + 16384) bytes) and room to read on.
const frameBufSize = 96 << 10

var frameBufs = sync.Pool{New: func() any { b := make([]byte, frameBufSize); return &b }}

// partialBufSize holds one frame: a connection waiting with part of a frame keeps the part in a
// buffer this size, so a client that stalls mid-frame pins at most this much, not frameBufSize.
const partialBufSize = frameHeaderLen + maxReadFrame

var partialBufs = sync.Pool{New: func() any { b := make([]byte, partialBufSize); return &b }}

// FrameSource is what a connection's Framer reads from: a bufio.Reader (TLS, or before Serve
// takes over), then, in Serve, a pooled buffer that holds only whole frames when the Framer reads
// it and goes back to the pool whenever it is empty, so an idle connection holds none. Owned by
// the connection's reader goroutine.
type FrameSource struct {
	br   *bufio.Reader
	put  func(*bufio.Reader) // where Serve gives br back; nil: it keeps br
	raw  bool
	buf  *[]byte
	r, w int // unparsed bytes are (*buf)[r:w]
	inq  rawsys.InqReader
	// reads counts reads that brought bytes (see readCount).
	reads uint64
}

// NewFrameSource reads from br until Serve takes over.
func NewFrameSource(br *bufio.Reader) *FrameSource { return &FrameSource{br: br} }

// Reader is the bufio.Reader the source reads from outside Serve.
func (s *FrameSource) Reader() *bufio.Reader { return s.br }

// ReleaseReader has Serve give the bufio.Reader to put once it has taken the bytes buffered in
// it: from then on the source reads the socket only, and an idle connection holds no buffer of
// its own. Reads after Serve then find the end of the stream.
func (s *FrameSource) ReleaseReader(put func(*bufio.Reader)) { s.put = put }

func (s *FrameSource) Read(p []byte) (int, error) {
	if !s.raw {
		if s.br == nil {
			return 0, io.EOF
		}
		return s.br.Read(p)
	}
	if s.r == s.w {
		// serveRaw parses whole frames only; this is a header block in more frames than complete
		// waits for.
		return 0, ErrBlockInTooManyFrames
	}
	n := copy(p, (*s.buf)[s.r:s.w])
	s.r += n
	return n, nil
}

// ErrBlockInTooManyFrames is a header block split into more frames than Serve waits for.
var ErrBlockInTooManyFrames = errors.New("http2: header block in too many frames")

// complete reports whether the next frame can be processed without reading: it is all buffered
// — or its header announces more than we accept, which the Framer then refuses. A HEADERS frame
// without END_HEADERS needs its CONTINUATION frames too (readBlock reads them in one go), up to
// blockLimit bytes of header block, past which readBlock refuses the block, and 2×blockLimit bytes
// of frames: a block in tiny or empty frames (the CONTINUATION flood) is then read as far as it
// came, and readBlock's checks, or Read running dry, end the connection.
func (s *FrameSource) complete(blockLimit int) bool {
	if s.w-s.r < frameHeaderLen {
		return false
	}
	b := (*s.buf)[s.r:s.w]
	n := frameLen(b)
	if n > maxReadFrame {
		return true
	}
	if len(b) < frameHeaderLen+n {
		return false
	}
	if h2.FrameType(b[3]) != h2.FrameHeaders || h2.Flags(b[4]).Has(h2.FlagHeadersEndHeaders) {
		return true
	}
	block := n // the fragment: the payload less padding and priority
	if h2.Flags(b[4]).Has(h2.FlagHeadersPadded) && n > 0 {
		block -= 1 + int(b[frameHeaderLen])
	}
	if h2.Flags(b[4]).Has(h2.FlagHeadersPriority) {
		block -= 5
	}
	for off := frameHeaderLen + n; block <= blockLimit && off <= 2*blockLimit; {
		if len(b) < off+frameHeaderLen {
			return false
		}
		m := frameLen(b[off:])
		if m > maxReadFrame || h2.FrameType(b[off+3]) != h2.FrameContinuation {
			return true // the Framer refuses it
		}
		if len(b) < off+frameHeaderLen+m {
			return false
		}
		if h2.Flags(b[off+4]).Has(h2.FlagContinuationEndHeaders) {
			return true
		}
		block += m
		off += frameHeaderLen + m
	}
	return true
}

const frameHeaderLen = 9

func frameLen(b []byte) int { return int(b[0])<<16 | int(b[1])<<8 | int(b[2]) }

// space returns where the next read goes, moving a partial frame to the front first, and
// growing the buffer when a header block waiting for its CONTINUATION frames fills it.
func (s *FrameSource) space() []byte {
	switch {
	case s.buf == nil:
		s.buf = frameBufs.Get().(*[]byte)
		s.r, s.w = 0, 0
	case len(*s.buf) < frameBufSize:
		s.move(frameBufs.Get().(*[]byte)) // a part kept small while waiting: read into a full buffer
	}
	if s.r > 0 {
		s.w = copy(*s.buf, (*s.buf)[s.r:s.w])
		s.r = 0
	}
	if s.w == len(*s.buf) {
		grown := make([]byte, 2*len(*s.buf))
		copy(grown, *s.buf)
		s.buf = &grown
	}
	return (*s.buf)[s.w:]
}

// release is called before the reader waits: an empty buffer goes back to its pool (a grown one to
// the garbage collector), and a part of a frame moves into a one-frame buffer.
func (s *FrameSource) release() {
	switch {
	case s.buf == nil:
	case s.r == s.w:
		s.putBuf()
	case s.w-s.r <= partialBufSize && len(*s.buf) > partialBufSize:
		s.move(partialBufs.Get().(*[]byte))
	}
}

// move puts the unparsed bytes at the start of b, which becomes the buffer.
func (s *FrameSource) move(b *[]byte) {
	n := copy(*b, (*s.buf)[s.r:s.w])
	s.putBuf()
	s.buf, s.r, s.w = b, 0, n
}

func (s *FrameSource) putBuf() {
	switch len(*s.buf) {
	case frameBufSize:
		frameBufs.Put(s.buf)
	case partialBufSize:
		partialBufs.Put(s.buf)
	}
	s.buf = nil
}

// ReadCounter is a connection wrapper that counts the bytes read through it (the HCM's rx
// counter), told of the bytes read from the socket underneath.
type ReadCounter interface{ CountRead(n int) }

// plainTCP is the TCP socket under nc's wrappers, or nil when TLS or something else is between.
func plainTCP(nc net.Conn) *net.TCPConn {
	for c := nc; ; {
		switch v := c.(type) {
		case *tls.Conn:
			return nil
		case *net.TCPConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

// RawSocket finds the TCP socket under nc's wrappers, unless one of them is TLS (its records need
// decrypting: the generic path reads those). counter is nc itself when it counts reads.
func RawSocket(nc net.Conn) (syscall.RawConn, ReadCounter) {
	tc := plainTCP(nc)
	if tc == nil {
		return nil, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, nil
	}
	counter, _ := nc.(ReadCounter)
	return rc, counter
}

// Serve reads the socket and calls next for each frame that can be processed whole (next reads it
// through the source), until next fails, the socket ends, or stop is set; it returns why.
// blockLimit bounds how much header block it waits for (see complete). What is buffered in the
// source's bufio.Reader is read first; afterwards it reads from that Reader again, unless it was
// released (ReleaseReader).
func (s *FrameSource) Serve(rc syscall.RawConn, counter ReadCounter, blockLimit int, stop *atomic.Bool, next func() error) error {
	defer s.end()
	return s.serveSome(rc, counter, blockLimit, stop, next)
}

// serveSome is Serve for a reader that may stop and go on later (a quiet connection whose reads
// move to the tunnel engine): unparsed bytes stay in the source when it returns, and a later
// call, or feed, continues from them. Call end once the connection reads no more.
func (s *FrameSource) serveSome(rc syscall.RawConn, counter ReadCounter, blockLimit int, stop *atomic.Bool, next func() error) error {
	if !s.raw {
		if n := s.br.Buffered(); n > 0 {
			s.space()
			p, _ := s.br.Peek(n)
			s.w = copy(*s.buf, p)
			s.br.Discard(n)
		}
		if s.put != nil {
			s.put(s.br)
			s.br = nil
		}
		s.raw = true
		// With the kernel's TCP_INQ hint a read says whether anything (bytes, or the FIN) is
		// left, so the reader waits for the poller exactly when the socket is empty. Without it,
		// it reads until EAGAIN: a read that merely came back short may have taken the last
		// bytes with a FIN behind them, and the poller says nothing more about a FIN that was
		// already there.
		rc.Control(func(fd uintptr) { rawsys.EnableInq(int(fd)) })
	}
	var why error
	drained := false
	err := rc.Read(func(fd uintptr) bool {
		for {
			for s.complete(blockLimit) {
				if stop.Load() {
					why = net.ErrClosed
					return true
				}
				if err := next(); err != nil {
					why = err
					return true
				}
			}
			if drained {
				// The last read emptied the socket: wait for the poller's next word, without the
				// read that would only say EAGAIN.
				drained = false
				s.release()
				return false
			}
			p := s.space()
			n, more, err := s.inq.Read(int(fd), p)
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				s.release()
				return false
			case err != nil:
				why = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
				return true
			case n == 0:
				why = io.EOF
				return true
			}
			s.w += n
			s.reads++
			if counter != nil {
				counter.CountRead(n)
			}
			drained = !more
		}
	})
	if why != nil {
		return why
	}
	return err
}

// end is the end of a connection's reads through serveSome: the buffer goes back to its pool,
// and reads find the end of the stream.
func (s *FrameSource) end() {
	s.r, s.w = 0, 0
	if s.buf != nil {
		s.release()
	}
	s.raw = false
}

// feed adds bytes read from the socket elsewhere (the tunnel engine, while the connection was
// quiet), for serveSome to parse before it reads the socket again.
func (s *FrameSource) feed(p []byte) {
	for len(p) > 0 {
		n := copy(s.space(), p)
		s.w += n
		p = p[n:]
	}
	s.reads++
}

// readCount counts the socket reads that brought bytes (and feeds): a reader tells from it whether
// the connection was quiet since it last looked.
func (s *FrameSource) readCount() uint64 { return s.reads }

// pending reports whether bytes of an incomplete frame are waiting for the rest.
func (s *FrameSource) pending() bool { return s.r < s.w }

// serveRaw reads and processes frames from the socket until the connection ends; it returns why,
// as serve does.
func (c *ServerConn) serveRaw(rc syscall.RawConn, counter ReadCounter) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errClosed
	}
	c.raw = true
	c.mu.Unlock()
	c.br = nil // the source gives it back to the pool (ReleaseReader)
	c.rc, c.counter = rc, counter
	return c.readFrames()
}

// readFrames reads and processes frames on the goroutine that reads the connection (Serve's, or
// a parked connection's pump), until the connection ends (it returns why) or it was quiet for
// QuietBeforePark and its reads moved to ParkReads (errParked: the goroutine may go).
func (c *ServerConn) readFrames() error {
	blockLimit := max(2*int(c.cfg.MaxHeaderListSize), 32<<10) // as readBlock
	next := func() error {
		f, err := c.readFrame()
		if se, ok := err.(h2.StreamError); ok {
			return c.peerStreamError(se)
		} else if err != nil {
			return err
		}
		return c.processFrame(f)
	}
	for {
		quiet := c.armQuiet()
		reads := c.src.readCount()
		err := c.src.serveSome(c.rc, c.counter, blockLimit, &c.rawStop, next)
		switch {
		case errors.Is(err, ErrBlockInTooManyFrames):
			return connErr(h2.ErrCodeEnhanceYourCalm, "header block in too many frames")
		case errors.Is(err, net.ErrClosed) && c.rawStop.Load():
			return errClosed
		case !quiet || !errors.Is(err, os.ErrDeadlineExceeded):
			return err
		case c.src.readCount() != reads || c.src.pending():
			continue // not quiet for the whole period: wait for another
		}
		if c.park() {
			return errParked
		}
		// Not parked: the connection is closing (finishLocked's deadline, if it set one, now
		// holds), or its reads cannot park (the deadline is cleared).
	}
}

// armQuiet sets the read deadline after which a quiet connection's reads may park, and reports
// whether it did: not without ParkReads, and not once the connection is closing (finishLocked's
// deadline then holds: it is set again here, as parked reads may have moved it to stop).
func (c *ServerConn) armQuiet() bool {
	if c.cfg.ParkReads == nil || c.noPark {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.closed {
		if !c.closeBy.IsZero() {
			_ = c.nc.SetReadDeadline(c.closeBy)
		}
		return false
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(c.cfg.QuietBeforePark))
	return true
}
