package client

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/codec/http2"
)

// GOAWAY: streams above last-stream-id fail with the retryable ErrConnClosed, the others finish,
// no new stream opens, and the connection closes once idle.
func TestGoAwayFromPeer(t *testing.T) {
	cc, p := newRawPeer(t, Config{})
	p.handshake(cc)
	s1, err := cc.NewStream(ctxT(t), get("/1"), true)
	if err != nil {
		t.Fatal(err)
	}
	s3, err := cc.NewStream(ctxT(t), get("/3"), true)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := p.nextHeaders().StreamID, p.nextHeaders().StreamID; a != 1 || b != 3 {
		t.Fatalf("stream ids %d %d", a, b)
	}
	if err := p.fr.WriteGoAway(1, h2.ErrCodeNo, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s3.Response(ctxT(t)); !errors.Is(err, ErrConnClosed) {
		t.Fatalf("stream above last-stream-id: %v, want ErrConnClosed", err)
	}
	if cc.Available() {
		t.Error("Available after GOAWAY")
	}
	if _, err := cc.NewStream(ctxT(t), get("/5"), true); !errors.Is(err, ErrConnClosed) {
		t.Errorf("new stream after GOAWAY: %v", err)
	}
	select {
	case <-cc.Done():
		t.Fatal("closed with stream 1 still open")
	default:
	}
	p.writeHeaders(1, false, ":status", "200")
	p.writeData(1, true, "finished")
	if _, err := s1.Response(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, s1); string(body) != "finished" {
		t.Errorf("body %q", body)
	}
	select {
	case <-cc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed once idle after GOAWAY")
	}
	p.drainNoHeaders()
}

// RST_STREAM from the peer: the stream fails (rx_reset); REFUSED_STREAM is retryable.
func TestResetFromPeer(t *testing.T) {
	tests := []struct {
		code      h2.ErrCode
		retryable bool
	}{
		{h2.ErrCodeRefusedStream, true},
		{h2.ErrCodeCancel, false},
		{h2.ErrCodeInternal, false},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			cfg := withDefaults(Config{})
			cc, p := newRawPeer(t, cfg)
			p.handshake(cc)
			s, err := cc.NewStream(ctxT(t), get("/"), false)
			if err != nil {
				t.Fatal(err)
			}
			id := p.nextHeaders().StreamID
			p.fr.WriteRSTStream(id, tt.code)
			_, err = s.Response(ctxT(t))
			var se *StreamError
			if !errors.As(err, &se) || se.Code != tt.code || !se.Remote {
				t.Fatalf("err %v", err)
			}
			if errors.Is(err, ErrConnClosed) != tt.retryable {
				t.Errorf("errors.Is(ErrConnClosed) = %v", !tt.retryable)
			}
			if _, err := s.Read(make([]byte, 1)); !errors.As(err, &se) {
				t.Errorf("read after reset: %v", err)
			}
			if err := s.Write([]byte("x"), false); !errors.As(err, &se) {
				t.Errorf("write after reset: %v", err)
			}
			if cfg.Stats.RxReset.Value() != 1 {
				t.Errorf("rx_reset %d", cfg.Stats.RxReset.Value())
			}
			wantRefused := uint64(0)
			if tt.retryable {
				wantRefused = 1
			}
			if got := cfg.Stats.StreamRefusedErrors.Value(); got != wantRefused {
				t.Errorf("stream_refused_errors %d", got)
			}
			if !cc.Available() || cc.ActiveStreams() != 0 {
				t.Error("the connection should stay usable with no active stream")
			}
		})
	}
}

