package http2

import (
	"net"
	"sync"
	"syscall"

	h2 "golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/rawsys"
	"github.com/switchyard-proxy/switchyard/internal/workers"
)

// outKind is what an outFrame asks the writer to do.
type outKind uint8

const (
	outSettings outKind = iota
	outSettingsAck
	outPing
	outGoAway
	outRST
	outWindowUpdate
	outHeaders
	outData
	outTableSize  // apply the peer's SETTINGS_HEADER_TABLE_SIZE to our HPACK encoder
	outCloseWrite // flush, half-close the socket and stop: the last item after a final GOAWAY
)

// outFrame is one entry of the write queue. Values, not pointers, so the queue's two slices are
// reused and queueing a frame does not allocate.
type outFrame struct {
	kind outKind
	end  bool   // END_STREAM for HEADERS/DATA, ACK for PING
	id   uint32 // stream id; the last stream id for GOAWAY
	val  uint32 // error code, window increment or table size
	ping [8]byte
	s    *ServerStream
	hdr  *headers.Map
	data []byte // DATA payload (the handler's own slice) or GOAWAY debug data
}

// control reports whether f counts against MaxOutboundControlFrames: the frames a peer can make
// us send without sending requests (Envoy's outbound control frame accounting).
func (f *outFrame) control() bool {
	return f.kind == outSettingsAck || f.kind == outRST || (f.kind == outPing && f.end)
}

// enqueueLocked appends f to the write queue. Past the outbound limits the peer is not reading
// what it makes us write: the connection is closed at once (outbound_flood /
// outbound_control_flood) and enqueueLocked reports false.
func (c *ServerConn) enqueueLocked(f outFrame) bool {
	if c.closed || c.writerClosed || c.closeWriteQueued {
		return false
	}
	if c.queued >= c.cfg.MaxOutboundFrames {
		c.stats.OutboundFlood.Inc()
		c.abortLocked(errOutboundFlood)
		return false
	}
	if f.control() {
		if c.queuedControl >= c.cfg.MaxOutboundControlFrames {
			c.stats.OutboundControlFlood.Inc()
			c.abortLocked(errOutboundFlood)
			return false
		}
		c.queuedControl++
	}
	if f.kind == outCloseWrite {
		c.closeWriteQueued = true
	}
	c.queued++
	c.queue = append(c.queue, f)
	c.kickWriterLocked()
	return true
}

// kickWriterLocked starts the writer goroutine if there is something for it and none is running:
// frames queued and no one writing, or the connection closed (the writer's exit wakes whoever
// waits for it). The writer ends when the queue is empty, so an idle connection keeps no writer
// goroutine (and its stack: a fifth of what an idle WebSocket over HTTP/2 cost).
func (c *ServerConn) kickWriterLocked() {
	if c.writerOn || c.writerClosed || !c.serving {
		return
	}
	if c.closed || len(c.queue) > 0 && !c.writing {
		c.writerOn = true
		workers.Go(c.writeLoop) // a kept goroutine: a response's HEADERS may start one each time
	}
}

// writeLoop is the connection's writer goroutine, started by kickWriterLocked. Whoever writes —
// this loop, or a stream writing its own DATA while the queue is empty (writeDataDirectLocked) —
// holds c.writing, which gives it the Framer's write side, the HPACK encoder and the buffered
// socket writer. The loop takes the whole queue at a time, writes it, and flushes when nothing
// more is waiting; it ends when the queue is empty or someone else is writing (who starts it
// again if frames are queued by the time it is done). Frames stay counted against the outbound
// limits until written.
func (c *ServerConn) writeLoop() {
	batch := c.batch
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			c.writerExit(&batch)
			return
		}
		if len(c.queue) == 0 || c.writing {
			c.writerOn = false
			c.batch = batch
			c.mu.Unlock()
			return
		}
		batch, c.queue = c.queue, batch[:0]
		c.writing = true
		c.mu.Unlock()

		var err error
		stop := false
		control := 0
		for i := range batch {
			f := &batch[i]
			if f.control() {
				control++
			}
			if stop, err = c.writeFrame(f); err != nil || stop {
				break
			}
		}
		c.mu.Lock()
		c.queued -= len(batch)
		c.queuedControl -= control
		more := len(c.queue) > 0
		c.mu.Unlock()
		if err == nil && (!more || stop) {
			err = c.bw.Flush()
		}
		c.mu.Lock()
		c.writing = false
		if err != nil {
			c.abortLocked(err)
			c.mu.Unlock()
			c.writerExit(&batch)
			return
		}
		c.mu.Unlock()
		if stop {
			if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			c.writerExit(&batch)
			return
		}
		clear(batch)
	}
}

