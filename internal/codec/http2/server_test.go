package http2

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/memacct"
	"github.com/switchyard-proxy/switchyard/internal/testing/sinkcheck"
)

// TestTransportRequests drives the server with x/net's own client: GET, POST with a body echoed
// back, and a request whose headers reach the handler in the internal shape.
func TestTransportRequests(t *testing.T) {
	var gotHost, gotMethod string
	var mu sync.Mutex
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		mu.Lock()
		gotHost, gotMethod = s.Headers().Get(headers.Authority), s.Headers().Get(headers.Method)
		mu.Unlock()
		if s.Headers().Get(headers.Method) == "POST" {
			echoHandler(s)
			return
		}
		okHandler(s)
	})
	tr := h2cTransport()
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}

	code, body := get(t, c, "http://"+ts.addr()+"/a")
	if code != 200 || body != "hello" {
		t.Fatalf("GET = %d %q", code, body)
	}
	mu.Lock()
	if gotMethod != "GET" || gotHost != ts.addr() {
		t.Errorf("handler saw method %q authority %q", gotMethod, gotHost)
	}
	mu.Unlock()

	resp, err := c.Post("http://"+ts.addr()+"/echo", "text/plain", strings.NewReader("ping pong"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ping pong" {
		t.Fatalf("POST = %d %q", resp.StatusCode, b)
	}
	ts.waitStat("streams_active", 0)
}

// TestTransportConcurrentStreams runs 200 requests at once over one connection.
func TestTransportConcurrentStreams(t *testing.T) {
	ts := startServer(t, ServerConfig{}, echoHandler)
	tr := h2cTransport()
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	// One request first: the client dials in parallel until it has a connection to share.
	if code, _ := get(t, c, "http://"+ts.addr()+"/"); code != 200 {
		t.Fatalf("warm-up: %d", code)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := strings.Repeat(strconv.Itoa(i), 1000+i)
			resp, err := c.Post("http://"+ts.addr()+"/", "text/plain", strings.NewReader(want))
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != want {
				errs <- fmt.Errorf("stream %d: %v, %d bytes back", i, err, len(b))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ts.mu.Lock()
	n := len(ts.conns)
	ts.mu.Unlock()
	if n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	ts.waitStat("streams_active", 0)
}

// TestTransportLargeBodies moves 10 MiB each way, more than the stream (1 MiB) and connection
// (8 MiB) windows, so both open only as the handler reads and the client acknowledges.
func TestTransportLargeBodies(t *testing.T) {
	payload := make([]byte, 10<<20)
	_, _ = rand.Read(payload)
	sum := sha256.Sum256(payload)
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		if s.Headers().Get(headers.Path) == "/download" {
			if s.WriteHeaders(headers.New(":status", "200"), false) == nil {
				_ = s.WriteData(payload, true)
			}
			return
		}
		h := sha256.New()
		n, err := io.Copy(h, s)
		if err != nil {
			s.Reset(h2.ErrCodeInternal)
			return
		}
		_ = s.WriteHeaders(headers.New(":status", "200"), false)
		_ = s.WriteData(fmt.Appendf(nil, "%d %x", n, h.Sum(nil)), true)
	})
	tr := h2cTransport()
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}

	resp, err := c.Post("http://"+ts.addr()+"/upload", "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d %x", len(payload), sum); string(b) != want {
		t.Fatalf("upload: server saw %q, want %q", b, want)
	}

	resp, err = c.Get("http://" + ts.addr() + "/download")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || n != int64(len(payload)) || !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Fatalf("download: %d bytes, err %v, hash match %v", n, err, bytes.Equal(h.Sum(nil), sum[:]))
	}
}

