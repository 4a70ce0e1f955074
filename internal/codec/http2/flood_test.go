package http2

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/switchyard-proxy/switchyard/headers"
)

// writeUntilError writes frames made by next in a goroutine until the server stops reading or n
// frames are out, the way an attacker would; the returned func waits for it.
func writeUntilError(rc *rawClient, n int, next func(i int) error) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			if next(i) != nil {
				return
			}
		}
	}()
	return func() { rc.nc.Close(); wg.Wait() }
}

// TestContinuationFlood: a header block that never ends is cut off at twice MaxHeaderListSize of
// encoded bytes, whatever it holds (CVE-2024-27316 and its kin).
func TestContinuationFlood(t *testing.T) {
	var fields bytes.Buffer
	enc := hpack.NewEncoder(&fields)
	for i := range 20 {
		_ = enc.WriteField(hpack.HeaderField{Name: "x-flood", Value: strings.Repeat(string(rune('a'+i)), 800)})
	}
	// One literal whose length prefix promises 1 MiB: the decoder must not buffer it.
	longString := []byte{0x00, 0x7f} // literal without indexing, new name, length follows
	for n := (1 << 20) - 127; n >= 128; n >>= 7 {
		longString = append(longString, byte(n%128)|0x80)
	}
	longString = append(longString, 0x3f)
	cases := []struct {
		name    string
		frag    func(i int) []byte
		code    h2.ErrCode
		counter string
	}{
		{"valid fields", func(int) []byte { return fields.Bytes() }, h2.ErrCodeEnhanceYourCalm, "header_overflow"},
		{"huffman-heavy junk", func(int) []byte { return bytes.Repeat([]byte{0xff}, 16384) }, h2.ErrCodeCompression, ""},
		{"one endless string", func(i int) []byte {
			if i == 0 {
				return append(longString, bytes.Repeat([]byte{'a'}, 8000)...)
			}
			return bytes.Repeat([]byte{'a'}, 16384)
		}, h2.ErrCodeEnhanceYourCalm, "header_overflow"},
		{"empty frames", func(int) []byte { return nil }, h2.ErrCodeEnhanceYourCalm, "inbound_empty_frames_flood"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, ServerConfig{}, okHandler)
			rc := dialRaw(t, ts.addr())
			rc.handshake()
			if err := rc.fr.WriteHeaders(h2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.encode(request("GET", "/")...)}); err != nil {
				t.Fatal(err)
			}
			wait := writeUntilError(rc, 100000, func(i int) error {
				return rc.fr.WriteContinuation(1, false, tc.frag(i))
			})
			out := rc.waitError(1)
			wait()
			if !out.isGoAway || out.goaway != tc.code {
				t.Fatalf("got %+v, want GOAWAY %v", out, tc.code)
			}
			if tc.counter != "" && ts.stat(tc.counter) != 1 {
				t.Errorf("%s = %d, want 1", tc.counter, ts.stat(tc.counter))
			}
			var ce *connError
			if err := ts.serveErr(); !errors.As(err, &ce) || ce.code != tc.code {
				t.Errorf("Serve = %v", err)
			}
		})
	}
}

// TestPingFloodWithoutReading: a client that sends PINGs and never reads the acks fills the
// socket; the queued acks pass MaxOutboundControlFrames and the connection is closed.
func TestPingFloodWithoutReading(t *testing.T) {
	// A small server send buffer keeps the test short. (A tiny client receive buffer would too,
	// but Linux then drops in-window segments and the loopback connection stalls for seconds.)
	ts := startServer(t, ServerConfig{}, okHandler, func(ts *testServer) {
		ts.onAccept = func(c *net.TCPConn) { _ = c.SetWriteBuffer(8 << 10) }
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	var data [8]byte
	sent := 0
	wait := writeUntilError(rc, 1000000, func(int) error { sent++; return rc.fr.WritePing(false, data) })
	err := ts.serveErr()
	wait()
	t.Logf("closed after %d PINGs", sent)
	if !errors.Is(err, errOutboundFlood) {
		t.Fatalf("Serve = %v, want the outbound flood", err)
	}
	if n := ts.stat("outbound_control_flood"); n != 1 {
		t.Errorf("outbound_control_flood = %d", n)
	}
}

// TestInboundFloods: empty DATA frames, PRIORITY frames and WINDOW_UPDATE frames past Envoy's
// limits end the connection with GOAWAY(ENHANCE_YOUR_CALM) and their counter.
func TestInboundFloods(t *testing.T) {
	cases := []struct {
		name    string
		frames  func(rc *rawClient, i int) error
		n       int
		counter string
	}{
		{"empty DATA", func(rc *rawClient, i int) error { return rc.fr.WriteData(1, false, nil) }, 2, "inbound_empty_frames_flood"},
		{"PRIORITY", func(rc *rawClient, i int) error {
			return rc.fr.WritePriority(3, h2.PriorityParam{StreamDep: 1, Weight: 1})
		}, 201, "inbound_priority_frames_flood"}, // 100 × (1 + 1 stream opened)
		{"WINDOW_UPDATE", func(rc *rawClient, i int) error { return rc.fr.WriteWindowUpdate(0, 1) }, 4, "inbound_window_update_frames_flood"}, // 1 + 2 × 1 stream
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, ServerConfig{}, func(s *ServerStream) { <-s.Context().Done() })
			rc := dialRaw(t, ts.addr())
			rc.handshake()
			rc.writeHeaders(1, false, request("POST", "/")...)
			for i := range tc.n - 1 {
				if err := tc.frames(rc, i); err != nil {
					t.Fatal(err)
				}
			}
			// One below the limit the connection lives: a PING is answered.
			_ = rc.fr.WritePing(false, [8]byte{1})
			for {
				f := rc.read()
				if _, ok := f.(*h2.GoAwayFrame); ok {
					t.Fatalf("GOAWAY below the limit")
				}
				if p, ok := f.(*h2.PingFrame); ok && p.IsAck() {
					break
				}
			}
			_ = tc.frames(rc, tc.n)
			if out := rc.waitError(1); !out.isGoAway || out.goaway != h2.ErrCodeEnhanceYourCalm {
				t.Fatalf("got %+v, want GOAWAY ENHANCE_YOUR_CALM", out)
			}
			if n := ts.stat(tc.counter); n != 1 {
				t.Errorf("%s = %d", tc.counter, n)
			}
		})
	}
}