// canWriteDirectLocked reports whether a stream may write its DATA itself: nothing is queued
// (so nothing queued earlier, such as its own HEADERS, would be overtaken) and no one is writing.
// That saves two goroutine switches per message — waking the writer, and the writer waking the
// stream back — which was most of a tunnel's cost per message.
func (c *ServerConn) canWriteDirectLocked() bool {
	return len(c.queue) == 0 && !c.writing && !c.closed && !c.writerClosed && !c.closeWriteQueued
}

// writeDataDirectLocked writes DATA for s on the caller's goroutine and flushes. Called with c.mu
// held and canWriteDirectLocked true; c.mu is released during the write. Frames queued meanwhile
// wait for the writer goroutine, which is woken once the socket is free again.
func (c *ServerConn) writeDataDirectLocked(s *ServerStream, p []byte, end bool) error {
	c.writing = true
	maxFrame := int(c.peerMaxFrame)
	c.mu.Unlock()
	var err error
	if len(p) > maxFrame && c.vec.w != nil && c.bw.Buffered() == 0 {
		err = c.writeDataVectored(s.id, p, end, maxFrame)
	} else {
		err = c.writeDataFrames(s.id, p, end, maxFrame)
		if err == nil {
			err = c.bw.Flush()
		}
	}
	c.mu.Lock()
	c.writing = false
	if err != nil {
		c.abortLocked(err)
		return err
	}
	c.kickWriterLocked() // for frames queued meanwhile
	return nil
}

// vectored writes several DATA frames with one writev(2): their 9-byte headers and the caller's
// payload slices side by side, no copy. Owned by the holder of c.writing.
type vectored struct {
	w        *net.TCPConn       // nil: not a plain TCP socket
	sendFD   int                // w's descriptor, for the engine's sends (-1: none)
	sock     *rawsys.ConnWriter // w's, counting as the connection does
	deadline *WriteDeadline     // shared with the connection's deadlineWriter
}

// dataFrames is the scratch space of one vectored write of DATA frames: their headers and the
// writev list. It comes from a pool for the write, rather than living in every connection
// (285 bytes that an idle tunnel's connection would hold for nothing).
type dataFrames struct {
	hdrs [maxDataChunk/16384 + 1][9]byte
	bufs [2 * (maxDataChunk/16384 + 1)][]byte
}

var dataFramesPool = sync.Pool{New: func() any { return new(dataFrames) }}

// release clears the payload slices (so the pool keeps no buffer alive) and returns df.
func (df *dataFrames) release() {
	clear(df.bufs[:])
	dataFramesPool.Put(df)
}

// writeDataVectored frames p (at most maxDataChunk) as DATA no larger than maxFrame and writes the
// frames at once: a 64 KiB message in one syscall instead of one per frame.
func (c *ServerConn) writeDataVectored(id uint32, p []byte, end bool, maxFrame int) error {
	df, bufs, rest := c.dataFrameVec(id, p, end, maxFrame)
	defer df.release()
	if len(rest) > 0 {
		return c.writeDataFrames(id, p, end, maxFrame) // cannot happen: p is at most maxDataChunk
	}
	v := &c.vec
	if err := v.deadline.Extend(v.w); err != nil {
		return err
	}
	_, err := v.sock.Writev(bufs)
	return err
}