// TestExtendedConnect is RFC 8441 end to end on a raw client: SETTINGS advertise it, the handler
// sees the internal upgrade shape, a 101 goes out as 200, and END_STREAM half-closes each way.
func TestExtendedConnect(t *testing.T) {
	type seen struct {
		h        *headers.Map
		extended bool
		body     string
		readErr  error
	}
	got := make(chan seen, 1)
	ts := startServer(t, ServerConfig{AllowConnect: true}, func(s *ServerStream) {
		resp := headers.New(":status", "101", "upgrade", "websocket", "connection", "upgrade",
			"sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
		if err := s.WriteHeaders(resp, false); err != nil {
			t.Error(err)
			return
		}
		b, err := io.ReadAll(s) // until the client's END_STREAM
		got <- seen{s.Headers(), s.ExtendedConnect(), string(b), err}
		// Half-closed (remote): we can still send, then end our side.
		if err := s.WriteData([]byte("bye"), false); err != nil {
			t.Error(err)
		}
		if err := s.WriteData(nil, true); err != nil {
			t.Error(err)
		}
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	if v, ok := rc.settings[h2.SettingEnableConnectProtocol]; !ok || v != 1 {
		t.Fatalf("SETTINGS_ENABLE_CONNECT_PROTOCOL = %d, %v; want 1", v, ok)
	}
	rc.writeHeaders(1, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http",
		":path", "/chat", ":authority", "x", "sec-websocket-version", "13")
	var resp *headers.Map
	for resp == nil {
		if f, ok := rc.read().(*h2.HeadersFrame); ok && f.StreamID == 1 {
			resp = rc.decode(f)
			if f.StreamEnded() {
				t.Fatal("response HEADERS ended the stream")
			}
		}
	}
	// Sec-WebSocket-Accept passes: it answers a key the client sent (see ResponseToH2).
	if resp.Get(":status") != "200" || resp.Has("upgrade") || resp.Has("connection") {
		t.Fatalf("response = %v", resp.Fields())
	}
	rc.writeData(1, false, []byte("hello "))
	rc.writeData(1, true, []byte("world"))

	s := <-got
	if s.readErr != nil || s.body != "hello world" {
		t.Fatalf("handler read %q, %v", s.body, s.readErr)
	}
	if !s.extended || s.h.Get(":method") != "GET" || s.h.Get("upgrade") != "websocket" ||
		s.h.Get("connection") != "upgrade" || s.h.Has(":protocol") || s.h.Get(":path") != "/chat" {
		t.Fatalf("handler saw extended=%v %v", s.extended, s.h.Fields())
	}
	var back []byte
	for {
		f := rc.read()
		if d, ok := f.(*h2.DataFrame); ok && d.StreamID == 1 {
			back = append(back, d.Data()...)
			if d.StreamEnded() {
				break
			}
		}
		if r, ok := f.(*h2.RSTStreamFrame); ok {
			t.Fatalf("RST_STREAM %v", r.ErrCode)
		}
	}
	if string(back) != "bye" {
		t.Fatalf("client read %q after its half-close", back)
	}
	ts.waitStat("streams_active", 0)
	if n := ts.stat("tx_reset"); n != 0 {
		t.Errorf("tx_reset = %d, want 0", n)
	}
}

// TestConnectNotAllowed: without allow_connect no setting is advertised and :protocol is a
// malformed request, handled as Envoy does by default or with the stream-error override.
func TestConnectNotAllowed(t *testing.T) {
	for _, streamErr := range []bool{false, true} {
		t.Run(fmt.Sprintf("streamError=%v", streamErr), func(t *testing.T) {
			ts := startServer(t, ServerConfig{StreamErrorOnInvalidMessage: streamErr}, okHandler)
			rc := dialRaw(t, ts.addr())
			rc.handshake()
			if _, ok := rc.settings[h2.SettingEnableConnectProtocol]; ok {
				t.Fatal("ENABLE_CONNECT_PROTOCOL advertised without AllowConnect")
			}
			rc.writeHeaders(1, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http",
				":path", "/chat", ":authority", "x")
			out := rc.waitError(1)
			if streamErr {
				if !out.isRST || out.rst != h2.ErrCodeProtocol {
					t.Fatalf("got %+v, want RST_STREAM PROTOCOL_ERROR", out)
				}
				// The connection still serves.
				rc.writeHeaders(3, true, request("GET", "/")...)
				if f, ok := rc.read().(*h2.HeadersFrame); !ok || f.StreamID != 3 || rc.decode(f).Get(":status") != "200" {
					t.Fatalf("after the reset: %v", f)
				}
			} else if !out.isGoAway || out.goaway != h2.ErrCodeProtocol {
				t.Fatalf("got %+v, want GOAWAY PROTOCOL_ERROR", out)
			}
			if n := ts.stat("rx_messaging_error"); n != 1 {
				t.Errorf("rx_messaging_error = %d, want 1", n)
			}
		})
	}
}

// TestPlainConnect: CONNECT without :protocol reaches the handler as CONNECT, not an upgrade.
func TestPlainConnect(t *testing.T) {
	got := make(chan *ServerStream, 1)
	ts := startServer(t, ServerConfig{AllowConnect: true}, func(s *ServerStream) {
		got <- s
		okHandler(s)
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	rc.writeHeaders(1, true, ":method", "CONNECT", ":authority", "example.com:443")
	s := <-got
	h := s.Headers()
	if s.ExtendedConnect() || h.Get(":method") != "CONNECT" || h.Has("upgrade") || h.Get(":authority") != "example.com:443" || !s.EndStream() {
		t.Fatalf("extended=%v end=%v headers %v", s.ExtendedConnect(), s.EndStream(), h.Fields())
	}
}

// TestFlowControl: a handler that does not read lets the client send one stream window, no more;
// DATA beyond it is a FLOW_CONTROL_ERROR; reading opens the window with WINDOW_UPDATEs.
func TestFlowControl(t *testing.T) {
	const window = 16 << 10
	read := make(chan int)
	ts := startServer(t, ServerConfig{InitialStreamWindowSize: window}, func(s *ServerStream) {
		for n := range read {
			if _, err := io.ReadFull(s, make([]byte, n)); err != nil {
				return
			}
		}
		<-s.Context().Done()
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	if rc.settings[h2.SettingInitialWindowSize] != window {
		t.Fatalf("INITIAL_WINDOW_SIZE = %d", rc.settings[h2.SettingInitialWindowSize])
	}
	// Our ack must reach the server before the smaller window binds: wait for its ack of ours.
	for {
		if sf, ok := rc.read().(*h2.SettingsFrame); ok && sf.IsAck() {
			break
		}
	}
	rc.writeHeaders(1, false, request("POST", "/")...)
	rc.writeData(1, false, make([]byte, window))

	// The handler reads 12 KiB: at least half the window is consumed, so WINDOW_UPDATEs follow.
	read <- 12 << 10
	var streamInc uint32
	for streamInc == 0 {
		if wu, ok := rc.read().(*h2.WindowUpdateFrame); ok && wu.StreamID == 1 {
			streamInc = wu.Increment
		}
	}
	if streamInc != 12<<10 {
		t.Fatalf("stream WINDOW_UPDATE +%d, want +%d", streamInc, 12<<10)
	}
	// 12 KiB are open again; 12 KiB + 1 byte is beyond the window.
	rc.writeData(1, false, make([]byte, 12<<10+1))
	if out := rc.waitError(1); !out.isRST || out.rst != h2.ErrCodeFlowControl {
		t.Fatalf("got %+v, want RST_STREAM FLOW_CONTROL_ERROR", out)
	}
	close(read)
	ts.waitStat("streams_active", 0)
}

// TestMalformedRequests: each request breaks one RFC 9113 §8 rule; by default the connection
// ends with GOAWAY(PROTOCOL_ERROR), with the override only the stream is reset.
func TestMalformedRequests(t *testing.T) {
	cases := []struct {
		name   string
		fields []string
		end    bool
		data   string
	}{
		{"uppercase name", request("GET", "/", "X-Foo", "bar"), true, ""},
		{"connection-specific", request("GET", "/", "connection", "keep-alive"), true, ""},
		{"upgrade field", request("GET", "/", "upgrade", "websocket"), true, ""},
		{"te gzip", request("GET", "/", "te", "gzip"), true, ""},
		{"missing :path", []string{":method", "GET", ":scheme", "http", ":authority", "x"}, true, ""},
		{"empty :path", request("GET", ""), true, ""},
		{"pseudo after regular", []string{":method", "GET", ":scheme", "http", "x-a", "b", ":path", "/"}, true, ""},
		{"unknown pseudo", request("GET", "/", ":foo", "bar"), true, ""},
		{"duplicate :path", request("GET", "/", ":path", "/b"), true, ""},
		{"response pseudo", request("GET", "/", ":status", "200"), true, ""},
		{"CR in value", request("GET", "/", "x-a", "b\r\nx-b: c"), true, ""},
		{"method with space", request("GET /admin", "/"), true, ""},
		{"path with space", request("GET", "/ HTTP/1.1"), true, ""},
		{"CONNECT with :path", []string{":method", "CONNECT", ":authority", "x:1", ":path", "/"}, true, ""},
		{"content-length too small", request("POST", "/", "content-length", "2"), false, "hello"},
		{"content-length too big", request("POST", "/", "content-length", "9"), false, "hello"},
		{"content-length without body", request("POST", "/", "content-length", "5"), true, ""},
	}
	for _, streamErr := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/streamError=%v", tc.name, streamErr), func(t *testing.T) {
				reached := make(chan struct{}, 1)
				ts := startServer(t, ServerConfig{StreamErrorOnInvalidMessage: streamErr}, func(s *ServerStream) {
					if tc.data == "" {
						reached <- struct{}{}
					}
					okHandler(s)
				})
				rc := dialRaw(t, ts.addr())
				rc.handshake()
				rc.writeHeaders(1, tc.end, tc.fields...)
				if tc.data != "" {
					rc.writeData(1, true, []byte(tc.data))
				}
				out := rc.waitError(1)
				if streamErr && (!out.isRST || out.rst != h2.ErrCodeProtocol) {
					t.Fatalf("got %+v, want RST_STREAM PROTOCOL_ERROR", out)
				}
				if !streamErr && (!out.isGoAway || out.goaway != h2.ErrCodeProtocol) {
					t.Fatalf("got %+v, want GOAWAY PROTOCOL_ERROR", out)
				}
				if n := ts.stat("rx_messaging_error"); n != 1 {
					t.Errorf("rx_messaging_error = %d", n)
				}
				select {
				case <-reached:
					t.Error("the handler saw a malformed request")
				default:
				}
			})
		}
	}
}

// TestHeaderListTooLarge: a header list over MaxHeaderListSize is header_overflow and a stream
// reset, and the connection's HPACK state survives for the next request.
func TestHeaderListTooLarge(t *testing.T) {
	ts := startServer(t, ServerConfig{MaxHeaderListSize: 4096}, okHandler)
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	if rc.settings[h2.SettingMaxHeaderListSize] != 4096 {
		t.Fatalf("MAX_HEADER_LIST_SIZE = %d", rc.settings[h2.SettingMaxHeaderListSize])
	}
	rc.writeHeaders(1, true, request("GET", "/", "x-big", strings.Repeat("a", 3000), "x-big2", strings.Repeat("b", 3000))...)
	if out := rc.waitError(1); !out.isRST || out.rst != h2.ErrCodeInternal {
		t.Fatalf("got %+v, want RST_STREAM INTERNAL_ERROR", out)
	}
	if n := ts.stat("header_overflow"); n != 1 {
		t.Errorf("header_overflow = %d", n)
	}
	rc.writeHeaders(3, true, request("GET", "/")...)
	for {
		if f, ok := rc.read().(*h2.HeadersFrame); ok {
			if f.StreamID != 3 || rc.decode(f).Get(":status") != "200" {
				t.Fatalf("next request: stream %d", f.StreamID)
			}
			break
		}
	}
}

// TestProtocolErrors covers frame-level rules of RFC 9113 §5 and §6 with the error each gets.
func TestProtocolErrors(t *testing.T) {
	type step func(rc *rawClient)
	hdrs := func(id uint32, end bool) step {
		return func(rc *rawClient) { rc.writeHeaders(id, end, request("GET", "/")...) }
	}
	raw := func(typ h2.FrameType, flags h2.Flags, id uint32, payload ...byte) step {
		return func(rc *rawClient) { _ = rc.fr.WriteRawFrame(typ, flags, id, payload) }
	}
	settings := func(s ...h2.Setting) step { return func(rc *rawClient) { _ = rc.fr.WriteSettings(s...) } }
	cases := []struct {
		name   string
		steps  []step
		stream uint32
		goaway bool
		code   h2.ErrCode
	}{
		{"even stream id", []step{hdrs(2, true)}, 2, true, h2.ErrCodeProtocol},
		{"decreasing stream id", []step{hdrs(5, false), hdrs(3, true)}, 3, true, h2.ErrCodeProtocol},
		{"DATA on idle stream", []step{raw(h2.FrameData, 0, 1, 'x')}, 1, true, h2.ErrCodeProtocol},
		{"DATA after END_STREAM", []step{hdrs(1, true), raw(h2.FrameData, 0, 1, 'x')}, 1, false, h2.ErrCodeStreamClosed},
		{"RST_STREAM on idle stream", []step{raw(h2.FrameRSTStream, 0, 1, 0, 0, 0, 8)}, 1, true, h2.ErrCodeProtocol},
		{"WINDOW_UPDATE zero on stream", []step{hdrs(1, false), raw(h2.FrameWindowUpdate, 0, 1, 0, 0, 0, 0)}, 1, false, h2.ErrCodeProtocol},
		{"WINDOW_UPDATE zero on connection", []step{raw(h2.FrameWindowUpdate, 0, 0, 0, 0, 0, 0)}, 0, true, h2.ErrCodeProtocol},
		{"connection window overflow", []step{raw(h2.FrameWindowUpdate, 0, 0, 0x7f, 0xff, 0xff, 0xff)}, 0, true, h2.ErrCodeFlowControl},
		{"stream window overflow", []step{hdrs(1, false), raw(h2.FrameWindowUpdate, 0, 1, 0x7f, 0xff, 0xff, 0xff)}, 1, false, h2.ErrCodeFlowControl},
		{"ENABLE_PUSH 2", []step{settings(h2.Setting{ID: h2.SettingEnablePush, Val: 2})}, 0, true, h2.ErrCodeProtocol},
		{"INITIAL_WINDOW_SIZE 2^31", []step{settings(h2.Setting{ID: h2.SettingInitialWindowSize, Val: 1 << 31})}, 0, true, h2.ErrCodeFlowControl},
		{"MAX_FRAME_SIZE too small", []step{settings(h2.Setting{ID: h2.SettingMaxFrameSize, Val: 100})}, 0, true, h2.ErrCodeProtocol},
		{"ENABLE_CONNECT_PROTOCOL 2", []step{settings(h2.Setting{ID: h2.SettingEnableConnectProtocol, Val: 2})}, 0, true, h2.ErrCodeProtocol},
		{"ENABLE_CONNECT_PROTOCOL 1 then 0", []step{
			settings(h2.Setting{ID: h2.SettingEnableConnectProtocol, Val: 1}),
			settings(h2.Setting{ID: h2.SettingEnableConnectProtocol, Val: 0}),
		}, 0, true, h2.ErrCodeProtocol},
		{"PRIORITY on itself", []step{hdrs(1, false), raw(h2.FramePriority, 0, 1, 0, 0, 0, 1, 16)}, 1, false, h2.ErrCodeProtocol},
		{"frame over MAX_FRAME_SIZE", []step{hdrs(1, false), raw(h2.FrameData, 0, 1, make([]byte, 16385)...)}, 1, true, h2.ErrCodeFrameSize},
		{"PUSH_PROMISE", []step{raw(h2.FramePushPromise, h2.FlagPushPromiseEndHeaders, 1, 0, 0, 0, 2)}, 0, true, h2.ErrCodeProtocol},
		{"CONTINUATION without HEADERS", []step{raw(h2.FrameContinuation, h2.FlagContinuationEndHeaders, 1)}, 0, true, h2.ErrCodeProtocol},
		{"trailers without END_STREAM", []step{hdrs(1, false), func(rc *rawClient) { rc.writeHeaders(1, false, "x-t", "1") }}, 1, true, h2.ErrCodeProtocol},
		{"pseudo-header in trailers", []step{hdrs(1, false), func(rc *rawClient) { rc.writeHeaders(1, true, ":path", "/") }}, 1, true, h2.ErrCodeProtocol},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, ServerConfig{}, func(s *ServerStream) { <-s.Context().Done() })
			rc := dialRaw(t, ts.addr())
			rc.handshake()
			for _, st := range tc.steps {
				st(rc)
			}
			out := rc.waitError(tc.stream)
			if tc.goaway && (!out.isGoAway || out.goaway != tc.code) || !tc.goaway && (!out.isRST || out.rst != tc.code) {
				t.Fatalf("got %+v, want goaway=%v %v", out, tc.goaway, tc.code)
			}
		})
	}
}

