package http2

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	h2 "golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/stats"
)

func TestMain(m *testing.M) {
	// The connection's writer runs on kept goroutines (internal/workers), which wait for the next
	// function once it returns: they belong to that package, not to a connection.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/switchyard-proxy/switchyard/internal/workers.(*worker).run"))
}

// testServer is a real TCP listener whose accepted connections each run a ServerConn.
type testServer struct {
	t     testing.TB
	ln    net.Listener
	cfg   ServerConfig
	store *stats.Store
	wg    sync.WaitGroup

	mu    sync.Mutex
	conns []*ServerConn
	errs  chan error // Serve's result, one per connection
	// onAccept, when set, adjusts the accepted socket (small buffers for flood tests).
	onAccept func(*net.TCPConn)
}

// startServer serves cfg with handle on 127.0.0.1; everything is torn down at the test's end and
// every Serve call must have returned by then.
func startServer(t testing.TB, cfg ServerConfig, handle func(*ServerStream), opts ...func(*testServer)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t, ln: ln, store: stats.NewStore(), errs: make(chan error, 100)}
	if cfg.Stats == nil {
		cfg.Stats = NewStats(ts.store.Scope("http.test.http2"))
	}
	ts.cfg = cfg
	for _, o := range opts {
		o(ts)
	}
	ts.wg.Add(1)
	go ts.acceptLoop(handle)
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) acceptLoop(handle func(*ServerStream)) {
	defer ts.wg.Done()
	for {
		nc, err := ts.ln.Accept()
		if err != nil {
			return
		}
		if ts.onAccept != nil {
			ts.onAccept(nc.(*net.TCPConn))
		}
		sc := NewServerConn(nc, nil, ts.cfg, handle)
		ts.mu.Lock()
		ts.conns = append(ts.conns, sc)
		ts.mu.Unlock()
		ts.wg.Add(1)
		go func() {
			defer ts.wg.Done()
			err := sc.Serve(context.Background())
			select {
			case ts.errs <- err:
			default: // nobody asks for the results of h2spec's hundreds of connections
			}
		}()
	}
}

func (ts *testServer) stop() {
	ts.ln.Close()
	ts.mu.Lock()
	for _, c := range ts.conns {
		c.Close()
	}
	ts.mu.Unlock()
	done := make(chan struct{})
	go func() { ts.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		ts.t.Errorf("Serve did not return after Close\n%s", buf[:runtime.Stack(buf, true)])
	}
}

func (ts *testServer) addr() string { return ts.ln.Addr().String() }

// conn returns the i-th accepted ServerConn, waiting for it to appear.
func (ts *testServer) conn(i int) *ServerConn {
	ts.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		ts.mu.Lock()
		if len(ts.conns) > i {
			c := ts.conns[i]
			ts.mu.Unlock()
			return c
		}
		ts.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	ts.t.Fatalf("connection %d never accepted", i)
	return nil
}

// serveErr waits for one connection's Serve to return.
func (ts *testServer) serveErr() error {
	ts.t.Helper()
	select {
	case err := <-ts.errs:
		return err
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		ts.t.Fatalf("Serve did not return\n%s", buf[:runtime.Stack(buf, true)])
		return nil
	}
}

// stat reads a counter or gauge of the server's scope, e.g. "rx_messaging_error".
func (ts *testServer) stat(name string) int64 {
	for _, s := range ts.store.Snapshot() {
		if s.Name == "http.test.http2."+name {
			return s.Value
		}
	}
	return 0
}