// dataFrameVec lays p out as DATA frames no larger than maxFrame in pooled scratch space: their
// headers and p's slices, for one writev. What does not fit (more than maxDataChunk) is returned,
// unframed. The caller holds c.writing, and releases df once the write is done.
func (c *ServerConn) dataFrameVec(id uint32, p []byte, end bool, maxFrame int) (df *dataFrames, bufs [][]byte, rest []byte) {
	df = dataFramesPool.Get().(*dataFrames)
	bufs = df.bufs[:0]
	for i := 0; len(p) > 0 && i < len(df.hdrs); i++ {
		n := min(len(p), maxFrame)
		h := &df.hdrs[i]
		h[0], h[1], h[2] = byte(n>>16), byte(n>>8), byte(n)
		h[3], h[4] = byte(h2.FrameData), 0
		if end && n == len(p) {
			h[4] = byte(h2.FlagDataEndStream)
		}
		h[5], h[6], h[7], h[8] = byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id)
		bufs = append(bufs, h[:], p[:n])
		p = p[n:]
		c.dataFramesSent.Add(1)
	}
	return df, bufs, p
}

// maxTryData bounds TryWriteData's payload, so that what a full socket leaves of its frames fits
// a big slab.
const maxTryData = 32 << 10

// tryWriteDataLocked is ServerStream.TryWriteData's work, with c.mu held (and released while the
// frames are written).
func (c *ServerConn) tryWriteDataLocked(s *ServerStream, p []byte) bool {
	n := int64(len(p))
	if s.writableLocked() != nil || n > s.sendWin || n > c.sendWin || !c.canWriteDirectLocked() || c.vec.w == nil {
		return false
	}
	c.writing = true
	if c.bw.Buffered() > 0 { // only after a failed write: let the writer sort it out
		c.writing = false
		c.kickWriterLocked()
		return false
	}
	s.sendWin -= n
	c.sendWin -= n
	maxFrame := int(c.peerMaxFrame)
	c.mu.Unlock()
	df, bufs, _ := c.dataFrameVec(s.id, p, false, maxFrame)
	defer df.release()
	total := len(p) + len(bufs)/2*frameHeaderLen
	frames := len(bufs) / 2
	sent, err := c.vec.sock.TryWritev(bufs) // it may modify bufs
	if err == nil && sent == 0 {
		// The socket is full: nothing went, so nothing was taken.
		c.dataFramesSent.Add(-int64(frames))
		c.mu.Lock()
		s.sendWin += n
		c.sendWin += n
		c.writing = false
		c.kickWriterLocked()
		return false
	}
	if err == nil && sent < total {
		// The socket took part of the frames. The rest must go before anything else, and the
		// caller cannot wait: a goroutine of its own writes it, holding c.writing meanwhile.
		segs := df.bufs[:0]
		for i, q := 0, p; i < frames; i++ {
			k := min(len(q), maxFrame)
			segs = append(segs, df.hdrs[i][:], q[:k])
			q = q[k:]
		}
		c.finishDataLater(sent, segs) // copies what is left
		c.mu.Lock()
		return true
	}
	c.mu.Lock()
	c.writing = false
	if err != nil {
		c.abortLocked(err)
		return true // the connection is going: the stream's end tells the caller
	}
	c.kickWriterLocked() // for frames queued meanwhile
	return true
}

// Sends by the tunnel engine. A tunnel's upstream bytes read in an io_uring batch can go out as
// DATA in the batch's sends instead of one writev each: BeginData reserves the windows and the
// socket for one frame and writes its header, the engine sends header and payload from its own
// buffer on the socket's descriptor, and EndData settles what the send did. Between the two
// (microseconds: the engine's sends never wait), the stream's other writers queue behind
// c.writing as they do behind any write, and closing the connection waits (c.sending): the
// descriptor must not be closed, and its number reused, under a send in flight.

