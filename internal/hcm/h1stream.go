package hcm

import (
	"errors"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/codec/http1"
	"github.com/switchyard-proxy/switchyard/internal/tunnel"
)

// bodyMode is how a response body is framed on an HTTP/1.1 connection.
type bodyMode int

const (
	bodyNone    bodyMode = iota // HEAD, 1xx, 204, 304, or nothing to send
	bodyLength                  // Content-Length
	bodyChunked                 // chunked
	bodyClose                   // until the connection closes (HTTP/1.0 clients)
	bodyRaw                     // a tunnel after 101
)

// h1Stream is one request on an HTTP/1.1 connection. Requests are served one at a time, so the
// stream borrows the connection's reader and writer.
type h1Stream struct {
	c *conn
	s *stream
	// The request's declared body length (-1: none): the stream keeps the request's headers no
	// longer than the chain needs them, so the request itself is not kept.
	contentLength int64
	ri            requestInfo
	body          *http1.BodyReader
	raw           *tunnel.SlabReader // the tunnel's reads, once the connection switched
	stop          atomic.Bool        // reset: the tunnel's Stream of the socket ends (see streamTunnel)

	// Owned by the encode side.
	mode       bodyMode
	chunked    *http1.ChunkedWriter
	closeAfter bool
	direct     bool // the tunnel writes to the socket, not through the buffered writer
}

func newH1Stream(c *conn, req *http1.Request) *h1Stream {
	d := &h1Stream{c: c, contentLength: req.ContentLength}
	d.ri = requestInfo{
		http10:    req.Minor == 0,
		bodyless:  req.ContentLength <= 0 && !req.Chunked,
		chunked:   req.Chunked,
		keepAlive: req.KeepAlive,
		canExpect: req.Minor == 1,
		remote:    c.remote,
		scheme:    c.scheme,
	}
	return d
}

func http1StatusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "Unknown"
}

func (d *h1Stream) info() *requestInfo { return &d.ri }

func (d *h1Stream) read(tunnelMode bool) (*[]byte, int, error) {
	c := d.c
	if tunnelMode {
		if c.br != nil {
			// The bytes that came with the head are the first of the payload; then the connection
			// is a tunnel: no HTTP parsing and no idle read buffer.
			n := c.br.Buffered()
			br := c.br
			c.br = nil
			c.closing.Store(true)
			if n > 0 {
				slab := buffer.GetSlab()
				m, _ := io.ReadFull(br, (*slab)[:min(n, len(*slab))])
				if m < n {
					// More early data than one slab: keep the rest buffered for the next call.
					c.br = br
				} else {
					buffer.PutReader(br)
				}
				return slab, m, nil
			}
			buffer.PutReader(br)
		}
		if d.raw == nil {
			d.raw = tunnel.NewSlabReader(c.nc)
		}
		return d.raw.Read()
	}
	if d.body == nil {
		d.body = http1.NewBodyReader(c.br, d.contentLength, d.ri.chunked, false)
	}
	slab, n, err := tunnel.ReadSlabFrom(d.body)
	var pe *http1.ParseError
	if errors.As(err, &pe) {
		err = &badRequestError{pe}
	}
	return slab, n, err
}

// badRequestError is a request body the codec could not parse: the client gets a 400.
type badRequestError struct{ *http1.ParseError }

func (d *h1Stream) continue100() {
	c := d.c
	c.wmu.Lock()
	io.WriteString(c.bw, "HTTP/1.1 100 Continue\r\n\r\n")
	c.bw.Flush()
	c.wmu.Unlock()
}

func (d *h1Stream) writeHead(h *headers.Map, status int, end, switchProto bool) (bool, error) {
	s, c := d.s, d.c
	if switchProto {
		d.mode = bodyRaw
	} else {
		d.decideFraming(h, status, end)
		if !s.decodeDone.Load() {
			// The response began before the request ended: the rest of the request cannot be
			// found again on this connection.
			s.m.stats.RqResponseBeforeComplete.Inc()
			d.closeAfter = true
		}
		if c.closing.Load() || s.connClose.Load() || s.m.drainClose() || !d.ri.keepAlive || d.mode == bodyClose {
			d.closeAfter = true
		}
		if max := s.m.cfg.MaxRequestsPerConn; max > 0 && c.requests >= max {
			s.m.stats.CxMaxRequestsReached.Inc()
			d.closeAfter = true
		}
		if d.closeAfter {
			h.Set("connection", "close")
		}
	}
	c.wmu.Lock()
	err := http1.WriteResponseHead(c.bw, h)
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if switchProto && err == nil {
		d.direct = true
		// A tunnel writes straight to the socket: no idle write buffer. Nothing else writes
		// through it after the switch (no 100-continue, no early error), so it can be reused.
		bw := c.bw
		c.bw = nil
		buffer.PutWriter(bw)
	}
	return d.mode == bodyNone, err
}

