package client

import (
	"errors"
	"fmt"
	"time"

	h2 "golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/codec/http2"
)

type writeKind uint8

const (
	wHeaders     writeKind = iota // s, h, end, done
	wData                         // s, data, end, done (last chunk only)
	wRST                          // s, code
	wWindow                       // id (0 = connection), n
	wSettingsAck                  // settings: the peer values the writer applies first
	wPingAck                      // ping
	wPing                         // ping: a keepalive PING
	wGoAway                       // code
)

// writeReq is one frame for the writer goroutine. It travels by value so the DATA path does not
// allocate.
type writeReq struct {
	kind     writeKind
	s        *ClientStream
	h        *headers.Map
	data     []byte
	end      bool
	code     ErrCode
	id       uint32
	n        uint32
	ping     [8]byte
	settings peerSettings
	done     chan error // cap 1; answered exactly once when non-nil
}

// peerSettings are the SETTINGS values that change how the writer encodes.
type peerSettings struct {
	hasTableSize bool
	tableSize    uint32
	maxFrame     uint32 // 0 = unchanged
}

// writeLoop is the only writer of the socket: it owns the write Framer, the HPACK encoder and
// the buffered writer, and flushes whenever its queue runs empty.
func (c *ClientConn) writeLoop() {
	defer close(c.writerDone)
	for {
		select {
		case req := <-c.wq:
			c.wlock.Lock()
			c.writeAndAnswer(req)
			c.pending.Add(-1)
			if len(c.wq) == 0 {
				c.flush()
			}
			c.wlock.Unlock()
		case <-c.closing:
			c.wlock.Lock()
			c.drainAndClose()
			c.wlock.Unlock()
			return
		}
	}
}

// drainAndClose writes what is still queued (the last END_STREAM or RST of a graceful close),
// then GOAWAY when closing for a protocol error, flushes and closes the socket, which also ends
// the reader.
func (c *ClientConn) drainAndClose() {
	for {
		select {
		case req := <-c.wq:
			c.writeAndAnswer(req)
			c.pending.Add(-1)
			continue
		default:
		}
		break
	}
	c.mu.Lock()
	goAway, code := c.goAwayOnClose, c.goAwayOnCloseCode
	c.mu.Unlock()
	if goAway && c.werr == nil {
		c.werr = c.wfr.WriteGoAway(goAwayLastStream, code, nil)
		c.stats.GoawaySent.Inc()
	}
	if c.werr == nil {
		// A closing connection does not wait long for its peer: a fresh deadline, at most 1 s.
		c.dw.deadline = http2.WriteDeadline{Timeout: min(c.dw.deadline.Timeout, time.Second)}
		c.werr = c.bw.Flush()
	}
	c.nc.Close()
}

// goAwayLastStream is the last-stream-id of a client's GOAWAY: the highest server-initiated
// stream it processed, always 0 since push is disabled (RFC 9113 §6.8).
const goAwayLastStream = 0

func (c *ClientConn) flush() {
	if c.werr != nil {
		return
	}
	if err := c.bw.Flush(); err != nil {
		c.writeFailed(err)
	}
}

func (c *ClientConn) writeFailed(err error) {
	c.werr = err
	c.mu.Lock()
	c.closeLocked(err, false, 0)
	c.mu.Unlock()
}

// writeAndAnswer writes one request and answers its done channel.
func (c *ClientConn) writeAndAnswer(req writeReq) {
	err := c.write(req)
	if req.done != nil {
		req.done <- err
	}
}

// write writes one request. A request that can no longer be sent (the socket failed earlier)
// gets ErrConnClosed for HEADERS (never sent) and ErrConnLost for DATA (the stream is in flight).
func (c *ClientConn) write(req writeReq) (err error) {
	switch {
	case c.werr != nil && req.kind == wHeaders:
		err = ErrConnClosed
	case c.werr != nil:
		err = fmt.Errorf("%w: %v", ErrConnLost, c.werr)
	default:
		if err = c.writeFrame(req); err != nil && c.werr != nil && !errors.Is(err, ErrConnLost) {
			err = fmt.Errorf("%w: %v", ErrConnLost, err)
		}
	}
	return err
}

