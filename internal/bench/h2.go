package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The receive windows the client grants: Go's own HTTP/2 client uses the same (4 MiB per stream,
// 1 GiB per connection), so the peer's sending is not throttled by a small window.
const (
	h2StreamWindow = 4 << 20
	h2ConnWindow   = 1 << 30
	h2StreamID     = 1
)

// h2Stream is one WebSocket over HTTP/2 (RFC 8441) on its own connection, as stream 1, spoken with
// the raw x/net Framer. Whoever needs frames reads them: Read, or a Write that ran out of send
// window while no Read is running. DATA read on behalf of a Write waits in pend.
type h2Stream struct {
	nc net.Conn
	fr *http2.Framer
	bw *bufio.Writer

	wmu sync.Mutex // serialises frame writes through bw

	// DATA bytes received since the last connection and stream WINDOW_UPDATE. The reader adds;
	// whoever holds wmu sends the update once half a window is due (see sendAcks).
	ackConn, ackStrm atomic.Int64

	rmu     sync.Mutex // held by whoever reads frames; guards the fields below it
	pend    []byte     // received DATA not yet returned by Read: pend[pr:]
	pr      int
	ended   bool
	status  string // the response's :status, "" until it arrives
	connect bool   // the server sent SETTINGS_ENABLE_CONNECT_PROTOCOL = 1
	gotSett bool   // the server's first SETTINGS arrived

	mu        sync.Mutex
	cond      sync.Cond // a window grew, the reader role was released, or err was set
	connWin   int64     // send windows (RFC 9113 §6.9)
	streamWin int64
	initWin   int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame  int
	err       error // sticky: the connection failed
}

// openH2Stream sends the preface and SETTINGS, waits for the server's SETTINGS to allow extended
// CONNECT (RFC 8441 §3), then opens stream 1 with :method CONNECT and :protocol websocket and
// waits for :status 200 (RFC 8441 §5).
func openH2Stream(nc net.Conn, t target, bufSize int) (*h2Stream, error) {
	s := &h2Stream{nc: nc, connWin: 65535, streamWin: 65535, initWin: 65535, maxFrame: 16384}
	s.cond.L = &s.mu
	s.bw = bufio.NewWriterSize(nc, bufSize+256)
	s.fr = http2.NewFramer(s.bw, bufio.NewReaderSize(nc, min(bufSize, 16384+9)))
	s.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	s.fr.SetReuseFrames()
	_, _ = s.bw.WriteString(http2.ClientPreface)
	_ = s.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow})
	_ = s.fr.WriteWindowUpdate(0, h2ConnWindow-65535)
	if err := s.bw.Flush(); err != nil {
		return nil, err
	}
	for !s.gotSett {
		if _, err := s.readFrame(); err != nil {
			return nil, err
		}
	}
	if !s.connect {
		return nil, errors.New("the server does not allow extended CONNECT (no SETTINGS_ENABLE_CONNECT_PROTOCOL)")
	}
	scheme := "http"
	if t.tls {
		scheme = "https"
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", scheme},
		{":path", t.path}, {":authority", t.authority}, {"sec-websocket-version", "13"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	s.wmu.Lock()
	err := s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h2StreamID, BlockFragment: hb.Bytes(), EndHeaders: true})
	if err == nil {
		err = s.bw.Flush()
	}
	s.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	for s.status == "" {
		d, err := s.readFrame()
		if err != nil {
			return nil, err
		}
		s.pend = append(s.pend, d...)
	}
	if s.status != "200" {
		return nil, fmt.Errorf("extended CONNECT answered :status %s", s.status)
	}
	return s, nil
}

