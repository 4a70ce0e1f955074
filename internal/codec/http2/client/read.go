package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/codec/http2"
)

// connError is a connection error (RFC 9113 §5.4.1): the connection is closed with
// GOAWAY(code).
type connError struct {
	code   ErrCode
	reason string
}

func (e connError) Error() string {
	return fmt.Sprintf("http2 connection error %v: %s", e.code, e.reason)
}

// readLoop is the only reader of the socket. It runs the client side of the stream state
// machine (RFC 9113 §5.1) and hands every frame it must answer to the writer. It ends when the
// socket fails or closes, and then closes the connection.
func (c *ClientConn) readLoop() {
	defer close(c.readerDone)
	err := c.readFrames()
	var ce connError
	c.mu.Lock()
	if errors.As(err, &ce) {
		c.closeLocked(err, true, ce.code) // the writer sends GOAWAY, then closes the socket
		c.mu.Unlock()
		return
	}
	c.closeLocked(err, false, 0)
	c.mu.Unlock()
	c.nc.Close()
}

// rpend are frames the reader decided to send while holding c.mu; they are queued to the writer
// after the lock is released. Owned by the reader goroutine.
type rpend []writeReq

func (c *ClientConn) readFrames() error {
	var pend rpend
	first := true
	next := func() error {
		err := c.readFrame(first, &pend)
		if err != nil {
			return err
		}
		first = false
		for i := range pend {
			c.enqueue(pend[i])
			pend[i] = writeReq{}
		}
		pend = pend[:0]
		return nil
	}
	if rc, counter := http2.RawSocket(c.nc); rc != nil {
		// See http2.FrameSource: no read that only says EAGAIN after each message. Every Close
		// of the socket happens outside c.mu, and closing sets rawStop, so the reader, which holds
		// the socket while it handles a frame, lets go promptly.
		blockLimit := max(2*int(c.cfg.MaxHeaderListSize), 32<<10)
		err := c.src.Serve(rc, counter, blockLimit, &c.rawStop, next)
		if errors.Is(err, http2.ErrBlockInTooManyFrames) {
			return connError{h2.ErrCodeEnhanceYourCalm, "header block in too many frames"}
		}
		return err
	}
	for {
		if err := next(); err != nil {
			return err
		}
	}
}

// readFrame reads and handles one frame. WINDOW_UPDATE, which a busy upload receives once per
// DATA frame or so, is parsed here without the Framer's per-frame allocation.
func (c *ClientConn) readFrame(first bool, pend *rpend) error {
	fh, err := c.rfr.ReadFrameHeader()
	if err == nil {
		c.ka.Received()
	}
	if err == nil && first && fh.Type != h2.FrameSettings {
		// RFC 9113 §3.4: the server's preface is a SETTINGS frame.
		return connError{h2.ErrCodeProtocol, "server preface is not SETTINGS"}
	}
	if err == nil && fh.Type == h2.FrameWindowUpdate {
		return c.readWindowUpdate(fh, pend)
	}
	var f h2.Frame
	if err == nil {
		f, err = c.rfr.ReadFrameForHeader(fh)
	}
	if err != nil {
		var se h2.StreamError
		var ce h2.ConnectionError
		switch {
		case errors.As(err, &se):
			return c.onStreamError(se, pend)
		case errors.Is(err, h2.ErrFrameTooLarge):
			return connError{h2.ErrCodeFrameSize, "frame larger than our MAX_FRAME_SIZE"}
		case errors.As(err, &ce):
			reason := "invalid frame"
			if d := c.rfr.ErrorDetail(); d != nil {
				reason = d.Error()
			}
			return connError{ErrCode(ce), reason}
		}
		return err
	}
	if sf, ok := f.(*h2.SettingsFrame); first && ok && sf.IsAck() {
		return connError{h2.ErrCodeProtocol, "server preface is a SETTINGS ack"}
	}
	return c.onFrame(f, pend)
}

// readWindowUpdate reads a WINDOW_UPDATE payload straight from the socket buffer, with the
// Framer's checks (RFC 9113 §6.9).
func (c *ClientConn) readWindowUpdate(fh h2.FrameHeader, pend *rpend) error {
	if fh.Length != 4 {
		return connError{h2.ErrCodeFrameSize, "WINDOW_UPDATE length is not 4"}
	}
	p := c.wuBuf[:]
	if _, err := io.ReadFull(c.src, p); err != nil {
		return err
	}
	inc := binary.BigEndian.Uint32(p) & 0x7fffffff
	if inc == 0 {
		if fh.StreamID == 0 {
			return connError{h2.ErrCodeProtocol, "WINDOW_UPDATE of 0 on the connection"}
		}
		return c.onStreamError(h2.StreamError{StreamID: fh.StreamID, Code: h2.ErrCodeProtocol}, pend)
	}
	return c.onWindowUpdate(fh.StreamID, inc, pend)
}