// Malformed responses (RFC 9113 §8.1.1): RST_STREAM PROTOCOL_ERROR, rx_messaging_error, and an
// error from Response (or Read, for a body that contradicts content-length).
func TestMalformedResponse(t *testing.T) {
	tests := []struct {
		name    string
		send    func(p *rawPeer, id uint32)
		inRead  bool // the error shows on Read, after good headers
		framerd bool // rejected by the Framer's own checks
	}{
		{name: "no :status", send: func(p *rawPeer, id uint32) { p.writeHeaders(id, true, "x-a", "b") }},
		{name: "101", send: func(p *rawPeer, id uint32) { p.writeHeaders(id, false, ":status", "101") }},
		{name: "two-digit status", send: func(p *rawPeer, id uint32) { p.writeHeaders(id, true, ":status", "20") }},
		{name: "connection header", send: func(p *rawPeer, id uint32) {
			p.writeHeaders(id, true, ":status", "200", "connection", "close")
		}},
		{name: "request pseudo-header", send: func(p *rawPeer, id uint32) {
			p.writeHeaders(id, true, ":status", "200", ":path", "/")
		}},
		{name: "upper-case name", send: func(p *rawPeer, id uint32) {
			p.writeHeaders(id, true, ":status", "200", "X-Up", "1")
		}, framerd: true},
		{name: "interim with END_STREAM", send: func(p *rawPeer, id uint32) { p.writeHeaders(id, true, ":status", "100") }},
		{name: "DATA before HEADERS", send: func(p *rawPeer, id uint32) { p.writeData(id, false, "x") }},
		{name: "body longer than content-length", inRead: true, send: func(p *rawPeer, id uint32) {
			p.writeHeaders(id, false, ":status", "200", "content-length", "2")
			p.writeData(id, true, "abc")
		}},
		{name: "body shorter than content-length", inRead: true, send: func(p *rawPeer, id uint32) {
			p.writeHeaders(id, false, ":status", "200", "content-length", "5")
			p.writeData(id, true, "abc")
		}},
		{name: "trailers without END_STREAM", inRead: true, send: func(p *rawPeer, id uint32) {
			p.writeHeaders(id, false, ":status", "200")
			p.writeHeaders(id, false, "x-trailer", "1")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := withDefaults(Config{})
			cc, p := newRawPeer(t, cfg)
			p.handshake(cc)
			s, err := cc.NewStream(ctxT(t), get("/"), true)
			if err != nil {
				t.Fatal(err)
			}
			id := p.nextHeaders().StreamID
			tt.send(p, id)
			if rf := p.nextRST(); rf.StreamID != id || rf.ErrCode != h2.ErrCodeProtocol {
				t.Errorf("RST_STREAM %d %v, want %d PROTOCOL_ERROR", rf.StreamID, rf.ErrCode, id)
			}
			_, err = s.Response(ctxT(t))
			if tt.inRead {
				if err != nil {
					t.Fatalf("Response: %v", err)
				}
				_, err = io.ReadAll(s)
			}
			var me *http2.MalformedError
			if !errors.As(err, &me) {
				t.Fatalf("err %v, want a MalformedError", err)
			}
			if errors.Is(err, ErrConnClosed) {
				t.Error("a malformed response must not be retryable")
			}
			if got := cfg.Stats.RxMessagingError.Value(); got != 1 {
				t.Errorf("rx_messaging_error %d", got)
			}
			if got := cfg.Stats.TxReset.Value(); got != 1 {
				t.Errorf("tx_reset %d", got)
			}
			if !cc.Available() {
				t.Error("a stream error closed the connection")
			}
		})
	}
}

// Interim 1xx responses are skipped; the final response is returned.
func TestInterimResponseSkipped(t *testing.T) {
	cc, p := newRawPeer(t, Config{})
	p.handshake(cc)
	s, err := cc.NewStream(ctxT(t), get("/"), true)
	if err != nil {
		t.Fatal(err)
	}
	id := p.nextHeaders().StreamID
	p.writeHeaders(id, false, ":status", "100")
	p.writeHeaders(id, false, ":status", "103", "link", "</a>")
	p.writeHeaders(id, true, ":status", "204")
	resp, err := s.Response(ctxT(t))
	if err != nil || resp.Get(":status") != "204" || !s.EndStreamOnHeaders() {
		t.Fatalf("%v %v", resp, err)
	}
}

