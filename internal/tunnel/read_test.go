package tunnel

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/buffer"
)

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

func TestWaitReadableBlocksUntilData(t *testing.T) {
	client, server := tcpPair(t)
	ready := make(chan error, 1)
	go func() { ready <- WaitReadable(wrapped{server}) }()
	select {
	case err := <-ready:
		t.Fatalf("WaitReadable returned %v before any byte was sent", err)
	case <-time.After(100 * time.Millisecond):
	}
	client.Write([]byte("x"))
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitReadable did not wake on data")
	}
	// The byte was only peeked: a read still sees it.
	slab, n, err := ReadSlab(server)
	if err != nil || n != 1 || (*slab)[0] != 'x' {
		t.Fatalf("ReadSlab = %d, %v", n, err)
	}
	buffer.PutSlab(slab)
}

func TestReadSlabEOFAndHalfClose(t *testing.T) {
	client, server := tcpPair(t)
	client.Write([]byte("bye"))
	if !CloseWrite(client) {
		t.Fatal("CloseWrite failed on TCP")
	}
	slab, n, err := ReadSlab(server)
	if err != nil || string((*slab)[:n]) != "bye" {
		t.Fatalf("ReadSlab = %q, %v", (*slab)[:n], err)
	}
	buffer.PutSlab(slab)
	if _, _, err := ReadSlab(server); !errors.Is(err, io.EOF) {
		t.Fatalf("after FIN: %v, want EOF", err)
	}
	// The other direction still works after the half-close.
	if _, err := server.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 32)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(p); err != nil || string(p[:n]) != "still here" {
		t.Fatalf("client read %q, %v", p[:n], err)
	}
}

func TestWaitReadableSeesReset(t *testing.T) {
	client, server := tcpPair(t)
	client.(*net.TCPConn).SetLinger(0)
	client.Close() // RST
	done := make(chan error, 1)
	go func() {
		_, _, err := ReadSlab(server)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !IsReset(err) {
			t.Fatalf("after RST: %v, want a reset error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadSlab did not return after a reset")
	}
}

// countedConn counts what is read through it, like the connection manager's wrapper.
type countedConn struct {
	net.Conn
	n int
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n += n
	return n, err
}
func (c *countedConn) CountRead(n int)   { c.n += n }
func (c *countedConn) NetConn() net.Conn { return c.Conn }

// TestSlabReaderStreamsAndCounts: the fast path reads the socket under a counting wrapper, gets
// every byte in order (slabs filled back to back while data streams), counts them all, and ends
// with EOF.
func TestSlabReaderStreamsAndCounts(t *testing.T) {
	client, server := tcpPair(t)
	cc := &countedConn{Conn: server}
	r := NewSlabReader(cc)
	if !r.direct {
		t.Fatal("a counting wrapper over TCP should take the fast path")
	}
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		client.Write(want)
		CloseWrite(client)
	}()
	var got []byte
	for {
		slab, n, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, (*slab)[:n]...)
		buffer.PutSlab(slab)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d, equal=%v", len(got), len(want), bytes.Equal(got, want))
	}
	if cc.n != len(want) {
		t.Errorf("counted %d bytes, want %d", cc.n, len(want))
	}
}

// TestSlabReaderNotDirectUnderTLS: bytes under TLS are ciphertext, so a TLS connection never
// takes the fast path.
func TestSlabReaderNotDirectUnderTLS(t *testing.T) {
	_, server := tcpPair(t)
	if NewSlabReader(tls.Server(server, &tls.Config{})).direct {
		t.Fatal("TLS connection took the raw-socket fast path")
	}
	if NewSlabReader(&countedConn{Conn: tls.Server(server, &tls.Config{})}).direct {
		t.Fatal("a wrapper over TLS took the raw-socket fast path")
	}
}

// TestStreamSeesFINWithLastBytes: bytes and the FIN behind them, arriving while Stream waits, end
// the stream with every byte passed on, in order. The poller signals them once; a reader that
// waited again after the short read that took the bytes would never see the EOF.
func TestStreamSeesFINWithLastBytes(t *testing.T) {
	for i := range 5 {
		client, server := tcpPair(t)
		r := NewSlabReader(client)
		var got bytes.Buffer
		var stop atomic.Bool
		done := make(chan error, 1)
		go func() {
			done <- r.Stream(&stop, func(p []byte) bool { got.Write(p); return true })
		}()
		server.Write([]byte("first"))
		time.Sleep(30 * time.Millisecond) // Stream has read it and waits
		server.Write([]byte("-last"))
		server.(*net.TCPConn).CloseWrite()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run %d: Stream ended with %v, want nil at EOF", i, err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("run %d: Stream did not see the FIN that came with the last bytes", i)
		}
		if got.String() != "first-last" {
			t.Fatalf("run %d: passed on %q", i, got.String())
		}
	}
}

// TestStreamStops: stop, then a close from another goroutine, end a Stream that waits.
func TestStreamStops(t *testing.T) {
	client, _ := tcpPair(t)
	r := NewSlabReader(client)
	var stop atomic.Bool
	done := make(chan error, 1)
	go func() { done <- r.Stream(&stop, func([]byte) bool { return true }) }()
	time.Sleep(20 * time.Millisecond)
	stop.Store(true)
	go client.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Stream after stop and close: %v, want net.ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Stream did not end after stop and close")
	}
}

// TestStreamSeesReset: a peer that resets the connection ends Stream with a read error, as Go's
// own Read would report it, not with nil (which would mean a clean end).
func TestStreamSeesReset(t *testing.T) {
	client, server := tcpPair(t)
	r := NewSlabReader(client)
	var stop atomic.Bool
	done := make(chan error, 1)
	go func() { done <- r.Stream(&stop, func([]byte) bool { return true }) }()
	server.Write([]byte("x"))
	time.Sleep(20 * time.Millisecond)
	server.(*net.TCPConn).SetLinger(0)
	server.Close() // RST
	select {
	case err := <-done:
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" || !IsReset(err) {
			t.Fatalf("Stream after a reset: %v, want a read *net.OpError", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Stream did not see the reset")
	}
}
