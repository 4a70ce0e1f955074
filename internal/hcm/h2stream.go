package hcm

import (
	"context"
	"net"
	"time"

	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/codec/http2"
	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/tunnel"
	h2 "golang.org/x/net/http2"
)

// h2Stream is one request stream of an HTTP/2 connection. A reset or timeout ends only this
// stream; the connection and its other streams go on.
type h2Stream struct {
	st *http2.ServerStream
	s  *stream
	ri requestInfo

	ended bool // owned by the encode side: END_STREAM was sent
}

func newH2Stream(st *http2.ServerStream, remote, scheme string) *h2Stream {
	h := st.Headers()
	// An extended CONNECT never ends with its headers, but its DATA is tunnel payload (RFC 8441
	// §5), not a body of unknown length: counting it as one made the router refuse it (400)
	// toward an HTTP/2 upstream.
	return &h2Stream{st: st, ri: requestInfo{
		bodyless:  st.EndStream(),
		chunked:   !st.EndStream() && !h.Has("content-length") && !st.ExtendedConnect(),
		keepAlive: true,
		remote:    remote,
		scheme:    scheme,
		extended:  st.ExtendedConnect(),
	}}
}

func (d *h2Stream) info() *requestInfo { return &d.ri }

func (d *h2Stream) read(bool) (*[]byte, int, error) { return tunnel.ReadSlabFrom(d.st) }

// continue100 is not needed: an HTTP/2 client does not wait for 100 unless it asked, and Expect
// was removed from the request.
func (d *h2Stream) continue100() {}

func (d *h2Stream) writeHead(h *headers.Map, status int, end, switchProto bool) (bool, error) {
	bodyless := !switchProto && (d.s.method == "HEAD" || status == 204 || status == 304)
	if end || bodyless {
		d.ended = true
		return true, d.st.WriteHeaders(h, true)
	}
	return false, d.st.WriteHeaders(h, false)
}

func (d *h2Stream) writeBody(p []byte) error { return d.st.WriteData(p, false) }

// tryWriteBody writes p as DATA if that needs no wait (see stream.tryEncodeTunnel), all of it or
// nothing.
func (d *h2Stream) tryWriteBody(p []byte) int {
	if d.ended || !d.st.TryWriteData(p) {
		return 0
	}
	return len(p)
}

// Begin is the tunnel engine asking to send n upstream bytes as one DATA frame in its batch (see
// tunnel.Sender): it holds the stream's encoder (lockTunnelEncode) and the connection's socket
// (http2.ServerStream.BeginData) until End.
func (d *h2Stream) Begin(buf []byte, n int) (fd, start int, ok bool) {
	s := d.s
	if !s.lockTunnelEncode() {
		return -1, 0, false
	}
	start = tunnel.SendHeadroom - h2FrameHeader
	if d.ended {
		s.encMu.Unlock()
		return -1, 0, false
	}
	if fd, ok = d.st.BeginData(n, buf[start:tunnel.SendHeadroom]); !ok {
		s.encMu.Unlock()
		return -1, 0, false
	}
	return fd, start, true
}

// End settles the engine's send that Begin prepared.
func (d *h2Stream) End(out []byte, res int32) bool {
	taken := d.st.EndData(out, res)
	var written []byte
	if taken {
		written = out[h2FrameHeader:]
	}
	d.s.unlockTunnelEncode(written)
	return taken
}

// h2FrameHeader is an HTTP/2 frame header's size.
const h2FrameHeader = 9

func (d *h2Stream) endBody() error {
	if d.ended {
		return nil
	}
	d.ended = true
	return d.st.WriteData(nil, true)
}

// closeTunnelWrite is the upstream's half-close: END_STREAM, while the client may go on sending.
func (d *h2Stream) closeTunnelWrite() error { return d.endBody() }

// abortRead stops a request the response no longer needs (RFC 9113 §8.1: RST_STREAM NO_ERROR
// after a complete response), unless the stream is already closed.
func (d *h2Stream) abortRead() {
	select {
	case <-d.st.Context().Done():
	default:
		if !d.s.decodeDone.Load() {
			d.st.Reset(h2.ErrCodeNo)
		}
	}
}