// The receive window opens only as the caller reads: the peer gets no WINDOW_UPDATE while the
// data sits unread, and one after a quarter of the window has been read. A peer overrunning the
// window gets RST_STREAM FLOW_CONTROL_ERROR.
func TestReceiveWindowFollowsReads(t *testing.T) {
	const win = 65535
	cc, p := newRawPeer(t, Config{InitialStreamWindowSize: win, InitialConnectionWindowSize: 1 << 20})
	p.handshake(cc)
	// The client's SETTINGS: INITIAL_WINDOW_SIZE as configured.
	s, err := cc.NewStream(ctxT(t), get("/"), true)
	if err != nil {
		t.Fatal(err)
	}
	id := p.nextHeaders().StreamID
	p.writeHeaders(id, false, ":status", "200")
	chunk := strings.Repeat("x", 16384)
	for sent := 0; sent < win; sent += len(chunk) {
		p.writeData(id, false, chunk[:min(len(chunk), win-sent)])
	}
	if _, err := s.Response(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// Nothing read: no WINDOW_UPDATE may come.
	p.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if f, err := p.fr.ReadFrame(); err == nil {
		t.Fatalf("peer got %v before the client read anything", f.Header())
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatal(err)
	}
	buf := make([]byte, win/4+1)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}
	f := p.read()
	wu, ok := f.(*h2.WindowUpdateFrame)
	if !ok || wu.StreamID != id || wu.Increment < win/4 {
		t.Fatalf("after reading a quarter: %v", f.Header())
	}
	// The peer may now send Increment more bytes; one more is a flow-control violation.
	p.writeData(id, false, strings.Repeat("y", int(wu.Increment)+1)[:min(16384, int(wu.Increment)+1)])
	if wu.Increment+1 <= 16384 {
		if rf := p.nextRST(); rf.ErrCode != h2.ErrCodeFlowControl {
			t.Errorf("RST %v, want FLOW_CONTROL_ERROR", rf.ErrCode)
		}
	}
}

