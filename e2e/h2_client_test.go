package e2e

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Conn is a raw HTTP/2 client (prior knowledge, cleartext) built on the x/net Framer: the test
// chooses every frame it sends and sees every frame the proxy sends. It acknowledges SETTINGS and
// PING and returns flow-control credit for DATA it receives; nothing else happens behind the
// test's back.
type h2Conn struct {
	t  *testing.T
	nc net.Conn
	// hold pauses the reader between frames while the test holds it (a client that stops
	// reading: its socket and its windows fill up).
	hold   sync.Mutex
	closed atomic.Bool // the test closed the connection

	wmu    sync.Mutex // serialises frame writes (the test and the reader's acks)
	fr     *http2.Framer
	encBuf bytes.Buffer
	enc    *hpack.Encoder

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change of the state below
	settings map[http2.SettingID]uint32
	gotSet   bool
	streams  map[uint32]*h2Seen
	goaway   *http2.ErrCode
	readErr  error
	nextID   uint32
}

// h2Seen is what the client has received on one stream.
type h2Seen struct {
	head []hpack.HeaderField // the first HEADERS
	data bytes.Buffer
	end  bool // END_STREAM received
	rst  *http2.ErrCode
}

// dialH2 connects with prior knowledge and sends the preface and SETTINGS (empty, or these).
func dialH2(t *testing.T, addr string, settings ...http2.Setting) *h2Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &h2Conn{t: t, nc: nc, changed: make(chan struct{}), settings: map[http2.SettingID]uint32{},
		streams: map[uint32]*h2Seen{}, nextID: 1}
	c.fr = http2.NewFramer(nc, nc)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(65536, nil)
	c.enc = hpack.NewEncoder(&c.encBuf)
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	c.write(func() error { return c.fr.WriteSettings(settings...) })
	go c.readLoop()
	return c
}

func (c *h2Conn) write(f func() error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// Generous: under the race detector a load test's thousand readers can keep this goroutine
	// off the CPU for seconds, and a deadline that passes before the write starts fails it.
	c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := f(); err != nil && !c.closed.Load() { // an ack the reader sends after close fails
		c.t.Errorf("h2 client write: %v", err)
	}
}

// bump wakes every waiter; called with mu held.
func (c *h2Conn) bump() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *h2Conn) stream(id uint32) *h2Seen {
	s := c.streams[id]
	if s == nil {
		s = &h2Seen{}
		c.streams[id] = s
	}
	return s
}

func (c *h2Conn) readLoop() {
	for {
		c.hold.Lock()
		c.hold.Unlock() //lint:ignore SA2001 a gate: wait while the test holds it
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.bump()
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				f.ForeachSetting(func(s http2.Setting) error { c.settings[s.ID] = s.Val; return nil })
				c.gotSet = true
				c.mu.Unlock()
				c.write(func() error { return c.fr.WriteSettingsAck() })
				c.mu.Lock()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				data := f.Data
				c.mu.Unlock()
				c.write(func() error { return c.fr.WritePing(true, data) })
				c.mu.Lock()
			}
		case *http2.MetaHeadersFrame:
			s := c.stream(f.StreamID)
			if s.head == nil {
				s.head = append([]hpack.HeaderField(nil), f.Fields...)
			}
			s.end = s.end || f.StreamEnded()
		case *http2.DataFrame:
			s := c.stream(f.StreamID)
			s.data.Write(f.Data())
			s.end = s.end || f.StreamEnded()
			if n := uint32(len(f.Data())); n > 0 {
				id := f.StreamID
				c.mu.Unlock()
				c.write(func() error {
					if err := c.fr.WriteWindowUpdate(0, n); err != nil {
						return err
					}
					return c.fr.WriteWindowUpdate(id, n)
				})
				c.mu.Lock()
			}
		case *http2.RSTStreamFrame:
			code := f.ErrCode
			c.stream(f.StreamID).rst = &code
		case *http2.GoAwayFrame:
			code := f.ErrCode
			c.goaway = &code
		}
		c.bump()
		c.mu.Unlock()
	}
}

// wait waits until cond (called with mu held) holds, failing the test with what after timeout.
func (c *h2Conn) wait(what string, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok, ch, rerr := cond(), c.changed, c.readErr
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			c.t.Fatalf("h2 client: no %s within %v (connection read error: %v)", what, timeout, rerr)
		}
	}
}