func (c *ClientConn) onFrame(f h2.Frame, pend *rpend) error {
	switch f := f.(type) {
	case *h2.DataFrame:
		return c.onData(f, pend)
	case *h2.MetaHeadersFrame:
		return c.onHeaders(f, pend)
	case *h2.SettingsFrame:
		return c.onSettings(f, pend)
	case *h2.RSTStreamFrame:
		return c.onRSTStream(f, pend)
	case *h2.PingFrame:
		if f.IsAck() {
			c.ka.Acked()
		} else {
			*pend = append(*pend, writeReq{kind: wPingAck, ping: f.Data})
		}
	case *h2.GoAwayFrame:
		c.onGoAway(f)
	case *h2.PushPromiseFrame:
		// RFC 9113 §8.4: we sent ENABLE_PUSH=0.
		return connError{h2.ErrCodeProtocol, "PUSH_PROMISE with push disabled"}
	}
	// PRIORITY, PRIORITY_UPDATE and unknown frame types are ignored (RFC 9113 §5.5).
	return nil
}

// streamLocked returns the open stream id, or nil for a stream that has closed. A frame on a
// stream this client never opened is a connection error (RFC 9113 §5.1, idle state).
func (c *ClientConn) streamLocked(id uint32) (*ClientStream, error) {
	if s := c.streams[id]; s != nil {
		return s, nil
	}
	if id%2 == 0 || id > c.lastSentID {
		return nil, connError{h2.ErrCodeProtocol, fmt.Sprintf("frame on idle stream %d", id)}
	}
	return nil, nil
}

// resetLocked resets s from the reader: RST_STREAM(code) is queued.
func (c *ClientConn) resetLocked(s *ClientStream, code ErrCode, cause error, pend *rpend) {
	send, cr := s.resetLocked(code, cause)
	if send {
		*pend = append(*pend, writeReq{kind: wRST, s: s, code: code})
	}
	pend.credit(cr)
}

// malformedLocked handles a response RFC 9113 §8.1.1 calls malformed: RST_STREAM
// PROTOCOL_ERROR and http2.rx_messaging_error.
func (c *ClientConn) malformedLocked(s *ClientStream, reason string, pend *rpend) {
	c.stats.RxMessagingError.Inc()
	c.resetLocked(s, h2.ErrCodeProtocol, &http2.MalformedError{Reason: reason}, pend)
}

func (p *rpend) credit(cr credit) {
	if cr.conn > 0 {
		*p = append(*p, writeReq{kind: wWindow, n: cr.conn})
	}
	if cr.stream > 0 {
		*p = append(*p, writeReq{kind: wWindow, id: cr.id, n: cr.stream})
	}
}

func (c *ClientConn) onStreamError(se h2.StreamError, pend *rpend) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.streamLocked(se.StreamID)
	if s == nil {
		return err
	}
	if se.Cause != nil {
		// The Framer rejected the header block (RFC 9113 §8.2): malformed.
		c.malformedLocked(s, se.Cause.Error(), pend)
		return nil
	}
	c.resetLocked(s, se.Code, nil, pend)
	return nil
}

func (c *ClientConn) onData(f *h2.DataFrame, pend *rpend) error {
	n := int64(f.Length) // flow control counts padding (RFC 9113 §6.9)
	data := f.Data()
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.recvWindow {
		return connError{h2.ErrCodeFlowControl, "DATA beyond the connection window"}
	}
	c.recvWindow -= n
	s, err := c.streamLocked(f.StreamID)
	if s == nil {
		pend.credit(c.creditLocked(nil, n))
		return err
	}
	end := f.StreamEnded()
	switch {
	case !s.respGot:
		c.malformedLocked(s, "DATA before the response HEADERS", pend)
	case s.recvEnd:
		c.resetLocked(s, h2.ErrCodeStreamClosed, errors.New("DATA after END_STREAM"), pend)
	case n > s.recvWindow:
		c.resetLocked(s, h2.ErrCodeFlowControl, errors.New("DATA beyond the stream window"), pend)
	case s.contentLen >= 0 && (s.recvBytes+int64(len(data)) > s.contentLen ||
		end && s.recvBytes+int64(len(data)) != s.contentLen):
		c.malformedLocked(s, "DATA length differs from content-length", pend) // RFC 9113 §8.1.1
	default:
		s.recvWindow -= n
		s.recvBytes += int64(len(data))
		pad := n - int64(len(data)) // never read
		if len(data) > 0 && s.sink != nil && s.roff == len(s.rbuf) && !s.consuming {
			if data = c.passLocked(s, data, pend); s.rerr != nil {
				pend.credit(c.creditLocked(nil, int64(len(data))+pad))
				return nil // reset while the sink ran: nobody reads the rest
			}
		}
		if len(data) > 0 {
			s.appendRbufLocked(data)
		}
		pend.credit(c.creditLocked(s, pad))
		if end {
			s.recvEnd = true
			s.maybeFinishLocked()
		}
		if len(data) > 0 || end {
			s.notifyRead() // not when the sink took it all: the reader has nothing new
		}
		return nil
	}
	pend.credit(c.creditLocked(nil, n))
	return nil
}