// fail records the first error and wakes a Write waiting for window.
func (s *h2Stream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// readFrame reads and handles one frame; the caller holds rmu (or is the only goroutine). It
// returns the payload of a DATA frame on our stream, valid until the next read.
func (s *h2Stream) readFrame() ([]byte, error) {
	f, err := s.fr.ReadFrame()
	if err == nil {
		var d []byte
		if d, err = s.handle(f); err == nil {
			return d, nil
		}
	}
	s.fail(err)
	return nil, err
}

func (s *h2Stream) handle(f http2.Frame) ([]byte, error) {
	switch f := f.(type) {
	case *http2.DataFrame:
		n := int64(f.Header().Length) // padding counts against flow control too
		s.ackConn.Add(n)
		if f.StreamID == h2StreamID && !f.StreamEnded() {
			s.ackStrm.Add(n)
		}
		// Never wait for wmu here: a Write blocked in the socket holds it, and it may need this
		// reader to keep reading for the peer to make progress. If wmu is busy, the writer
		// sends the update when it is done.
		if s.acksDue() && s.wmu.TryLock() {
			err := s.sendAcks()
			s.wmu.Unlock()
			if err != nil {
				return nil, err
			}
		}
		if f.StreamID != h2StreamID {
			return nil, nil
		}
		s.ended = f.StreamEnded()
		return f.Data(), nil
	case *http2.MetaHeadersFrame:
		if f.StreamID == h2StreamID {
			if s.status == "" {
				s.status = f.PseudoValue("status")
			}
			if f.StreamEnded() {
				s.ended = true
			}
		}
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil, nil
		}
		s.mu.Lock()
		_ = f.ForeachSetting(func(st http2.Setting) error {
			switch st.ID {
			case http2.SettingInitialWindowSize:
				s.streamWin += int64(st.Val) - s.initWin // RFC 9113 §6.9.2
				s.initWin = int64(st.Val)
			case http2.SettingMaxFrameSize:
				s.maxFrame = int(st.Val)
			case http2.SettingEnableConnectProtocol:
				s.connect = st.Val == 1
			}
			return nil
		})
		s.cond.Broadcast()
		s.mu.Unlock()
		s.gotSett = true
		return nil, s.writeFrame(func() error { return s.fr.WriteSettingsAck() })
	case *http2.WindowUpdateFrame:
		s.mu.Lock()
		if f.StreamID == 0 {
			s.connWin += int64(f.Increment)
		} else if f.StreamID == h2StreamID {
			s.streamWin += int64(f.Increment)
		}
		s.cond.Broadcast()
		s.mu.Unlock()
	case *http2.PingFrame:
		if !f.IsAck() {
			return nil, s.writeFrame(func() error { return s.fr.WritePing(true, f.Data) })
		}
	case *http2.RSTStreamFrame:
		if f.StreamID == h2StreamID {
			return nil, fmt.Errorf("stream reset by the server: %v", f.ErrCode)
		}
	case *http2.GoAwayFrame:
		if f.LastStreamID < h2StreamID || f.ErrCode != http2.ErrCodeNo {
			return nil, fmt.Errorf("GOAWAY %v, last stream %d", f.ErrCode, f.LastStreamID)
		}
	}
	return nil, nil
}

func (s *h2Stream) acksDue() bool {
	return s.ackConn.Load() >= h2ConnWindow/2 || s.ackStrm.Load() >= h2StreamWindow/2
}

// sendAcks returns the received bytes to the peer's windows when half a window is due; the caller
// holds wmu.
func (s *h2Stream) sendAcks() error {
	if !s.acksDue() {
		return nil
	}
	if n := s.ackConn.Swap(0); n > 0 {
		_ = s.fr.WriteWindowUpdate(0, uint32(n))
	}
	if n := s.ackStrm.Swap(0); n > 0 {
		_ = s.fr.WriteWindowUpdate(h2StreamID, uint32(n))
	}
	return s.bw.Flush()
}

func (s *h2Stream) writeFrame(write func() error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := write(); err != nil {
		return err
	}
	return s.bw.Flush()
}

// Read returns DATA of our stream, io.EOF after END_STREAM.
func (s *h2Stream) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.releaseReader()
	for s.pr == len(s.pend) {
		s.pend, s.pr = s.pend[:0], 0
		if s.ended {
			return 0, io.EOF
		}
		d, err := s.readFrame()
		if err != nil {
			return 0, err
		}
		if len(d) > 0 {
			n := copy(p, d)
			s.pend = append(s.pend, d[n:]...)
			return n, nil
		}
	}
	n := copy(p, s.pend[s.pr:])
	s.pr += n
	return n, nil
}

// releaseReader gives up the reader role and wakes a Write that may want to take it.
func (s *h2Stream) releaseReader() {
	s.rmu.Unlock()
	s.mu.Lock()
	s.cond.Broadcast()
	s.mu.Unlock()
}

// Write sends p as DATA frames within the send windows.
func (s *h2Stream) Write(p []byte) (int, error) {
	if err := s.write(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *h2Stream) writeLast(p []byte) error { return s.write(p, true) }

func (s *h2Stream) write(p []byte, end bool) error {
	for {
		n, err := s.reserve(len(p))
		if err != nil {
			return err
		}
		last := end && n == len(p)
		s.wmu.Lock()
		err = s.fr.WriteData(h2StreamID, last, p[:n])
		if err == nil && n == len(p) {
			err = s.bw.Flush()
		}
		if err == nil {
			err = s.sendAcks()
		}
		s.wmu.Unlock()
		if err != nil {
			s.fail(err)
			return err
		}
		if p = p[n:]; len(p) == 0 {
			return nil
		}
	}
}

// reserve takes up to want bytes (at most one frame) of send window, waiting for WINDOW_UPDATE.
// With no Read running it reads frames itself, keeping any DATA for the next Read.
func (s *h2Stream) reserve(want int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.err != nil {
			return 0, s.err
		}
		if want == 0 {
			return 0, nil
		}
		if w := min(s.connWin, s.streamWin); w > 0 {
			n := min(want, int(w), s.maxFrame)
			s.connWin -= int64(n)
			s.streamWin -= int64(n)
			return n, nil
		}
		if !s.rmu.TryLock() {
			s.cond.Wait()
			continue
		}
		s.mu.Unlock()
		d, err := s.readFrame()
		s.pend = append(s.pend, d...)
		s.rmu.Unlock()
		s.mu.Lock()
		if err != nil {
			return 0, err
		}
	}
}

// SetDeadline sets the socket's deadline.
func (s *h2Stream) SetDeadline(t time.Time) error { return s.nc.SetDeadline(t) }

// Close closes the connection; a blocked Read or Write returns.
func (s *h2Stream) Close() error { return s.nc.Close() }
