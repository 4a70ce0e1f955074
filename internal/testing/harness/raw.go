package harness

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// RawUpstream is a fake upstream that speaks raw TCP: the test reads exactly the bytes the proxy
// sent and writes exactly the bytes it wants the proxy to see.
type RawUpstream struct {
	t     testing.TB
	ln    net.Listener
	conns chan *RawConn
	wg    sync.WaitGroup
}

// NewRawUpstream listens on 127.0.0.1 and records every connection.
func NewRawUpstream(t testing.TB) *RawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &RawUpstream{t: t, ln: ln, conns: make(chan *RawConn, 64)}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rc := newRawConn(t, c)
			u.conns <- rc
		}
	}()
	t.Cleanup(u.Close)
	return u
}

// Port is the upstream's port, for a cluster's port_value.
func (u *RawUpstream) Port() int { return u.ln.Addr().(*net.TCPAddr).Port }

// Addr is the upstream's host:port.
func (u *RawUpstream) Addr() string { return u.ln.Addr().String() }

// Accept waits for the proxy's next connection.
func (u *RawUpstream) Accept(timeout time.Duration) *RawConn {
	u.t.Helper()
	select {
	case c := <-u.conns:
		return c
	case <-time.After(timeout):
		u.t.Fatalf("upstream: no connection within %v", timeout)
		return nil
	}
}

// NoConnection asserts that no new connection arrives within d.
func (u *RawUpstream) NoConnection(d time.Duration) {
	u.t.Helper()
	select {
	case c := <-u.conns:
		u.t.Fatalf("upstream: unexpected connection; it sent %q", c.Received())
	case <-time.After(d):
	}
}

// Close stops listening and closes every connection it accepted.
func (u *RawUpstream) Close() {
	u.ln.Close()
	u.wg.Wait()
	for {
		select {
		case c := <-u.conns:
			c.Close()
		default:
			return
		}
	}
}

// RawConn is one connection, on either side, whose received bytes are recorded.
type RawConn struct {
	t    testing.TB
	c    net.Conn
	mu   sync.Mutex
	cond *sync.Cond
	buf  bytes.Buffer
	eof  bool
	err  error
	done chan struct{}
}

func newRawConn(t testing.TB, c net.Conn) *RawConn {
	rc := &RawConn{t: t, c: c, done: make(chan struct{})}
	rc.cond = sync.NewCond(&rc.mu)
	go rc.readLoop()
	t.Cleanup(func() { rc.Close() })
	return rc
}

// Dial opens a raw client connection to addr.
func Dial(t testing.TB, addr string) *RawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return newRawConn(t, c)
}

func (rc *RawConn) readLoop() {
	defer close(rc.done)
	p := make([]byte, 32<<10)
	for {
		n, err := rc.c.Read(p)
		rc.mu.Lock()
		rc.buf.Write(p[:n])
		if err != nil {
			rc.eof = true
			rc.err = err
		}
		rc.cond.Broadcast()
		rc.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Conn is the underlying connection.
func (rc *RawConn) Conn() net.Conn { return rc.c }

// Received returns every byte received so far.
func (rc *RawConn) Received() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.buf.String()
}

// Write sends s, failing the test on error.
func (rc *RawConn) Write(s string) {
	rc.t.Helper()
	if _, err := rc.c.Write([]byte(s)); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// CloseWrite half-closes the connection.
func (rc *RawConn) CloseWrite() {
	rc.t.Helper()
	if err := rc.c.(*net.TCPConn).CloseWrite(); err != nil {
		rc.t.Fatalf("close write: %v", err)
	}
}

// Close closes the connection.
func (rc *RawConn) Close() { rc.c.Close() }

// waitFor waits until cond holds on the received bytes or the connection ended.
func (rc *RawConn) waitFor(timeout time.Duration, cond func(string) bool) (string, bool) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		rc.mu.Lock()
		rc.cond.Broadcast()
		rc.mu.Unlock()
	})
	defer timer.Stop()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for {
		s := rc.buf.String()
		if cond(s) {
			return s, true
		}
		if rc.eof || time.Now().After(deadline) {
			return s, false
		}
		rc.cond.Wait()
	}
}

// WaitForData waits until the received bytes contain substr and returns them all.
func (rc *RawConn) WaitForData(substr string, timeout time.Duration) string {
	rc.t.Helper()
	s, ok := rc.waitFor(timeout, func(s string) bool { return strings.Contains(s, substr) })
	if !ok {
		rc.t.Fatalf("did not receive %q within %v; got %q", substr, timeout, s)
	}
	return s
}

// WaitForLen waits until at least n bytes have been received.
func (rc *RawConn) WaitForLen(n int, timeout time.Duration) string {
	rc.t.Helper()
	s, ok := rc.waitFor(timeout, func(s string) bool { return len(s) >= n })
	if !ok {
		rc.t.Fatalf("received %d bytes within %v, want %d", len(s), timeout, n)
	}
	return s
}

// WaitForHead waits for a complete HTTP head (up to the blank line) and returns it.
func (rc *RawConn) WaitForHead(timeout time.Duration) string {
	rc.t.Helper()
	s := rc.WaitForData("\r\n\r\n", timeout)
	return s[:strings.Index(s, "\r\n\r\n")+4]
}

// WaitForEOF waits until the peer closed (or half-closed) its side and returns everything received.
func (rc *RawConn) WaitForEOF(timeout time.Duration) string {
	rc.t.Helper()
	s, _ := rc.waitFor(timeout, func(string) bool { return false })
	rc.mu.Lock()
	eof := rc.eof
	rc.mu.Unlock()
	if !eof {
		rc.t.Fatalf("connection still open after %v; got %q", timeout, s)
	}
	return s
}

// Closed reports whether the peer has closed its side.
func (rc *RawConn) Closed() bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.eof
}