// passLocked offers p to the stream's sink (see ClientStream.SetDataSink), with c.mu released
// meanwhile, and returns what the sink did not take. Only this goroutine adds to the stream's
// queue, so it is still empty when the lock is back. What the sink took opens the windows as Read
// would.
func (c *ClientConn) passLocked(s *ClientStream, p []byte, pend *rpend) []byte {
	sink := s.sink
	c.mu.Unlock()
	k := sink(p)
	c.mu.Lock()
	if k > 0 {
		pend.credit(c.creditLocked(s, int64(k)))
	}
	return p[k:]
}

func (c *ClientConn) onHeaders(f *h2.MetaHeadersFrame, pend *rpend) error {
	h := headers.New()
	for _, hf := range f.Fields {
		h.Add(hf.Name, hf.Value)
	}
	end := f.StreamEnded()
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.streamLocked(f.StreamID)
	if s == nil {
		return err
	}
	switch {
	case s.recvEnd:
		c.resetLocked(s, h2.ErrCodeStreamClosed, errors.New("HEADERS after END_STREAM"), pend)
		return nil
	case f.Truncated:
		c.stats.HeaderOverflow.Inc()
		c.resetLocked(s, h2.ErrCodeInternal, ErrResponseHeadersTooLarge, pend)
		return nil
	}
	if err := http2.CheckFields(h, false); err != nil {
		var me *http2.MalformedError
		if errors.As(err, &me) {
			c.malformedLocked(s, me.Reason, pend)
		} else {
			c.malformedLocked(s, err.Error(), pend)
		}
		return nil
	}
	if s.respGot {
		// Trailers: RFC 9113 §8.1 — END_STREAM and no pseudo-headers.
		if !end || h.Len() > 0 && h.Fields()[0].Name[0] == ':' {
			c.malformedLocked(s, "trailers without END_STREAM or with pseudo-headers", pend)
			return nil
		}
		s.trailers = h
		c.stats.Trailers.Inc()
	} else {
		status, ok := parseStatus(h.Get(headers.Status))
		switch {
		case !ok:
			c.malformedLocked(s, "missing or invalid :status", pend)
			return nil
		case status == 101:
			c.malformedLocked(s, "101 is not allowed in HTTP/2 (RFC 9113 §8.6)", pend)
			return nil
		case status < 200:
			if end {
				c.malformedLocked(s, "interim response with END_STREAM", pend)
			}
			return nil // interim responses are skipped
		}
		if checksLength(s.method, status) {
			cl, ok := contentLength(h)
			if !ok {
				c.malformedLocked(s, "invalid content-length", pend)
				return nil
			}
			s.contentLen = cl
		}
		http2.ResponseFromH2(h, s.upgrade)
		s.resp, s.respGot, s.respEnd = h, true, end
		s.hdrClosed = true
		close(s.hdrReady)
	}
	if end {
		if s.contentLen >= 0 && s.recvBytes != s.contentLen {
			c.malformedLocked(s, "END_STREAM before content-length bytes", pend)
			return nil
		}
		s.recvEnd = true
		s.notifyRead()
		s.maybeFinishLocked()
	}
	return nil
}

// checksLength says whether a response's content-length describes its DATA (RFC 9110 §8.6):
// not for HEAD, 204, 304, or a 2xx to CONNECT (a tunnel).
func checksLength(method string, status int) bool {
	return method != "HEAD" && status != 204 && status != 304 && !(method == "CONNECT" && status/100 == 2)
}

