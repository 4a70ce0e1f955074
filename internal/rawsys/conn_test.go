package rawsys

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// counting is a connection that counts its bytes, as the connection manager's does.
type counting struct {
	net.Conn
	n    int // written
	read int
}

func (c *counting) NetConn() net.Conn { return c.Conn }
func (c *counting) CountWrite(n int)  { c.n += n }
func (c *counting) CountRead(n int)   { c.read += n }

// A write far larger than the socket buffers waits for the reader through the poller and arrives
// whole and in order, counted once.
func TestConnWriterWaitsForRoom(t *testing.T) {
	c, s := tcpPair(t)
	cc := &counting{Conn: c}
	w := NewConnWriter(cc)
	if w == nil {
		t.Fatal("no writer for a plain TCP socket")
	}
	payload := make([]byte, 8<<20)
	rand.Read(payload)
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(s, int64(len(payload))))
		got <- b
	}()
	n, err := w.Write(payload)
	if err != nil || n != len(payload) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(payload))
	}
	if b := <-got; !bytes.Equal(b, payload) {
		t.Fatalf("the reader got %d bytes, not the %d written", len(b), len(payload))
	}
	if cc.n != len(payload) {
		t.Fatalf("counted %d bytes, wrote %d", cc.n, len(payload))
	}
}

// Writev sends every slice in order, including more slices than one writev takes and empty ones.
func TestConnWriterWritev(t *testing.T) {
	c, s := tcpPair(t)
	w := NewConnWriter(c)
	var want []byte
	var bufs [][]byte
	for i := range 40 {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, i*1000)
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(s, int64(len(want))))
		got <- b
	}()
	n, err := w.Writev(bufs)
	if err != nil || n != len(want) {
		t.Fatalf("Writev = %d, %v; want %d, nil", n, err, len(want))
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatal("the bytes arrived out of order or incomplete")
	}
}

// A peer that reads nothing holds the writer only until the connection's write deadline.
func TestConnWriterDeadline(t *testing.T) {
	c, _ := tcpPair(t)
	w := NewConnWriter(c)
	c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := w.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a peer that reads nothing = %v, want the deadline", err)
	}
}

// A reset peer is a write error, not a hang or a panic.
func TestConnWriterPeerGone(t *testing.T) {
	c, s := tcpPair(t)
	s.SetLinger(0)
	s.Close()
	w := NewConnWriter(c)
	var err error
	for range 100 {
		if _, err = w.Write([]byte("after the reset")); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("writes to a reset peer ended with %v, want a write *net.OpError", err)
	}
}

// TLS in between changes the bytes: no raw writer.
func TestSocketRefusesTLS(t *testing.T) {
	c, _ := tcpPair(t)
	if Socket(tls.Client(c, &tls.Config{})) != nil {
		t.Fatal("Socket looked through TLS")
	}
	if Socket(&counting{Conn: c}) == nil {
		t.Fatal("Socket did not look through a transparent wrapper")
	}
}

// TryWrite returns once the socket is full instead of waiting: a peer that reads nothing takes
// a bounded part of a large write, and what it took arrives in order, counted once.
func TestConnWriterTryWriteStopsWhenFull(t *testing.T) {
	c, s := tcpPair(t)
	cc := &counting{Conn: c}
	w := NewConnWriter(cc)
	payload := make([]byte, 64<<20) // far more than a loopback socket's buffers hold
	rand.Read(payload)
	done := make(chan struct{})
	var n int
	var err error
	go func() {
		defer close(done)
		n, err = w.TryWrite(payload)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("TryWrite waited for a reader that reads nothing")
	}
	if err != nil || n == 0 || n >= len(payload) {
		t.Fatalf("TryWrite = %d, %v; want part of %d bytes and no error", n, err, len(payload))
	}
	if cc.n != n {
		t.Fatalf("counted %d bytes, wrote %d", cc.n, n)
	}
	// A second try on the full socket returns too, without error.
	m, err := w.TryWrite(payload[n:])
	if err != nil || m >= len(payload)-n {
		t.Fatalf("TryWrite on a full socket = %d, %v; want a short count and no error", m, err)
	}
	got := make([]byte, n+m)
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, payload[:n+m]) {
		t.Fatalf("the reader got other bytes than the %d taken (%v)", n+m, err)
	}
}