// TestTrailers: request trailers are accepted, counted and dropped; the body is intact.
func TestTrailers(t *testing.T) {
	got := make(chan string, 1)
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		b, err := io.ReadAll(s)
		if err != nil {
			t.Error(err)
		}
		got <- string(b)
		okHandler(s)
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	rc.writeHeaders(1, false, request("POST", "/", "content-length", "4")...)
	rc.writeData(1, false, []byte("body"))
	rc.writeHeaders(1, true, "x-checksum", "abc")
	if b := <-got; b != "body" {
		t.Fatalf("body %q", b)
	}
	ts.waitStat("trailers", 1)
}

// TestConcurrencyLimit: past MaxConcurrentStreams a stream is refused; a handler still running
// after its stream was reset keeps its slot (rapid reset bound on in-flight work).
func TestConcurrencyLimit(t *testing.T) {
	release := make(chan struct{})
	ts := startServer(t, ServerConfig{MaxConcurrentStreams: 2}, func(s *ServerStream) { <-release })
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	if rc.settings[h2.SettingMaxConcurrentStreams] != 2 {
		t.Fatalf("MAX_CONCURRENT_STREAMS = %d", rc.settings[h2.SettingMaxConcurrentStreams])
	}
	rc.writeHeaders(1, true, request("GET", "/")...)
	rc.writeHeaders(3, true, request("GET", "/")...)
	_ = rc.fr.WriteRSTStream(3, h2.ErrCodeCancel) // handler 3 still runs
	rc.writeHeaders(5, true, request("GET", "/")...)
	if out := rc.waitError(5); !out.isRST || out.rst != h2.ErrCodeRefusedStream {
		t.Fatalf("got %+v, want RST_STREAM REFUSED_STREAM", out)
	}
	if n := ts.stat("stream_refused_errors"); n != 1 {
		t.Errorf("stream_refused_errors = %d", n)
	}
	if n := ts.stat("streams_active"); n != 2 {
		t.Errorf("streams_active = %d, want 2", n)
	}
	close(release)
	ts.waitStat("streams_active", 0)
	if n := ts.stat("rx_reset"); n != 1 {
		t.Errorf("rx_reset = %d", n)
	}
}

