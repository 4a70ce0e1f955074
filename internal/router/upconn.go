package router

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/cluster"
	"github.com/switchyard-proxy/switchyard/internal/codec/http1"
	"github.com/switchyard-proxy/switchyard/internal/codec/http2"
	"github.com/switchyard-proxy/switchyard/internal/codec/http2/client"
	"github.com/switchyard-proxy/switchyard/internal/rawsys"
	"github.com/switchyard-proxy/switchyard/internal/tunnel"
)

// upstream is one attempt's exchange with a host, whatever the protocol: the router writes the
// request and reads the response through it, and after a 101 carries the tunnel over it. Writes
// come from one goroutine at a time (the attempt's wmu); reads from the attempt's goroutine.
// sendHeaders must not change h: it is the router's, and a retry sends it again.
type upstream interface {
	sendHeaders(h *headers.Map, end bool) error
	write(p []byte) error // request body, or tunnel bytes once the tunnel is open
	endRequest() error    // the end of the request: last chunk, END_STREAM, or FIN in a tunnel
	response() (*upResponse, error)
	read() (*[]byte, int, error) // response body or tunnel bytes in a pooled slab; io.EOF at the end
	openTunnel()                 // the 101 was accepted: from now on bytes are raw
	close()                      // abort: the connection (HTTP/1.1) or the stream (HTTP/2)
	release(reusable bool)       // the exchange is over; HTTP/1.1 may pool the connection
}

// upResponse is a response head in the proxy's internal shape.
type upResponse struct {
	status    int
	h         *headers.Map
	bodyless  bool   // no body follows
	keepAlive bool   // HTTP/1.1: the connection may be reused after the body
	bad101    string // why a 101 (or an HTTP/2 200 to an upgrade) cannot open a tunnel, "" if it can
}

// h1Upstream is an exchange on a pooled HTTP/1.1 connection.
type h1Upstream struct {
	lease   *cluster.Lease
	method  string
	chunked bool // the request body goes chunked
	cw      *http1.ChunkedWriter
	body    *http1.BodyReader
	conn    net.Conn // set when the tunnel opens
	raw     *tunnel.SlabReader
	stop    atomic.Bool                   // close was called: the tunnel's Stream of conn ends
	reader  atomic.Pointer[tunnel.Reader] // the engine reads conn (readUpstreamOnEngine)
	// readState orders closing conn after the engine's reads of it (see engineReading).
	readState atomic.Int32
	w         *rawsys.ConnWriter // conn's socket, made at the first tunnel write; nil: write to conn
	wTried    bool
	early     []byte // bytes that came with the 101
	accept    string // the Sec-WebSocket-Accept we expect, when we made the key up
	makeKey   bool   // the request came over HTTP/2 and may lack Sec-WebSocket-Key
	resp      *http1.Response
}

func (u *h1Upstream) sendHeaders(h *headers.Map, _ bool) error {
	if u.makeKey && strings.EqualFold(headers.UpgradeToken(h), "websocket") && !h.Has("sec-websocket-key") {
		// An RFC 8441 WebSocket has no key; an RFC 6455 server needs one (Envoy #8547). Make one
		// up, for this attempt only, and check the server's answer to it.
		h = h.Clone()
		var k [16]byte
		rand.Read(k[:])
		key := base64.StdEncoding.EncodeToString(k[:])
		h.Set("sec-websocket-key", key)
		if !h.Has("sec-websocket-version") {
			h.Set("sec-websocket-version", "13")
		}
		u.accept = websocketAccept(key)
	}
	if err := http1.WriteRequestHead(u.lease.Writer, h); err != nil {
		return err
	}
	return u.lease.Writer.Flush()
}