// TryWritev is TryWrite for several slices: a full socket ends the call with part of them taken,
// in order; a blocking Writev after it still sends the rest whole.
func TestConnWriterTryWritevStopsWhenFull(t *testing.T) {
	c, s := tcpPair(t)
	cc := &counting{Conn: c}
	w := NewConnWriter(cc)
	payload := make([]byte, 64<<20)
	rand.Read(payload)
	var bufs [][]byte
	for p := payload; len(p) > 0; p = p[min(len(p), 1<<20):] {
		bufs = append(bufs, p[:min(len(p), 1<<20)])
	}
	done := make(chan struct{})
	var n int
	var err error
	go func() {
		defer close(done)
		n, err = w.TryWritev(bufs)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("TryWritev waited for a reader that reads nothing")
	}
	if err != nil || n == 0 || n >= len(payload) || cc.n != n {
		t.Fatalf("TryWritev = %d, %v (counted %d); want part of %d bytes and no error", n, err, cc.n, len(payload))
	}
	go func() {
		w.Writev([][]byte{payload[n:]})
		c.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("the reader got %d bytes (%v), want the %d written, in order", len(got), err, len(payload))
	}
}

// Bytes arrive whole and in order through the poller's waits, counted once; then io.EOF.
func TestConnReaderReadsToEOF(t *testing.T) {
	c, s := tcpPair(t)
	cc := &counting{Conn: s}
	r := NewConnReader(cc)
	if r == nil {
		t.Fatal("no reader for a plain TCP socket")
	}
	payload := make([]byte, 4<<20)
	rand.Read(payload)
	go func() {
		for p := payload; len(p) > 0; {
			n := min(len(p), 100_000)
			c.Write(p[:n])
			p = p[n:]
			time.Sleep(time.Millisecond) // the reader waits in the poller between bursts
		}
		c.CloseWrite()
	}()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(payload))
	}
	if cc.read != len(payload) || cc.n != 0 {
		t.Fatalf("counted %d bytes read and %d written, read %d", cc.read, cc.n, len(payload))
	}
	if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF: %d, %v", n, err)
	}
}

// The connection's read deadline ends a wait with a timeout, and Close ends one with net.ErrClosed,
// as they do for net.Conn's own Read.
func TestConnReaderDeadlineAndClose(t *testing.T) {
	_, s := tcpPair(t)
	r := NewConnReader(s)
	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := r.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	s.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the wait")
	}
}

// A peer's reset is an error that says so, not an EOF.
func TestConnReaderReset(t *testing.T) {
	c, s := tcpPair(t)
	r := NewConnReader(s)
	c.SetLinger(0)
	c.Close() // RST
	_, err := r.Read(make([]byte, 10))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the peer's reset: %v", err)
	}
}

// sharing is a connection that already has a writer for its socket.
type sharing struct {
	counting
	w *ConnWriter
}

func (c *sharing) SocketWriter() *ConnWriter { return c.w }

// Layers that each ask for a writer on the same connection share the one it has, and bytes
// written through either are counted once.
func TestConnWriterShared(t *testing.T) {
	a, b := tcpPair(t)
	c := &sharing{counting: counting{Conn: a}}
	if NewConnWriter(c) == nil || c.w != nil {
		t.Fatal("a connection without a writer yet did not get a new one")
	}
	c.w = NewConnWriter(&c.counting)
	w := NewConnWriter(c)
	if w != c.w {
		t.Fatal("NewConnWriter made a second writer for a connection that has one")
	}
	if _, err := w.Write([]byte("shared")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "shared" || c.n != 6 {
		t.Fatalf("read %q (%v), counted %d; want \"shared\", 6", got, err, c.n)
	}
}

// NewConnPair's reader and writer work as NewConnReader's and NewConnWriter's do, each counting
// its own direction, a Write and a Writev in turn on one writer; a connection that has a writer
// keeps it; and TLS gets neither.
func TestConnPair(t *testing.T) {
	a, b := tcpPair(t)
	cc := &counting{Conn: a}
	r, w := NewConnPair(cc)
	if r == nil || w == nil {
		t.Fatal("no reader and writer for a plain TCP socket")
	}
	if _, err := w.Write([]byte("one ")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Writev([][]byte{[]byte("two "), nil, []byte("three")}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(" four")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("one two three four"))
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "one two three four" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	b.Write([]byte("back"))
	back := make([]byte, 4)
	if _, err := io.ReadFull(r, back); err != nil || string(back) != "back" {
		t.Fatalf("read %q, %v", back, err)
	}
	if cc.n != len(got) || cc.read != 4 {
		t.Fatalf("counted %d written and %d read, want %d and 4", cc.n, cc.read, len(got))
	}

	shared := &sharing{counting: counting{Conn: a}, w: w}
	if r2, w2 := NewConnPair(shared); r2 == nil || r2 == r || w2 != w {
		t.Fatal("a connection with a writer did not keep it, or got no reader of its own")
	}
	if r3, w3 := NewConnPair(tls.Client(a, &tls.Config{})); r3 != nil || w3 != nil {
		t.Fatal("a TLS connection got raw socket access")
	}
}