// BeginData reserves, for the engine's send of n payload bytes as one DATA frame on s, what
// TryWriteData would need (the windows, the socket, no queue), writes the frame's header into
// hdr (9 bytes) and returns the descriptor to send on. ok false: nothing was reserved.
func (s *ServerStream) BeginData(n int, hdr []byte) (fd int, ok bool) {
	c := s.c
	if n <= 0 || !s.wmu.TryLock() {
		return -1, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	w := int64(n)
	if n > int(c.peerMaxFrame) || s.writableLocked() != nil || w > s.sendWin || w > c.sendWin || !c.canWriteDirectLocked() || c.vec.w == nil {
		s.wmu.Unlock()
		return -1, false
	}
	c.writing = true
	if c.bw.Buffered() > 0 || c.vec.sendFD < 0 {
		c.writing = false
		c.kickWriterLocked()
		s.wmu.Unlock()
		return -1, false
	}
	c.sending = true
	s.sendWin -= w
	c.sendWin -= w
	hdr[0], hdr[1], hdr[2] = byte(n>>16), byte(n>>8), byte(n)
	hdr[3], hdr[4] = byte(h2.FrameData), 0
	hdr[5], hdr[6], hdr[7], hdr[8] = byte(s.id>>24)&0x7f, byte(s.id>>16), byte(s.id>>8), byte(s.id)
	return c.vec.sendFD, true // s.wmu, c.writing and c.sending are held until EndData
}

// EndData settles the engine's send of frame (header and payload, as BeginData laid it out):
// res is what the send returned, bytes sent or -errno. It reports whether the payload was taken:
// false only when nothing went because the socket was full, and then nothing is reserved any
// more (the caller writes the payload another way). What a partly full socket did not take goes
// out from a copy before anything else (as in TryWriteData).
func (s *ServerStream) EndData(frame []byte, res int32) bool {
	c := s.c
	defer s.wmu.Unlock()
	if res > 0 {
		c.vec.sock.Count(int(res))
	}
	c.mu.Lock()
	c.sending = false
	if c.closePending {
		c.closeSocketLocked() // the close that waited for this send
	}
	c.mu.Unlock()
	switch {
	case res == int32(len(frame)):
		c.dataFramesSent.Add(1)
	case res > 0:
		c.dataFramesSent.Add(1)
		c.finishDataLater(int(res), [][]byte{frame})
		return true
	case res == -int32(syscall.EAGAIN) || res == 0:
		w := int64(len(frame) - frameHeaderLen)
		c.mu.Lock()
		s.sendWin += w
		c.sendWin += w
		c.writing = false
		c.kickWriterLocked()
		c.mu.Unlock()
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writing = false
	if res < 0 {
		c.abortLocked(syscall.Errno(-res))
		return true // the connection is going: the stream's end tells the caller
	}
	c.kickWriterLocked()
	return true
}

// finishDataLater writes what the socket did not take of the frames laid out in segs (the first
// sent bytes went), on a goroutine that holds c.writing until they are out. The bytes are copied,
// as segs are the caller's.
func (c *ServerConn) finishDataLater(sent int, segs [][]byte) {
	left := -sent
	for _, seg := range segs {
		left += len(seg)
	}
	slab := buffer.GetSlab()
	if left > len(*slab) {
		buffer.PutSlab(slab)
		slab = buffer.GetBigSlab()
	}
	rest := (*slab)[:0]
	for _, seg := range segs {
		skip := min(sent, len(seg))
		sent -= skip
		rest = append(rest, seg[skip:]...)
	}
	workers.Go(func() {
		v := &c.vec
		err := v.deadline.Extend(v.w)
		if err == nil {
			_, err = v.sock.Write(rest)
		}
		buffer.PutSlab(slab)
		c.mu.Lock()
		c.writing = false
		if err != nil {
			c.abortLocked(err)
		} else {
			c.kickWriterLocked()
		}
		c.mu.Unlock()
	})
}

// writeDataFrames frames p as DATA no larger than maxFrame. The caller holds c.writing.
func (c *ServerConn) writeDataFrames(id uint32, p []byte, end bool, maxFrame int) error {
	for {
		n := min(len(p), maxFrame)
		if err := c.fr.WriteData(id, end && n == len(p), p[:n]); err != nil {
			return err
		}
		c.dataFramesSent.Add(1)
		if p = p[n:]; len(p) == 0 {
			return nil
		}
	}
}

// writerExit wakes every handler whose DATA will now never be written.
func (c *ServerConn) writerExit(batch *[]outFrame) {
	c.mu.Lock()
	c.writerClosed = true
	for _, s := range c.active {
		s.dataQueued = false
		s.cond.Broadcast()
	}
	clear(*batch)
	clear(c.queue)
	c.queue = c.queue[:0]
	c.mu.Unlock()
	close(c.writerDone)
}

// writeFrame writes one queued item; stop is set for outCloseWrite.
func (c *ServerConn) writeFrame(f *outFrame) (stop bool, err error) {
	switch f.kind {
	case outSettings:
		err = c.fr.WriteSettings(c.settings()...)
	case outSettingsAck:
		err = c.fr.WriteSettingsAck()
	case outPing:
		err = c.fr.WritePing(f.end, f.ping)
	case outGoAway:
		err = c.fr.WriteGoAway(f.id, h2.ErrCode(f.val), f.data)
	case outRST:
		err = c.fr.WriteRSTStream(f.id, h2.ErrCode(f.val))
	case outWindowUpdate:
		err = c.fr.WriteWindowUpdate(f.id, f.val)
	case outTableSize:
		c.henc.SetMaxDynamicTableSizeLimit(f.val)
	case outHeaders:
		err = c.writeHeaders(f)
	case outData:
		err = c.writeData(f)
	case outCloseWrite:
		return true, nil
	}
	return false, err
}

// settings are the SETTINGS we announce: a server never sends ENABLE_PUSH (RFC 9113 §6.5.2), and
// ENABLE_CONNECT_PROTOCOL only when the listener allows RFC 8441.
func (c *ServerConn) settings() []h2.Setting {
	s := []h2.Setting{
		{ID: h2.SettingMaxConcurrentStreams, Val: c.cfg.MaxConcurrentStreams},
		{ID: h2.SettingInitialWindowSize, Val: c.cfg.InitialStreamWindowSize},
		{ID: h2.SettingMaxHeaderListSize, Val: c.cfg.MaxHeaderListSize},
	}
	if c.cfg.AllowConnect {
		s = append(s, h2.Setting{ID: h2.SettingEnableConnectProtocol, Val: 1})
	}
	return s
}

// streamState reads, under the lock, whether f's stream was reset (its frames are dropped: RFC
// 9113 §5.1 forbids DATA after RST_STREAM) and the peer's current maximum frame size.
func (c *ServerConn) streamState(s *ServerStream) (dead bool, maxFrame int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return s.err != nil, int(c.peerMaxFrame)
}

func (c *ServerConn) writeHeaders(f *outFrame) error {
	dead, maxFrame := c.streamState(f.s)
	if dead {
		return nil
	}
	c.hbuf.Reset()
	for _, hf := range f.hdr.Fields() {
		if err := c.henc.WriteField(hpack.HeaderField{Name: hf.Name, Value: hf.Value}); err != nil {
			return err
		}
	}
	block := c.hbuf.Bytes()
	n := min(len(block), maxFrame)
	err := c.fr.WriteHeaders(h2.HeadersFrameParam{
		StreamID: f.id, BlockFragment: block[:n], EndStream: f.end, EndHeaders: n == len(block),
	})
	for block = block[n:]; err == nil && len(block) > 0; block = block[n:] {
		n = min(len(block), maxFrame)
		err = c.fr.WriteContinuation(f.id, n == len(block), block[:n])
	}
	return err
}

func (c *ServerConn) writeData(f *outFrame) error {
	s := f.s
	dead, maxFrame := c.streamState(s)
	var err error
	if !dead {
		err = c.writeDataFrames(f.id, f.data, f.end, maxFrame)
	}
	c.mu.Lock()
	if dead && len(f.data) > 0 {
		c.sendWin += int64(len(f.data)) // never sent: the connection window is not spent
		c.wakeWritersLocked()
	}
	s.dataQueued = false
	s.dataWritten = !dead && err == nil
	s.cond.Broadcast()
	c.mu.Unlock()
	return err
}

// deadlineWriter keeps a write deadline ahead of every socket write, so a peer that stops reading
// holds the writer (and, through the outbound limits, the connection) for at most the timeout.
// On a plain TCP socket it writes through sock (see rawsys), which counts the bytes as nc would.
type deadlineWriter struct {
	nc       net.Conn
	sock     *rawsys.ConnWriter // nil: write to nc
	deadline *WriteDeadline
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	if err := w.deadline.Extend(w.nc); err != nil {
		return 0, err
	}
	if w.sock != nil {
		return w.sock.Write(p)
	}
	return w.nc.Write(p)
}