// waitStat waits until stat(name) == want.
func (ts *testServer) waitStat(name string, want int64) {
	ts.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for ts.stat(name) != want {
		if time.Now().After(deadline) {
			ts.t.Fatalf("%s = %d, want %d", name, ts.stat(name), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// h2cTransport is Go's HTTP/2 client (the one x/net/http2.Transport now defers to) speaking
// HTTP/2 in clear text with prior knowledge, with one connection however many streams.
func h2cTransport() *http.Transport {
	tr := &http.Transport{Protocols: new(http.Protocols), HTTP2: &http.HTTP2Config{StrictMaxConcurrentRequests: true}}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return tr
}

// rawClient is an HTTP/2 client on the raw Framer, able to write what a real client would not.
type rawClient struct {
	t    testing.TB
	nc   net.Conn
	fr   *h2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer
	hdec *hpack.Decoder
	// settings are the server's SETTINGS values from the handshake.
	settings map[h2.SettingID]uint32
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return newRawClient(t, nc)
}

func newRawClient(t testing.TB, nc net.Conn) *rawClient {
	rc := &rawClient{t: t, nc: nc, fr: h2.NewFramer(nc, nc), settings: map[h2.SettingID]uint32{}}
	rc.fr.AllowIllegalWrites = true
	rc.fr.AllowIllegalReads = true
	rc.henc = hpack.NewEncoder(&rc.hbuf)
	rc.hdec = hpack.NewDecoder(4096, nil)
	t.Cleanup(func() { nc.Close() })
	return rc
}

// handshake sends the preface and our SETTINGS, and reads the server's SETTINGS (acking them).
func (rc *rawClient) handshake(settings ...h2.Setting) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.nc, h2.ClientPreface); err != nil {
		rc.t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(settings...); err != nil {
		rc.t.Fatal(err)
	}
	f := rc.read()
	sf, ok := f.(*h2.SettingsFrame)
	if !ok || sf.IsAck() {
		rc.t.Fatalf("first server frame %v, want SETTINGS", f)
	}
	_ = sf.ForeachSetting(func(s h2.Setting) error { rc.settings[s.ID] = s.Val; return nil })
	if err := rc.fr.WriteSettingsAck(); err != nil {
		rc.t.Fatal(err)
	}
}

// read returns the next frame, failing the test after 5 s.
func (rc *rawClient) read() h2.Frame {
	rc.t.Helper()
	f, err := rc.tryRead(5 * time.Second)
	if err != nil {
		rc.t.Fatalf("reading a frame: %v", err)
	}
	return f
}

func (rc *rawClient) tryRead(timeout time.Duration) (h2.Frame, error) {
	_ = rc.nc.SetReadDeadline(time.Now().Add(timeout))
	return rc.fr.ReadFrame()
}

// encode HPACK-encodes name/value pairs exactly as given (upper case and order included).
func (rc *rawClient) encode(pairs ...string) []byte {
	rc.hbuf.Reset()
	for i := 0; i+1 < len(pairs); i += 2 {
		_ = rc.henc.WriteField(hpack.HeaderField{Name: pairs[i], Value: pairs[i+1]})
	}
	return append([]byte(nil), rc.hbuf.Bytes()...)
}

func (rc *rawClient) writeHeaders(id uint32, end bool, pairs ...string) {
	rc.t.Helper()
	err := rc.fr.WriteHeaders(h2.HeadersFrameParam{StreamID: id, BlockFragment: rc.encode(pairs...), EndStream: end, EndHeaders: true})
	if err != nil {
		rc.t.Fatal(err)
	}
}

func (rc *rawClient) writeData(id uint32, end bool, p []byte) {
	rc.t.Helper()
	if err := rc.fr.WriteData(id, end, p); err != nil {
		rc.t.Fatal(err)
	}
}

// decode decodes a HEADERS frame's block (END_HEADERS expected) into a map.
func (rc *rawClient) decode(f *h2.HeadersFrame) *headers.Map {
	rc.t.Helper()
	fields, err := rc.hdec.DecodeFull(f.HeaderBlockFragment())
	if err != nil {
		rc.t.Fatal(err)
	}
	h := headers.New()
	for _, hf := range fields {
		h.Add(hf.Name, hf.Value)
	}
	return h
}

// outcome is how the server ended a stream or the connection, as the client saw it.
type outcome struct {
	goaway   h2.ErrCode
	isGoAway bool
	rst      h2.ErrCode
	isRST    bool
	closed   bool // EOF or reset without a GOAWAY first
}

// waitError reads until the server sends RST_STREAM on id, a GOAWAY, or closes, skipping other
// frames. A GOAWAY is reported even if the socket is closed after it.
func (rc *rawClient) waitError(id uint32) outcome {
	rc.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		f, err := rc.tryRead(time.Until(deadline))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			return outcome{closed: true}
		}
		switch f := f.(type) {
		case *h2.GoAwayFrame:
			return outcome{isGoAway: true, goaway: f.ErrCode}
		case *h2.RSTStreamFrame:
			if f.StreamID == id {
				return outcome{isRST: true, rst: f.ErrCode}
			}
		}
	}
	rc.t.Fatal("no RST_STREAM, GOAWAY or close within 5 s")
	return outcome{}
}

// request is the header list of a plain GET on stream-less defaults.
func request(method, path string, extra ...string) []string {
	return append([]string{":method", method, ":scheme", "http", ":path", path, ":authority", "x"}, extra...)
}

// okHandler answers 200 with "hello" after reading the request body.
func okHandler(s *ServerStream) {
	_, _ = io.Copy(io.Discard, s)
	if err := s.WriteHeaders(headers.New(":status", "200", "content-type", "text/plain"), false); err != nil {
		return
	}
	_ = s.WriteData([]byte("hello"), true)
}

// echoHandler answers 200 and copies the request body back.
func echoHandler(s *ServerStream) {
	if err := s.WriteHeaders(headers.New(":status", "200"), false); err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if s.WriteData(buf[:n], false) != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	_ = s.WriteData(nil, true)
}

func get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