// TestHandlerReturnsEarly: a handler that returns without ending its response has the stream
// reset, so a truncated response never looks complete.
func TestHandlerReturnsEarly(t *testing.T) {
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		_ = s.WriteHeaders(headers.New(":status", "200"), false)
		_ = s.WriteData([]byte("part"), false)
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	rc.writeHeaders(1, true, request("GET", "/")...)
	if out := rc.waitError(1); !out.isRST || out.rst != h2.ErrCodeInternal {
		t.Fatalf("got %+v, want RST_STREAM INTERNAL_ERROR", out)
	}
	ts.waitStat("tx_reset", 1)
}

// TestStreamResetByClient: the handler's Read and Context see the client's RST_STREAM.
func TestStreamResetByClient(t *testing.T) {
	errc := make(chan error, 1)
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		_, err := s.Read(make([]byte, 10))
		<-s.Context().Done()
		errc <- err
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	rc.writeHeaders(1, false, request("POST", "/")...)
	_ = rc.fr.WriteRSTStream(1, h2.ErrCodeCancel)
	err := <-errc
	var se *StreamError
	if !errors.As(err, &se) || !se.Remote || se.Code != h2.ErrCodeCancel {
		t.Fatalf("Read error %v, want a remote CANCEL", err)
	}
	ts.waitStat("rx_reset", 1)
}