func (d *h2Stream) reset() { d.st.Reset(h2.ErrCodeCancel) }

func (d *h2Stream) keepAlive() bool { return true }

// h2Config turns the HCM's http2_protocol_options and drain_timeout into the server codec's
// settings.
func h2Config(o *config.HTTP2Options, maxHeadersKB int, drain time.Duration, st *http2.Stats) http2.ServerConfig {
	cfg := http2.ServerConfig{Stats: st, MaxHeaderListSize: uint32(maxHeadersKB) * 1024, DrainTimeout: drain,
		ParkReads: parkOnEngine, QuietBeforePark: quietBeforeEngine}
	if drain == 0 {
		cfg.DrainTimeout = -1 // drain_timeout: 0s, the final GOAWAY at once (zero is the codec's default)
	}
	if o == nil {
		return cfg
	}
	cfg.AllowConnect = o.AllowConnect
	cfg.MaxConcurrentStreams = o.MaxConcurrentStreams
	cfg.InitialStreamWindowSize = o.InitialStreamWindowSize
	cfg.InitialConnectionWindowSize = o.InitialConnectionWindowSize
	cfg.StreamErrorOnInvalidMessage = o.StreamErrorOnInvalidMessage
	cfg.MaxOutboundFrames = int(o.MaxOutboundFrames)
	cfg.MaxOutboundControlFrames = int(o.MaxOutboundControlFrames)
	cfg.MaxConsecutiveInboundFramesWithEmptyPayload = int(o.MaxConsecutiveInboundFramesWithEmptyPayload)
	cfg.MaxInboundPriorityFramesPerStream = int(o.MaxInboundPriorityFramesPerStream)
	cfg.MaxInboundWindowUpdateFramesPerDataFrameSent = int(o.MaxInboundWindowUpdateFramesPerDataFrameSent)
	cfg.Keepalive = http2.KeepaliveConfig{
		Interval: o.KeepaliveInterval, Timeout: o.KeepaliveTimeout, IntervalJitter: o.KeepaliveIntervalJitter,
	}
	return cfg
}

// serveH2 serves an HTTP/2 connection: one stream goroutine per request, owned by the codec.
// Once the client has been quiet for quietBeforeEngine, the tunnel engine reads the connection
// and this goroutine returns with the connection open (lifetime.leave); the codec ends the
// connection's lifetime when the connection is over.
func (m *Manager) serveH2(ctx context.Context, nc net.Conn, c *conn, scheme string) {
	s := m.stats
	s.CxHTTP2Total.Inc()
	s.CxHTTP2Active.Inc()
	c.life.add(s.CxHTTP2Active.Dec)
	remote := nc.RemoteAddr().String()
	br := c.br
	c.br = nil // the HTTP/2 connection owns it now
	sc := http2.NewServerConn(c.nc, br, m.h2cfg, func(st *http2.ServerStream) {
		s.RqHTTP2Total.Inc()
		d := newH2Stream(st, remote, scheme)
		str := newStream(st.Context(), m, d, st.TakeHeaders())
		d.s = str
		st.SetAccount(str.acct)
		str.run()
	})
	c.life.addLocal(m.track(h2Drainer{sc}))
	// Serve closes sc when ctx ends, parked or not.
	sc.ServeLeaving(ctx, c.life.leave, func(error) { c.life.end() })
}

// parkOnEngine has the tunnel engine read a quiet HTTP/2 connection (http2.ReadParker).
func parkOnEngine(nc net.Conn, deliver func(p []byte) bool, done func(why error)) (http2.ParkedReads, error) {
	return tunnel.DefaultEngine().StartReader(tunnel.ReaderOptions{Conn: nc, Deliver: deliver, Done: done})
}

// h2Drainer drains an HTTP/2 connection with a graceful GOAWAY.
type h2Drainer struct{ sc *http2.ServerConn }

func (d h2Drainer) drain() { d.sc.Shutdown() }