// decideFraming picks the body framing of a non-tunnel response.
func (d *h1Stream) decideFraming(h *headers.Map, status int, end bool) {
	switch {
	case d.s.method == "HEAD" || status < 200 || status == 204 || status == 304:
		d.mode = bodyNone
		if status < 200 || status == 204 {
			h.Del("content-length")
		}
	case end:
		d.mode = bodyNone
		h.Set("content-length", "0")
	case h.Has("content-length"):
		d.mode = bodyLength
	case !d.ri.http10:
		d.mode = bodyChunked
		h.Set("transfer-encoding", "chunked")
		d.chunked = http1.NewChunkedWriter(d.c.bw)
	default:
		d.mode = bodyClose
	}
}

func (d *h1Stream) writeBody(p []byte) error {
	c := d.c
	switch {
	case d.mode == bodyNone:
		return nil
	case d.direct:
		_, err := c.nc.Write(p)
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var err error
	if d.mode == bodyChunked {
		_, err = d.chunked.Write(p)
	} else {
		_, err = c.bw.Write(p)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	return err
}

// tryWriteBody writes what the client's socket takes now, without waiting for room (see
// stream.tryEncodeTunnel): only for a tunnel writing straight to a plain TCP socket, else 0. On an
// error it reports only what went out before it: the blocking write that follows meets the error.
// Called with the stream's encMu held.
func (d *h1Stream) tryWriteBody(p []byte) int {
	cc, ok := d.c.nc.(*countingConn)
	if !d.direct || !ok || cc.sock == nil {
		return 0
	}
	n, _ := cc.sock.TryWrite(p)
	return n
}

func (d *h1Stream) endBody() error {
	if d.mode != bodyChunked {
		return nil
	}
	c := d.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := d.chunked.Close(nil)
	if err == nil {
		err = c.bw.Flush()
	}
	return err
}

func (d *h1Stream) closeTunnelWrite() error {
	if !tunnel.CloseWrite(d.c.nc) {
		return errors.New("half-close not supported")
	}
	return nil
}

// abortRead wakes the decode goroutine; the connection closes after this stream.
func (d *h1Stream) abortRead() {
	d.c.closing.Store(true)
	d.c.wakeReader()
}

func (d *h1Stream) reset() {
	d.c.closing.Store(true)
	if t := d.s.engine.Load(); t != nil {
		t.Abort(errStreamEnded) // the engine's Done closes the connection
		return
	}
	if d.s.abortReads(errStreamEnded) {
		return // the engine reads the socket: its Done ends the connection
	}
	// The decode pump may be inside streamTunnel, holding the socket, and may be about to reset
	// the stream itself (resetOnce would then wait for this Close, and this Close for the pump):
	// stop it, and close beside it.
	d.stop.Store(true)
	go d.c.nc.Close()
}

// streamTunnel passes the tunnel's bytes from the client to handle, from the bytes that came with
// the head to the end, reading the socket with tunnel.SlabReader.Stream: it waits for the poller
// whenever the kernel says the socket is empty, never for a read that says EAGAIN. It returns
// what ended it (nil: the client's EOF, or handle returned false), as read would have.
func (d *h1Stream) streamTunnel(handle func(p []byte) bool) error {
	// The early bytes first, read through the head's buffer.
	declined := false
	err := tunnel.PumpReads(func() (*[]byte, int, error) { return d.read(true) },
		func() bool { return d.c.br != nil && !declined },
		func(p []byte) bool { declined = !handle(p); return !declined })
	if err != nil || declined {
		return err
	}
	if d.raw == nil {
		d.raw = tunnel.NewSlabReader(d.c.nc)
	}
	return d.raw.Stream(&d.stop, handle)
}

func (d *h1Stream) keepAlive() bool {
	return !d.c.closing.Load() && !d.closeAfter && d.ri.keepAlive
}