// TestRapidReset: streams reset by the client before any answer (CVE-2023-44487), or reset by us
// because the client broke the protocol on them (MadeYouReset, CVE-2025-8671), end the
// connection with GOAWAY(ENHANCE_YOUR_CALM) after maxAbusiveResets; resets after an answer do not.
func TestRapidReset(t *testing.T) {
	cases := []struct {
		name   string
		answer bool // the handler answers before the client resets
		frame  func(rc *rawClient, id uint32) error
		calm   bool
	}{
		{"RST_STREAM before the answer", false, func(rc *rawClient, id uint32) error { return rc.fr.WriteRSTStream(id, h2.ErrCodeCancel) }, true},
		{"WINDOW_UPDATE 0 makes us reset", false, func(rc *rawClient, id uint32) error {
			return rc.fr.WriteRawFrame(h2.FrameWindowUpdate, 0, id, []byte{0, 0, 0, 0})
		}, true},
		{"RST_STREAM after the answer", true, func(rc *rawClient, id uint32) error { return rc.fr.WriteRSTStream(id, h2.ErrCodeCancel) }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			started := 0
			ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
				mu.Lock()
				started++
				mu.Unlock()
				if tc.answer {
					_ = s.WriteHeaders(headers.New(":status", "200"), false)
				}
				<-s.Context().Done()
			})
			rc := dialRaw(t, ts.addr())
			rc.handshake()
			const streams = 1000
			var out outcome
			for i := range streams {
				id := uint32(2*i + 1)
				rc.writeHeaders(id, false, request("GET", "/")...)
				if tc.answer { // wait for the response headers, then reset
					for {
						f, err := rc.tryRead(5 * time.Second)
						if err != nil {
							t.Fatal(err)
						}
						if hf, ok := f.(*h2.HeadersFrame); ok && hf.StreamID == id {
							break
						}
					}
				}
				if tc.frame(rc, id) != nil {
					break // the server hung up
				}
			}
			if tc.calm {
				out = rc.waitError(0)
				if !out.isGoAway || out.goaway != h2.ErrCodeEnhanceYourCalm {
					t.Fatalf("got %+v, want GOAWAY ENHANCE_YOUR_CALM", out)
				}
				rc.nc.Close()
				_ = ts.serveErr()
				mu.Lock()
				if started > maxAbusiveResets+1 {
					t.Errorf("%d handlers started, want at most %d", started, maxAbusiveResets+1)
				}
				mu.Unlock()
			} else {
				rc.writeHeaders(2*streams+1, true, request("GET", "/")...)
				for {
					f := rc.read()
					if _, ok := f.(*h2.GoAwayFrame); ok {
						t.Fatal("GOAWAY after answered streams were reset")
					}
					if hf, ok := f.(*h2.HeadersFrame); ok && hf.StreamID == 2*streams+1 {
						break
					}
				}
			}
			ts.waitStat("streams_active", boolInt(!tc.calm))
		})
	}
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// TestWriteTimeout: a client that opens its windows but never reads cannot hold the connection
// longer than WriteTimeout; the handler's write fails.
func TestWriteTimeout(t *testing.T) {
	werr := make(chan error, 1)
	ts := startServer(t, ServerConfig{WriteTimeout: 200 * time.Millisecond}, func(s *ServerStream) {
		_ = s.WriteHeaders(headers.New(":status", "200"), false)
		buf := make([]byte, 1<<20)
		for {
			if err := s.WriteData(buf, false); err != nil {
				werr <- err
				return
			}
		}
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake(h2.Setting{ID: h2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = rc.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	rc.writeHeaders(1, true, request("GET", "/")...)
	start := time.Now()
	var se *StreamError
	if err := <-werr; !errors.As(err, &se) || !se.Conn {
		t.Fatalf("WriteData = %v, want a connection StreamError", err)
	}
	var ne net.Error
	if err := ts.serveErr(); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Serve = %v, want a write timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}