// TestGracefulShutdown: after Shutdown an open stream completes, a new one is refused, the
// GOAWAYs carry 2^31-1 and then the last stream id, and Serve returns nil.
func TestGracefulShutdown(t *testing.T) {
	started := make(chan struct{}, 1)
	finish := make(chan struct{})
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		started <- struct{}{}
		<-finish
		okHandler(s)
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	rc.writeHeaders(1, true, request("GET", "/")...)
	<-started
	ts.conn(0).Shutdown()

	var goaways []uint32
	for len(goaways) < 2 {
		switch f := rc.read().(type) {
		case *h2.GoAwayFrame:
			if f.ErrCode != h2.ErrCodeNo {
				t.Fatalf("GOAWAY %v", f.ErrCode)
			}
			goaways = append(goaways, f.LastStreamID)
		case *h2.PingFrame:
			if !f.IsAck() {
				_ = rc.fr.WritePing(true, f.Data)
			}
		}
	}
	if goaways[0] != 1<<31-1 || goaways[1] != 1 {
		t.Fatalf("GOAWAY last stream ids %v, want [2147483647 1]", goaways)
	}
	rc.writeHeaders(3, true, request("GET", "/")...)
	if out := rc.waitError(3); !out.isRST || out.rst != h2.ErrCodeRefusedStream {
		t.Fatalf("stream 3: %+v, want REFUSED_STREAM", out)
	}
	close(finish)
	var body []byte
	for done := false; !done; {
		f, err := rc.tryRead(5 * time.Second)
		if err != nil {
			t.Fatalf("stream 1 did not complete: %v", err)
		}
		if d, ok := f.(*h2.DataFrame); ok && d.StreamID == 1 {
			body = append(body, d.Data()...)
			done = d.StreamEnded()
		}
	}
	if string(body) != "hello" {
		t.Fatalf("body %q", body)
	}
	if _, err := rc.tryRead(5 * time.Second); err != io.EOF {
		t.Fatalf("after the last stream: %v, want EOF", err)
	}
	if err := ts.serveErr(); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if n := ts.stat("goaway_sent"); n != 2 {
		t.Errorf("goaway_sent = %d", n)
	}
}