// The peer's SETTINGS bound what we send: INITIAL_WINDOW_SIZE (also changed on an open stream,
// RFC 9113 §6.9.2), WINDOW_UPDATE, and MAX_FRAME_SIZE.
func TestSendFlowControlAndFrameSize(t *testing.T) {
	t.Run("initial window changes on an open stream", func(t *testing.T) {
		cc, p := newRawPeer(t, Config{})
		p.handshake(cc, h2.Setting{ID: h2.SettingInitialWindowSize, Val: 10})
		s, err := cc.NewStream(ctxT(t), headers.New(":method", "POST", ":path", "/", ":authority", "a"), false)
		if err != nil {
			t.Fatal(err)
		}
		id := p.nextHeaders().StreamID
		done := make(chan error, 1)
		go func() { done <- s.Write([]byte(strings.Repeat("a", 100)), true) }()
		expect := func(n int, end bool) {
			t.Helper()
			_, data, gotEnd := p.nextData()
			if len(data) != n || gotEnd != end {
				t.Fatalf("DATA %d bytes end=%v, want %d end=%v", len(data), gotEnd, n, end)
			}
		}
		expect(10, false)
		p.fr.WriteSettings(h2.Setting{ID: h2.SettingInitialWindowSize, Val: 50}) // +40 on the open stream
		expect(40, false)
		select {
		case err := <-done:
			t.Fatalf("Write returned (%v) with 50 bytes left and no window", err)
		case <-time.After(50 * time.Millisecond):
		}
		p.fr.WriteWindowUpdate(id, 50)
		expect(50, true)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("max frame size", func(t *testing.T) {
		cc, p := newRawPeer(t, Config{})
		p.handshake(cc, h2.Setting{ID: h2.SettingMaxFrameSize, Val: 20000},
			h2.Setting{ID: h2.SettingInitialWindowSize, Val: 1 << 20})
		p.fr.WriteWindowUpdate(0, 1<<20)
		s, err := cc.NewStream(ctxT(t), headers.New(":method", "POST", ":path", "/", ":authority", "a"), false)
		if err != nil {
			t.Fatal(err)
		}
		p.nextHeaders()
		done := make(chan error, 1)
		go func() { done <- s.Write(make([]byte, 50000), true) }()
		var sizes []int
		for total := 0; total < 50000; {
			_, data, _ := p.nextData()
			sizes = append(sizes, len(data))
			total += len(data)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if len(sizes) != 3 || sizes[0] != 20000 || sizes[1] != 20000 || sizes[2] != 10000 {
			t.Errorf("frame sizes %v, want [20000 20000 10000]", sizes)
		}
	})
}

// PING is answered with the same payload.
func TestPingAck(t *testing.T) {
	cc, p := newRawPeer(t, Config{})
	p.handshake(cc)
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	p.fr.WritePing(false, data)
	for {
		f := p.read()
		if pf, ok := f.(*h2.PingFrame); ok {
			if !pf.IsAck() || pf.Data != data {
				t.Fatalf("ping %v %v", pf.IsAck(), pf.Data)
			}
			return
		}
	}
}

// A response header list over MaxHeaderListSize resets only that stream (header_overflow).
func TestResponseHeaderOverflow(t *testing.T) {
	cfg := withDefaults(Config{MaxHeaderListSize: 1000})
	cc, p := newRawPeer(t, cfg)
	p.handshake(cc)
	s, err := cc.NewStream(ctxT(t), get("/"), true)
	if err != nil {
		t.Fatal(err)
	}
	id := p.nextHeaders().StreamID
	kv := []string{":status", "200"}
	for range 20 {
		kv = append(kv, "x-filler", strings.Repeat("v", 80))
	}
	p.writeHeaders(id, true, kv...)
	if rf := p.nextRST(); rf.StreamID != id {
		t.Errorf("RST on stream %d", rf.StreamID)
	}
	if _, err := s.Response(ctxT(t)); !errors.Is(err, ErrResponseHeadersTooLarge) {
		t.Fatalf("err %v", err)
	}
	if cfg.Stats.HeaderOverflow.Value() != 1 {
		t.Errorf("header_overflow %d", cfg.Stats.HeaderOverflow.Value())
	}
	if !cc.Available() {
		t.Error("connection closed")
	}
}

// A peer that stops reading cannot block us forever: the write deadline fails the connection.
func TestWriteDeadline(t *testing.T) {
	cc, p := newRawPeer(t, Config{WriteTimeout: 200 * time.Millisecond})
	p.handshake(cc, h2.Setting{ID: h2.SettingInitialWindowSize, Val: 1<<31 - 1})
	p.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	s, err := cc.NewStream(ctxT(t), headers.New(":method", "POST", ":path", "/", ":authority", "a"), false)
	if err != nil {
		t.Fatal(err)
	}
	// The peer reads nothing more.
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 1<<20)
		for {
			if err := s.Write(buf, false); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrConnLost) {
			t.Errorf("err %v, want ErrConnLost", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Write still blocked on a peer that stopped reading")
	}
	<-cc.Done()
}

// Shutdown sends GOAWAY, lets the open stream finish, then closes the connection.
func TestShutdown(t *testing.T) {
	cfg := withDefaults(Config{})
	cc, p := newRawPeer(t, cfg)
	p.handshake(cc)
	s, err := cc.NewStream(ctxT(t), get("/"), true)
	if err != nil {
		t.Fatal(err)
	}
	id := p.nextHeaders().StreamID
	if got := cfg.Stats.StreamsActive.Value(); got != 1 {
		t.Errorf("streams_active %d with one stream open", got)
	}
	cc.Shutdown()
	if ga, ok := p.next().(*h2.GoAwayFrame); !ok || ga.ErrCode != h2.ErrCodeNo || ga.LastStreamID != 0 {
		t.Fatalf("want GOAWAY NO_ERROR, got %v", ga)
	}
	if cc.Available() {
		t.Error("Available after Shutdown")
	}
	if _, err := cc.NewStream(ctxT(t), get("/"), true); !errors.Is(err, ErrConnClosed) {
		t.Errorf("NewStream after Shutdown: %v", err)
	}
	p.writeHeaders(id, false, ":status", "200")
	p.writeData(id, true, "ok")
	if _, err := s.Response(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, s); string(body) != "ok" {
		t.Errorf("body %q", body)
	}
	select {
	case <-cc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not closed after the last stream")
	}
	p.drainNoHeaders()
	if got := cfg.Stats.StreamsActive.Value(); got != 0 {
		t.Errorf("streams_active %d after close", got)
	}
	if cfg.Stats.GoawaySent.Value() != 1 {
		t.Errorf("goaway_sent %d", cfg.Stats.GoawaySent.Value())
	}
}

// Cancelling NewStream's ctx resets the stream with CANCEL (tx_reset) and fails a blocked Read.
func TestContextCancelResets(t *testing.T) {
	cfg := withDefaults(Config{})
	cc, p := newRawPeer(t, cfg)
	p.handshake(cc)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := cc.NewStream(ctx, get("/"), true)
	if err != nil {
		t.Fatal(err)
	}
	id := p.nextHeaders().StreamID
	p.writeHeaders(id, false, ":status", "200")
	if _, err := s.Response(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	rerr := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 10))
		rerr <- err
	}()
	cancel()
	if rf := p.nextRST(); rf.StreamID != id || rf.ErrCode != h2.ErrCodeCancel {
		t.Errorf("RST %d %v", rf.StreamID, rf.ErrCode)
	}
	var se *StreamError
	if err := <-rerr; !errors.As(err, &se) || se.Remote || !errors.Is(err, context.Canceled) {
		t.Errorf("read: %v", err)
	}
	if cfg.Stats.TxReset.Value() != 1 {
		t.Errorf("tx_reset %d", cfg.Stats.TxReset.Value())
	}
}

// A connection-level protocol error from the peer closes the connection with GOAWAY and fails
// the open streams with ErrConnLost (they were sent).
func TestConnectionErrorSendsGoAway(t *testing.T) {
	cc, p := newRawPeer(t, Config{})
	p.handshake(cc)
	s, err := cc.NewStream(ctxT(t), get("/"), true)
	if err != nil {
		t.Fatal(err)
	}
	p.nextHeaders()
	p.writeHeaders(7, false, ":status", "200") // a stream the client never opened
	ga, ok := p.next().(*h2.GoAwayFrame)
	if !ok || ga.ErrCode != h2.ErrCodeProtocol {
		t.Fatalf("want GOAWAY PROTOCOL_ERROR, got %v", ga)
	}
	if _, err := s.Response(ctxT(t)); !errors.Is(err, ErrConnLost) {
		t.Errorf("open stream: %v, want ErrConnLost", err)
	}
	<-cc.Done()
}

// A response that is complete stays readable when the request side is then cut: by RST_STREAM
// NO_ERROR (RFC 9113 §8.1, an early answer) or by the connection dropping. An incomplete one
// fails with ErrConnLost.
func TestCompleteResponseSurvivesRequestSideEnd(t *testing.T) {
	cc, p := newRawPeer(t, Config{})
	p.handshake(cc)
	post := headers.New(":method", "POST", ":path", "/", ":authority", "a")
	early, err := cc.NewStream(ctxT(t), post, false)
	if err != nil {
		t.Fatal(err)
	}
	cut, err := cc.NewStream(ctxT(t), post, false)
	if err != nil {
		t.Fatal(err)
	}
	partial, err := cc.NewStream(ctxT(t), post, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint32{1, 3, 5} {
		if got := p.nextHeaders().StreamID; got != id {
			t.Fatalf("stream %d, want %d", got, id)
		}
	}
	p.writeHeaders(1, false, ":status", "413")
	p.writeData(1, true, "too big")
	p.fr.WriteRSTStream(1, h2.ErrCodeNo)
	p.writeHeaders(3, false, ":status", "200")
	p.writeData(3, true, "whole")
	p.writeHeaders(5, false, ":status", "200")
	p.writeData(5, false, "half")

	if body := readAll(t, early); string(body) != "too big" {
		t.Errorf("early response body %q", body)
	}
	// The RST_STREAM follows the body's last DATA: a write may still go out until the reader has
	// seen it, and after that every write fails with the stream's NO_ERROR.
	var se *StreamError
	var werr error
	for deadline := time.Now().Add(2 * time.Second); werr == nil && time.Now().Before(deadline); {
		if werr = early.Write([]byte("more"), false); werr == nil {
			time.Sleep(time.Millisecond)
		}
	}
	if !errors.As(werr, &se) || se.Code != h2.ErrCodeNo {
		t.Errorf("write after RST NO_ERROR: %v", werr)
	}
	if _, err := partial.Response(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(partial, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := cut.Response(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	p.nc.Close()
	<-cc.Done()
	if body := readAll(t, cut); string(body) != "whole" {
		t.Errorf("complete response lost with the connection: %q", body)
	}
	if _, err := partial.Read(buf); !errors.Is(err, ErrConnLost) {
		t.Errorf("incomplete response: %v, want ErrConnLost", err)
	}
}

// The peer's SETTINGS_HEADER_TABLE_SIZE bounds our HPACK encoder: after the peer sets 0, the
// next header block starts with a dynamic table size update to 0 (RFC 7541 §4.2, §6.3).
func TestPeerHeaderTableSize(t *testing.T) {
	cc, p := newRawPeer(t, Config{})
	p.handshake(cc, h2.Setting{ID: h2.SettingHeaderTableSize, Val: 0})
	for { // the client's ack means the encoder has applied the setting
		if sf, ok := p.read().(*h2.SettingsFrame); ok && sf.IsAck() {
			break
		}
	}
	p.fr.ReadMetaHeaders = nil // read the raw block
	for i := range 2 {
		if _, err := cc.NewStream(ctxT(t), headers.New(":method", "GET", ":path", "/", ":authority", "a", "x-custom", "same value"), true); err != nil {
			t.Fatal(err)
		}
		f := p.next()
		hf, ok := f.(*h2.HeadersFrame)
		if !ok {
			t.Fatalf("want HEADERS, got %v", f.Header())
		}
		block := hf.HeaderBlockFragment()
		if i == 0 && block[0] != 0x20 {
			t.Fatalf("first block starts %#x, want a table size update to 0 (0x20)", block[0])
		}
		dec := hpack.NewDecoder(0, nil)
		if _, err := dec.DecodeFull(block); err != nil {
			t.Fatalf("block %d does not decode with no dynamic table: %v", i, err)
		}
	}
}

// TestDataSinkResetReturnsWindow: DATA the sink did not take on a stream reset while the sink ran
// is nobody's to read, and goes back to the connection window: the peer is not left short of
// window for the connection's other streams.
func TestDataSinkResetReturnsWindow(t *testing.T) {
	cc, p := newRawPeer(t, Config{InitialConnectionWindowSize: 65535})
	p.handshake(cc)
	s, id := p.answered(cc, get("/"), true)
	s.SetDataSink(func([]byte) int {
		s.Reset(h2.ErrCodeCancel) // as the client going away while the sink writes would
		return 0
	})
	// A quarter of the connection window in one frame: its return is due at once.
	p.writeData(id, false, strings.Repeat("x", 16384))
	for {
		f := p.read()
		if wu, ok := f.(*h2.WindowUpdateFrame); ok && wu.StreamID == 0 {
			if wu.Increment < 16384 {
				t.Fatalf("connection WINDOW_UPDATE +%d, want the frame's 16384 back", wu.Increment)
			}
			return
		}
	}
}