// parseStatus accepts exactly three digits.
func parseStatus(v string) (int, bool) {
	if len(v) != 3 {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 100
}

// contentLength returns the declared length, -1 when absent; several values must agree.
func contentLength(h *headers.Map) (int64, bool) {
	cl := int64(-1)
	for _, v := range h.Values("content-length") {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || v[0] == '+' || cl >= 0 && n != cl {
			return 0, false
		}
		cl = n
	}
	return cl, true
}

func (c *ClientConn) onSettings(f *h2.SettingsFrame, pend *rpend) error {
	if f.IsAck() {
		return nil
	}
	var ps peerSettings
	sawMaxStreams := false
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(st h2.Setting) error {
		if err := st.Valid(); err != nil {
			var ce h2.ConnectionError
			errors.As(err, &ce)
			return connError{ErrCode(ce), "invalid " + st.String()}
		}
		switch st.ID {
		case h2.SettingHeaderTableSize:
			ps.hasTableSize, ps.tableSize = true, st.Val
		case h2.SettingEnablePush:
			if st.Val != 0 { // RFC 9113 §6.5.2
				return connError{h2.ErrCodeProtocol, "server sent ENABLE_PUSH=1"}
			}
		case h2.SettingMaxConcurrentStreams:
			c.peerMaxStreams, sawMaxStreams = st.Val, true
		case h2.SettingInitialWindowSize:
			// RFC 9113 §6.9.2: the change applies to every open stream's send window.
			delta := int64(st.Val) - c.peerInitWindow
			c.peerInitWindow = int64(st.Val)
			for _, s := range c.streams {
				s.sendWindow += delta
				if s.sendWindow > maxWindow {
					return connError{h2.ErrCodeFlowControl, "INITIAL_WINDOW_SIZE overflows a stream window"}
				}
				if delta > 0 {
					s.notifySend()
				}
			}
		case h2.SettingMaxFrameSize:
			c.peerMaxFrame, ps.maxFrame = st.Val, st.Val
		case h2.SettingMaxHeaderListSize:
			c.peerMaxHdrList = st.Val
		case h2.SettingEnableConnectProtocol:
			if c.peerConnect && st.Val == 0 { // RFC 8441 §3
				return connError{h2.ErrCodeProtocol, "ENABLE_CONNECT_PROTOCOL withdrawn"}
			}
			c.peerConnect = st.Val == 1
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !c.settingsKnown {
		if !sawMaxStreams {
			c.peerMaxStreams = math.MaxUint32 // RFC 9113 §6.5.2: unlimited unless set
		}
		c.settingsKnown = true
		close(c.settingsCh)
	}
	*pend = append(*pend, writeReq{kind: wSettingsAck, settings: ps})
	return nil
}

func (c *ClientConn) onWindowUpdate(id, increment uint32, pend *rpend) error {
	inc := int64(increment)
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == 0 {
		c.sendWindow += inc
		if c.sendWindow > maxWindow {
			return connError{h2.ErrCodeFlowControl, "connection window overflow"}
		}
		for _, s := range c.streams {
			s.notifySend()
		}
		return nil
	}
	s, err := c.streamLocked(id)
	if s == nil {
		return err
	}
	s.sendWindow += inc
	if s.sendWindow > maxWindow {
		c.resetLocked(s, h2.ErrCodeFlowControl, errors.New("stream window overflow"), pend)
		return nil
	}
	s.notifySend()
	return nil
}

func (c *ClientConn) onRSTStream(f *h2.RSTStreamFrame, pend *rpend) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.streamLocked(f.StreamID)
	if s == nil {
		return err
	}
	c.stats.RxReset.Inc()
	if f.ErrCode == h2.ErrCodeRefusedStream {
		c.stats.StreamRefusedErrors.Inc()
	}
	// A response already complete stays readable: RFC 9113 §8.1 lets a server answer early and
	// reset the request side with NO_ERROR.
	dropped := s.failLocked(&StreamError{Code: f.ErrCode, Remote: true}, false)
	pend.credit(c.creditLocked(nil, dropped))
	return nil
}

// onGoAway fails the streams the peer will not process (above last-stream-id) with a
// retryable ErrConnClosed; the others go on, and the connection closes when they are done.
func (c *ClientConn) onGoAway(f *h2.GoAwayFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	last := f.LastStreamID
	if c.goAwayRecv && c.goAwayLastID < last {
		last = c.goAwayLastID
	}
	c.goAwayRecv, c.goAwayLastID = true, last
	for id, s := range c.streams {
		if id > last {
			s.failLocked(fmt.Errorf("%w: GOAWAY %v, last stream %d", ErrConnClosed, f.ErrCode, last), true)
		}
	}
	c.closeIfIdleLocked()
}