// TestShutdownWaitsDrainTimeout: a client that never acks the PING after the shutdown notice gets
// the final GOAWAY after DrainTimeout (Envoy's drain_timeout), not sooner, and a stream it opens in
// that grace period is served.
func TestShutdownWaitsDrainTimeout(t *testing.T) {
	const drain = 2 * time.Second // longer than closeGrace, the wait before drain_timeout was honoured
	ts := startServer(t, ServerConfig{DrainTimeout: drain}, okHandler)
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	ts.conn(0).Shutdown()
	var notice time.Time
	for notice.IsZero() {
		if f, ok := rc.read().(*h2.GoAwayFrame); ok {
			if f.LastStreamID != 1<<31-1 {
				t.Fatalf("first GOAWAY last stream id %d, want 2^31-1", f.LastStreamID)
			}
			notice = time.Now()
		}
	}
	rc.writeHeaders(1, true, request("GET", "/")...) // raced the notice: still taken
	served := false
	for {
		f, err := rc.tryRead(10 * time.Second)
		if err != nil {
			t.Fatalf("waiting for the final GOAWAY: %v", err)
		}
		if d, ok := f.(*h2.DataFrame); ok && d.StreamID == 1 && d.StreamEnded() {
			served = true
		}
		if g, ok := f.(*h2.GoAwayFrame); ok {
			if waited := time.Since(notice); waited < drain-50*time.Millisecond {
				t.Fatalf("final GOAWAY %v after the notice, want at least the drain timeout %v", waited, drain)
			}
			if g.LastStreamID != 1 {
				t.Fatalf("final GOAWAY last stream id %d, want 1", g.LastStreamID)
			}
			break
		}
	}
	if !served {
		t.Fatal("the stream opened during the drain grace period was not answered")
	}
}