// request sends a HEADERS frame with the given name/value pairs on a new stream and returns its id.
func (c *h2Conn) request(end bool, kv ...string) uint32 {
	c.t.Helper()
	c.mu.Lock()
	id := c.nextID
	c.nextID += 2
	c.mu.Unlock()
	c.write(func() error {
		c.encBuf.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			c.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.encBuf.Bytes(),
			EndStream: end, EndHeaders: true})
	})
	return id
}

// connect opens an extended CONNECT (RFC 8441) for protocol on path.
func (c *h2Conn) connect(protocol, path string) uint32 {
	c.t.Helper()
	return c.request(false, ":method", "CONNECT", ":protocol", protocol, ":scheme", "http",
		":path", path, ":authority", "svc")
}

// send writes a DATA frame.
func (c *h2Conn) send(id uint32, p string, end bool) {
	c.write(func() error { return c.fr.WriteData(id, end, []byte(p)) })
}

// reset sends RST_STREAM.
func (c *h2Conn) reset(id uint32, code http2.ErrCode) {
	c.write(func() error { return c.fr.WriteRSTStream(id, code) })
}

// waitSettings returns the server's first SETTINGS.
func (c *h2Conn) waitSettings() map[http2.SettingID]uint32 {
	c.t.Helper()
	c.wait("SETTINGS", 5*time.Second, func() bool { return c.gotSet })
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[http2.SettingID]uint32{}
	for k, v := range c.settings {
		out[k] = v
	}
	return out
}

// waitHead returns the response's first header block as name → value.
func (c *h2Conn) waitHead(id uint32) map[string]string {
	c.t.Helper()
	c.wait(fmt.Sprintf("response headers on stream %d", id), 5*time.Second, func() bool {
		s := c.streams[id]
		return s != nil && (s.head != nil || s.rst != nil) || c.goaway != nil
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[id]
	if s == nil || s.head == nil {
		c.t.Fatalf("stream %d ended without response headers (rst %v, goaway %v)", id, s.rstCode(), c.goaway)
	}
	out := map[string]string{}
	for _, f := range s.head {
		out[f.Name] = f.Value
	}
	return out
}

func (s *h2Seen) rstCode() any {
	if s == nil || s.rst == nil {
		return nil
	}
	return *s.rst
}

// waitData waits until the stream's received DATA contains substr.
func (c *h2Conn) waitData(id uint32, substr string) {
	c.t.Helper()
	c.wait(fmt.Sprintf("DATA %q on stream %d", substr, id), 5*time.Second, func() bool {
		s := c.streams[id]
		return s != nil && strings.Contains(s.data.String(), substr)
	})
}

// data returns what the stream has received so far.
func (c *h2Conn) data(id uint32) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.streams[id]; s != nil {
		return s.data.String()
	}
	return ""
}

// ended reports whether the stream got END_STREAM, and its RST_STREAM code if any.
func (c *h2Conn) ended(id uint32) (end bool, rst any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[id]
	if s == nil {
		return false, nil
	}
	return s.end, s.rstCode()
}

// waitEnd waits for END_STREAM on the stream.
func (c *h2Conn) waitEnd(id uint32) {
	c.t.Helper()
	c.wait(fmt.Sprintf("END_STREAM on stream %d", id), 5*time.Second, func() bool {
		s := c.streams[id]
		return s != nil && s.end
	})
}

// waitReset waits for RST_STREAM on the stream and returns its code.
func (c *h2Conn) waitReset(id uint32) http2.ErrCode {
	c.t.Helper()
	c.wait(fmt.Sprintf("RST_STREAM on stream %d", id), 5*time.Second, func() bool {
		s := c.streams[id]
		return s != nil && s.rst != nil
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return *c.streams[id].rst
}

// waitGoAway waits for GOAWAY and returns its code.
func (c *h2Conn) waitGoAway() http2.ErrCode {
	c.t.Helper()
	c.wait("GOAWAY", 5*time.Second, func() bool { return c.goaway != nil })
	c.mu.Lock()
	defer c.mu.Unlock()
	return *c.goaway
}

// close closes the connection.
func (c *h2Conn) close() {
	c.closed.Store(true)
	c.nc.Close()
}