// websocketAccept is RFC 6455 §4.2.2's answer to a key.
func websocketAccept(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func (u *h1Upstream) write(p []byte) error {
	if u.conn != nil {
		if !u.wTried {
			u.w, u.wTried = rawsys.NewConnWriter(u.conn), true
		}
		var err error
		if u.w != nil {
			_, err = u.w.Write(p)
		} else {
			_, err = u.conn.Write(p)
		}
		return err
	}
	var err error
	if u.chunked {
		if u.cw == nil {
			u.cw = http1.NewChunkedWriter(u.lease.Writer)
		}
		_, err = u.cw.Write(p)
	} else {
		_, err = u.lease.Writer.Write(p)
	}
	if err == nil {
		err = u.lease.Writer.Flush()
	}
	return err
}

// tryWrite writes what the upstream socket takes now (see routerFilter.tryTunnelWrite). On an
// error it reports only what went out before it: the blocking write that follows meets the error
// and ends the tunnel as usual.
func (u *h1Upstream) tryWrite(p []byte) int {
	if u.conn == nil {
		return 0
	}
	if !u.wTried {
		u.w, u.wTried = rawsys.NewConnWriter(u.conn), true
	}
	if u.w == nil {
		return 0
	}
	n, _ := u.w.TryWrite(p)
	return n
}

func (u *h1Upstream) endRequest() error {
	if u.conn != nil {
		closeWrite(u.conn)
		return nil
	}
	if !u.chunked {
		return nil
	}
	if u.cw == nil {
		u.cw = http1.NewChunkedWriter(u.lease.Writer)
	}
	if err := u.cw.Close(nil); err != nil {
		return err
	}
	return u.lease.Writer.Flush()
}

func (u *h1Upstream) response() (*upResponse, error) {
	for {
		resp, err := http1.ReadResponse(u.lease.Reader, http1.Limits{MaxHeaderBytes: upstreamHeaderLimit})
		if err != nil {
			return nil, err
		}
		if resp.Status < 200 && resp.Status != 101 {
			continue // interim responses are not relayed
		}
		u.resp = resp
		length, chunked, untilClose := http1.ResponseBodyLength(resp, u.method)
		r := &upResponse{status: resp.Status, h: resp.Headers, keepAlive: resp.KeepAlive && !untilClose,
			bodyless: length == 0 && !chunked && !untilClose}
		if resp.Status == 101 {
			switch {
			case resp.Chunked || resp.ContentLength > 0:
				r.bad101 = "101 with a body"
			case u.accept != "" && resp.Headers.Get("sec-websocket-accept") != u.accept:
				r.bad101 = "Sec-WebSocket-Accept does not answer the key"
			}
			if u.accept != "" {
				resp.Headers.Del("sec-websocket-accept") // the client never saw our key
			}
		}
		if !r.bodyless {
			u.body = http1.NewBodyReader(u.lease.Reader, length, chunked, untilClose)
		}
		return r, nil
	}
}

func (u *h1Upstream) read() (*[]byte, int, error) {
	if u.conn != nil {
		if len(u.early) > 0 {
			slab := buffer.GetSlab()
			n := copy(*slab, u.early)
			u.early = u.early[n:]
			return slab, n, nil
		}
		return u.raw.Read()
	}
	if u.body == nil {
		return nil, 0, io.EOF
	}
	return tunnel.ReadSlabFrom(u.body)
}

func (u *h1Upstream) openTunnel() {
	if n := u.lease.Reader.Buffered(); n > 0 {
		p, _ := u.lease.Reader.Peek(n)
		u.early = append([]byte(nil), p...)
	}
	u.conn = u.lease.Hijack()
	u.raw = tunnel.NewSlabReader(u.conn)
	u.lease.Reader, u.lease.Writer = nil, nil // an idle tunnel keeps no copy buffers
	u.body, u.cw = nil, nil
}

// close aborts the exchange. Once the tunnel is open the hijacked connection is the one to
// close: closing it returns its max_connections slot and updates upstream_cx_active.
func (u *h1Upstream) close() {
	if u.conn != nil {
		// The tunnel's pump may be inside Stream, holding the socket: Close would wait for it,
		// and the pump may be waiting for the caller. Stop it, and close beside it.
		u.stop.Store(true)
		if u.readState.CompareAndSwap(engineReading, engineCloseAsked) {
			if rd := u.reader.Load(); rd != nil {
				rd.Abort(nil) // the engine's Done closes conn (engineRead.end)
			}
			return
		}
		go u.conn.Close()
		return
	}
	u.lease.Conn.Close()
}

// The engine reads conn's own descriptor (tunnel.StartReader), so conn must not be closed while
// it does: a close asked for meanwhile is left to the engine's Done.
const (
	engineNotReading int32 = iota
	engineReading
	engineCloseAsked // close found the engine reading: Done closes conn
)

func (u *h1Upstream) release(reusable bool) {
	if u.conn != nil {
		u.conn.Close()
	}
	u.lease.Release(reusable && u.conn == nil)
}

// h2Upstream is one stream on a shared HTTP/2 connection.
type h2Upstream struct {
	ctx     context.Context
	cc      *cluster.H2Conn
	st      *client.ClientStream
	upgrade string
	// pickAgain asks the pool for another connection (see sendHeaders); nil: do not.
	pickAgain func(ctx context.Context) (*cluster.H2Conn, error)
}

// maxPickAgain bounds how often sendHeaders asks the pool again when the connection it was given
// filled up before the stream opened on it. A new connection is taken for 100 streams until the
// peer's SETTINGS say otherwise, so a burst can be sent to one that turns out to take far fewer.
const maxPickAgain = 32

func (u *h2Upstream) sendHeaders(h *headers.Map, end bool) error {
	st, err := u.cc.NewStream(u.ctx, h, end)
	for tries := 0; errors.Is(err, client.ErrNoCapacity) && u.pickAgain != nil && tries < maxPickAgain; tries++ {
		// The pool picked a connection with room, but other streams took the last of it before
		// this one opened (the peer's MAX_CONCURRENT_STREAMS): the pool's next pick is another
		// connection with room, or a new one. Before, the request failed with a 503.
		cc, perr := u.pickAgain(u.ctx)
		if perr != nil {
			return perr
		}
		u.cc = cc
		st, err = u.cc.NewStream(u.ctx, h, end)
	}
	if err != nil {
		return err
	}
	u.st = st
	return nil
}

func (u *h2Upstream) write(p []byte) error { return u.st.Write(p, false) }
func (u *h2Upstream) endRequest() error    { return u.st.Write(nil, true) }

func (u *h2Upstream) response() (*upResponse, error) {
	h, err := u.st.Response(u.ctx)
	if err != nil {
		return nil, err
	}
	status, _ := strconv.Atoi(h.Get(headers.Status))
	r := &upResponse{status: status, h: h, bodyless: u.st.EndStreamOnHeaders()}
	if u.upgrade != "" && status == 101 {
		// RFC 8441: the 200 (now 101) opens the tunnel; a body on it cannot be told apart
		// from tunnel bytes, so a declared one is refused.
		if cl := h.Get("content-length"); cl != "" && cl != "0" {
			r.bad101 = "extended CONNECT 200 with a body"
		}
		if r.bodyless {
			r.bad101 = "extended CONNECT 200 that ends the stream"
		}
	}
	return r, nil
}

func (u *h2Upstream) read() (*[]byte, int, error) { return tunnel.ReadSlabFrom(u.st) }

func (u *h2Upstream) openTunnel() {}

func (u *h2Upstream) close() {
	if u.st != nil {
		u.st.Reset(http2ErrCancel)
	}
}

func (u *h2Upstream) release(bool) {
	if u.st != nil {
		select {
		case <-u.st.Context().Done():
		default:
			u.st.Reset(http2ErrCancel)
		}
	}
}

// http2ErrCancel is RST_STREAM CANCEL: we no longer need the stream.
const http2ErrCancel = client.ErrCode(0x8)

// isProtocolError reports whether an upstream error is the peer breaking the protocol (502)
// rather than going away (503).
func isProtocolError(err error) bool {
	var pe *http1.ParseError
	var me *http2.MalformedError
	return errors.As(err, &pe) || errors.As(err, &me)
}