// TestCloseEndsHandlers: Close fails blocked reads and writes and Serve waits for the handlers.
func TestCloseEndsHandlers(t *testing.T) {
	errs := make(chan error, 2)
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		if s.Headers().Get(":path") == "/read" {
			_, err := s.Read(make([]byte, 1))
			errs <- err
			return
		}
		_ = s.WriteHeaders(headers.New(":status", "200"), false)
		errs <- s.WriteData(make([]byte, 1<<20), true) // blocks: the client opens no window
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake(h2.Setting{ID: h2.SettingInitialWindowSize, Val: 0})
	rc.writeHeaders(1, false, request("POST", "/read")...)
	rc.writeHeaders(3, true, request("GET", "/write")...)
	ts.waitStat("streams_active", 2)
	ts.conn(0).Close()
	for range 2 {
		var se *StreamError
		if err := <-errs; !errors.As(err, &se) || !se.Conn {
			t.Errorf("handler got %v, want a connection StreamError", err)
		}
	}
	if err := ts.serveErr(); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if n := ts.stat("streams_active"); n != 0 {
		t.Errorf("streams_active = %d", n)
	}
}

// TestBadPreface: an HTTP/1.1 request on an HTTP/2 connection gets GOAWAY(PROTOCOL_ERROR).
func TestBadPreface(t *testing.T) {
	ts := startServer(t, ServerConfig{}, okHandler)
	rc := dialRaw(t, ts.addr())
	_, _ = io.WriteString(rc.nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if out := rc.waitError(0); !out.closed && (!out.isGoAway || out.goaway != h2.ErrCodeProtocol) {
		t.Fatalf("got %+v", out)
	}
}

// TestPeekedPreface: the listener sniffs the preface through a bufio.Reader and hands it over;
// the bytes it already buffered are the start of the connection.
func TestPeekedPreface(t *testing.T) {
	client, server := tcpPair(t)
	rc := newRawClient(t, client)
	_, _ = io.WriteString(client, h2.ClientPreface)
	_ = rc.fr.WriteSettings()
	rc.writeHeaders(1, true, request("GET", "/")...)
	br := bufio.NewReader(server)
	if p, err := br.Peek(len(h2.ClientPreface)); err != nil || string(p) != h2.ClientPreface {
		t.Fatalf("peek: %q %v", p, err)
	}
	sc := NewServerConn(server, br, ServerConfig{}, okHandler)
	served := make(chan error, 1)
	go func() { served <- sc.Serve(context.Background()) }()
	var status string
	for done := false; !done; {
		switch f := rc.read().(type) {
		case *h2.HeadersFrame:
			status = rc.decode(f).Get(":status")
		case *h2.DataFrame:
			done = f.StreamEnded()
		}
	}
	if status != "200" {
		t.Fatalf(":status %q", status)
	}
	_ = client.(*net.TCPConn).CloseWrite()
	if err := <-served; err != nil {
		t.Fatalf("Serve = %v", err)
	}
}

// TestAccountChargesReceiveBuffer: request DATA waiting in a stream's receive buffer is charged to
// the stream's buffer account (bytes that arrived before SetAccount too), credited as the handler
// reads it, and credited in full when the stream is reset with bytes unread.
func TestAccountChargesReceiveBuffer(t *testing.T) {
	acct := memacct.NewTracker(10).NewAccount(func() {})
	set := make(chan struct{})
	read := make(chan int)
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		<-set
		s.SetAccount(acct)
		for n := range read {
			if _, err := io.ReadFull(s, make([]byte, n)); err != nil {
				return
			}
		}
		<-s.Context().Done()
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	rc.writeHeaders(1, false, request("POST", "/")...)
	rc.writeData(1, false, make([]byte, 700))
	waitBalance := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for acct.Balance() != want {
			if time.Now().After(deadline) {
				t.Fatalf("balance %d, want %d", acct.Balance(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(20 * time.Millisecond) // most likely the bytes are buffered before SetAccount
	close(set)
	waitBalance(700)
	rc.writeData(1, false, make([]byte, 300))
	waitBalance(1000)
	read <- 400
	waitBalance(600)
	_ = rc.fr.WriteRSTStream(1, h2.ErrCodeCancel)
	waitBalance(0)
	close(read)
	ts.waitStat("streams_active", 0)
}

// TestDataSinkKeepsOrder: a sink that takes all, half or none of what it is offered, and a handler
// that is sometimes slow to come back to Read, see together exactly the bytes sent, in order —
// more than the stream window, so the sink's bytes open the window as Read's do.
func TestDataSinkKeepsOrder(t *testing.T) {
	payload := make([]byte, 4<<20)
	_, _ = rand.Read(payload)
	seen := make(chan sinkcheck.Result, 1)
	ts := startServer(t, ServerConfig{InitialStreamWindowSize: 16 << 10}, func(s *ServerStream) {
		seen <- sinkcheck.Run(s)
		_ = s.WriteHeaders(headers.New(":status", "200"), true)
	})
	tr := h2cTransport()
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post("http://"+ts.addr()+"/", "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r := <-seen
	if resp.StatusCode != 200 || r.Err != nil || !bytes.Equal(r.Got, payload) {
		t.Fatalf("status %d; the sink and Read saw %d bytes together (%v), sent %d; equal: %v", resp.StatusCode, len(r.Got), r.Err, len(payload), bytes.Equal(r.Got, payload))
	}
	if r.Sunk == 0 || r.Read == 0 {
		t.Fatalf("sink took %d bytes and Read %d: both paths should have carried some", r.Sunk, r.Read)
	}
}

// TestDataSinkResetReturnsWindow: DATA the sink did not take on a stream that was reset while the
// sink ran is nobody's to read, and goes back to the connection window like any DATA on a closed
// stream: the client is not left short of window for its other streams.
func TestDataSinkResetReturnsWindow(t *testing.T) {
	const connWindow = 64 << 10
	ts := startServer(t, ServerConfig{InitialConnectionWindowSize: connWindow}, func(s *ServerStream) {
		s.SetDataSink(func([]byte) int {
			s.Reset(h2.ErrCodeCancel) // as a timeout firing while the sink writes would
			return 0
		})
		_ = s.WriteHeaders(headers.New(":status", "200"), false) // the sink is in place
		<-s.Context().Done()
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	rc.writeHeaders(1, false, request("POST", "/")...)
	for {
		if f, ok := rc.read().(*h2.HeadersFrame); ok && f.StreamID == 1 {
			break
		}
	}
	for range 4 { // the whole window, given back in WINDOW_UPDATEs of half of it
		rc.writeData(1, false, make([]byte, 16<<10))
	}
	var inc uint32
	for inc < connWindow {
		f, err := rc.tryRead(5 * time.Second)
		if err != nil {
			t.Fatalf("connection WINDOW_UPDATEs gave back %d bytes of 64 KiB, then: %v", inc, err)
		}
		if wu, ok := f.(*h2.WindowUpdateFrame); ok && wu.StreamID == 0 {
			inc += wu.Increment
		}
	}
}