// writeFrame writes one request. Errors from the socket fail the connection; errors about one
// stream (refused HEADERS, DATA after RST) are returned to the waiting caller only.
func (c *ClientConn) writeFrame(req writeReq) error {
	var err error
	switch req.kind {
	case wHeaders:
		s := req.s
		c.mu.Lock()
		if c.closed || c.goAwayRecv || c.shutdown || c.nextID > maxStreamID {
			c.mu.Unlock()
			return ErrConnClosed
		}
		s.id = c.nextID
		c.nextID += 2
		c.lastSentID = s.id
		s.registered = true
		s.sendWindow = c.peerInitWindow
		s.recvWindow = int64(c.cfg.InitialStreamWindowSize)
		if req.end {
			s.sentEnd = true
		}
		c.streams[s.id] = s
		c.stats.StreamsActive.Inc()
		c.mu.Unlock()
		if err = c.writeHeaders(s.id, req.h, req.end); err != nil {
			c.writeFailed(err)
			return fmt.Errorf("%w: %v", ErrConnLost, err)
		}
	case wData:
		s := req.s
		if s.rstSent {
			c.mu.Lock()
			c.sendWindow += int64(len(req.data)) // never sent: the peer did not count it
			serr := s.werr
			c.mu.Unlock()
			if serr == nil {
				serr = ErrStreamClosed
			}
			return serr
		}
		for p := req.data; ; {
			n := min(len(p), int(c.wMaxFrame))
			if err = c.wfr.WriteData(s.id, req.end && n == len(p), p[:n]); err != nil || n == len(p) {
				break
			}
			p = p[n:]
		}
	case wRST:
		if !req.s.rstSent {
			req.s.rstSent = true
			err = c.wfr.WriteRSTStream(req.s.id, req.code)
		}
	case wWindow:
		err = c.wfr.WriteWindowUpdate(req.id, req.n)
	case wSettingsAck:
		if st := req.settings; st.hasTableSize {
			c.henc.SetMaxDynamicTableSize(st.tableSize) // bounded by hpackTableLimit
		}
		if req.settings.maxFrame != 0 {
			c.wMaxFrame = req.settings.maxFrame
		}
		err = c.wfr.WriteSettingsAck()
	case wPingAck:
		err = c.wfr.WritePing(true, req.ping)
	case wPing:
		err = c.wfr.WritePing(false, req.ping)
	case wGoAway:
		err = c.wfr.WriteGoAway(goAwayLastStream, req.code, nil)
		if err == nil {
			c.stats.GoawaySent.Inc()
		}
	}
	if err != nil {
		c.writeFailed(err)
	}
	return err
}

// writeHeaders HPACK-encodes h and writes it as HEADERS plus as many CONTINUATION frames as the
// peer's MAX_FRAME_SIZE requires (RFC 9113 §6.10), back to back.
func (c *ClientConn) writeHeaders(id uint32, h *headers.Map, end bool) error {
	c.hbuf.Reset()
	for _, f := range h.Fields() {
		c.henc.WriteField(hpack.HeaderField{Name: f.Name, Value: f.Value, Sensitive: sensitive(f.Name)})
	}
	block := c.hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		frag := block[:min(len(block), int(c.wMaxFrame))]
		block = block[len(frag):]
		var err error
		if first {
			err = c.wfr.WriteHeaders(h2.HeadersFrameParam{
				StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0,
			})
		} else {
			err = c.wfr.WriteContinuation(id, len(block) == 0, frag)
		}
		if err != nil {
			return err
		}
		first = false
	}
	return nil
}

// sensitive fields are never put in the HPACK dynamic table (RFC 7541 §7.1.3).
func sensitive(name string) bool {
	return name == "authorization" || name == "proxy-authorization"
}
