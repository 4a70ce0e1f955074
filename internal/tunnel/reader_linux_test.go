//go:build linux

package tunnel

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// engineReader is peer → [conn | engine] → Deliver, on loopback, recording what Deliver took.
type engineReader struct {
	peer, conn *net.TCPConn
	r          *Reader
	mu         sync.Mutex
	got        bytes.Buffer
	calls      int
	pauseAt    int // Deliver asks for a pause at this call (0: never)
	done       chan error
	ended      atomic.Bool // Done was called
}

func startReader(t *testing.T, e *Engine, pauseAt int) *engineReader {
	t.Helper()
	peer, conn := loopbackPair(t)
	er := &engineReader{peer: peer, conn: conn, pauseAt: pauseAt, done: make(chan error, 1)}
	r, err := e.StartReader(ReaderOptions{
		Conn: conn,
		Deliver: func(p []byte) bool {
			er.mu.Lock()
			defer er.mu.Unlock()
			er.got.Write(p)
			er.calls++
			return er.calls != er.pauseAt
		},
		Done: func(why error) {
			er.ended.Store(true)
			er.done <- why
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	er.r = r
	// The sockets close after this (their cleanup was registered first), and only once the engine
	// has let go of the descriptor, as a Reader's owner must.
	t.Cleanup(func() {
		r.Abort(nil)
		for deadline := time.Now().Add(5 * time.Second); !er.ended.Load() && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	})
	return er
}

func (er *engineReader) delivered() []byte {
	er.mu.Lock()
	defer er.mu.Unlock()
	return bytes.Clone(er.got.Bytes())
}

func (er *engineReader) waitDone(t *testing.T) error {
	t.Helper()
	select {
	case why := <-er.done:
		return why
	case <-time.After(10 * time.Second):
		t.Fatal("Done was not called")
		return nil
	}
}

// waitDelivered waits until Deliver has taken exactly want, failing at once on anything else.
func (er *engineReader) waitDelivered(t *testing.T, want []byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := er.delivered()
		if bytes.Equal(got, want) {
			return
		}
		if len(got) > len(want) || !bytes.Equal(got, want[:len(got)]) || time.Now().After(deadline) {
			t.Fatalf("delivered %d bytes, want the %d written, in order", len(got), len(want))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestEngineReaderDeliversAndEnds: the peer's bytes reach Deliver in order, large and small, and
// its FIN ends the reader with Done(nil); the caller's socket still writes afterwards (the engine
// only read a duplicate).
func TestEngineReaderDeliversAndEnds(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		er := startReader(t, newEngine(1, ring), 0)
		var want []byte
		for i, size := range []int{1, 100, 70 << 10, 5, 1 << 20} {
			p := make([]byte, size)
			rand.Read(p)
			if _, err := er.peer.Write(p); err != nil {
				t.Fatal(err)
			}
			want = append(want, p...)
			if i%2 == 0 {
				er.waitDelivered(t, want)
			}
		}
		er.waitDelivered(t, want)
		er.peer.CloseWrite()
		if why := er.waitDone(t); why != nil {
			t.Fatalf("Done(%v) after the peer's FIN, want nil", why)
		}
		if _, err := er.conn.Write([]byte("still mine")); err != nil {
			t.Fatal(err)
		}
		if got := readN(t, er.peer, 10); string(got) != "still mine" {
			t.Fatalf("peer read %q", got)
		}
		er.conn.Close()
		expectEOF(t, er.peer) // the engine let its duplicate go: the close is a real FIN
	})
}

// TestEngineReaderPauseAndResume: after Deliver says false nothing more is read until Resume,
// however much the peer sends, and then everything comes in order.
func TestEngineReaderPauseAndResume(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		er := startReader(t, newEngine(1, ring), 1)
		first := []byte("first")
		er.peer.Write(first)
		er.waitDelivered(t, first)
		rest := make([]byte, 200<<10)
		rand.Read(rest)
		go er.peer.Write(rest) // blocks once the socket buffers fill: the reader is paused
		time.Sleep(100 * time.Millisecond)
		if got := er.delivered(); !bytes.Equal(got, first) {
			t.Fatalf("delivered %d bytes while paused, want only the first call's %d", len(got), len(first))
		}
		er.r.Resume()
		er.waitDelivered(t, append(first, rest...))
	})
}

// TestEngineReaderPausedAtEOF: a FIN that arrives while paused is seen after Resume, once the
// bytes before it were delivered.
func TestEngineReaderPausedAtEOF(t *testing.T) {
	er := startReader(t, newEngine(1, true), 1)
	er.peer.Write([]byte("a"))
	er.waitDelivered(t, []byte("a"))
	er.peer.Write([]byte("bc"))
	er.peer.CloseWrite()
	select {
	case why := <-er.done:
		t.Fatalf("Done(%v) while paused", why)
	case <-time.After(50 * time.Millisecond):
	}
	er.r.Resume()
	if why := er.waitDone(t); why != nil {
		t.Fatalf("Done(%v), want nil", why)
	}
	if got := er.delivered(); string(got) != "abc" {
		t.Fatalf("delivered %q, want abc", got)
	}
}

// TestEngineReaderAbort: Abort ends the reader with its reason and leaves the socket to its
// owner, who can still write on it.
func TestEngineReaderAbort(t *testing.T) {
	er := startReader(t, newEngine(1, true), 0)
	why := errors.New("stream reset")
	er.r.Abort(why)
	if got := er.waitDone(t); got != why {
		t.Fatalf("Done(%v), want %v", got, why)
	}
	er.r.Resume() // after the end: nothing happens
	er.conn.Write([]byte("x"))
	if got := readN(t, er.peer, 1); string(got) != "x" {
		t.Fatalf("peer read %q", got)
	}
}

// TestEngineManyReaders: readers busy at once share a loop (the batch path where io_uring is
// there) and each gets its own peer's bytes, in order.
func TestEngineManyReaders(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		e := newEngine(1, ring)
		const readers, messages = 32, 50
		ers := make([]*engineReader, readers)
		for i := range ers {
			ers[i] = startReader(t, e, 0)
		}
		var wg sync.WaitGroup
		for i, er := range ers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for m := range messages {
					fmt.Fprintf(er.peer, "reader %d message %d;", i, m)
					time.Sleep(time.Duration(m%3) * time.Millisecond)
				}
			}()
		}
		wg.Wait()
		for i, er := range ers {
			var want bytes.Buffer
			for m := range messages {
				fmt.Fprintf(&want, "reader %d message %d;", i, m)
			}
			er.waitDelivered(t, want.Bytes())
			er.peer.Close()
			if why := er.waitDone(t); why != nil {
				t.Fatalf("reader %d: Done(%v)", i, why)
			}
		}
		if ring && e.loops[0].ring != nil && e.loops[0].batched.Load() == 0 {
			t.Log("no batch was made (the readers were never ready together)")
		}
	})
}

// A loop with a Reader waits in Go's poller, never in epoll_wait itself: the Reader's socket is
// in both sets, and a blocked loop would be a second thread woken for each of its messages. A
// tunnel alone on a loop blocks (one switch); with a Reader beside it, it does not.
func TestEngineReaderKeepsLoopInPoller(t *testing.T) {
	e := newEngine(1, true)
	er := startReader(t, e, 0)
	et := startEngineTunnel(t, e, Options{})
	for i := range 3 {
		msg := fmt.Sprint("message ", i)
		er.peer.Write([]byte(msg))
		et.client.Write([]byte(msg))
		if got := readN(t, et.server, len(msg)); string(got) != msg {
			t.Fatalf("tunnel carried %q", got)
		}
	}
	er.waitDelivered(t, []byte("message 0message 1message 2"))
	if n := e.loops[0].switches.Load(); n != 0 {
		t.Fatalf("the loop changed how it waits %d times with a Reader in it, want 0 (the poller throughout)", n)
	}
	er.peer.Close()
	if why := er.waitDone(t); why != nil {
		t.Fatal(why)
	}
	// The tunnel alone now: the loop goes back to blocking in epoll_wait.
	deadline := time.Now().Add(5 * time.Second)
	for e.loops[0].switches.Load() == 0 {
		et.client.Write([]byte("x"))
		readN(t, et.server, 1)
		if time.Now().After(deadline) {
			t.Fatal("the loop never went back to epoll_wait once the Reader was gone")
		}
	}
}

// frameSender is a test Sender: a 4-byte length before each payload, sent on dst's socket.
type frameSender struct {
	fd   int          // a duplicate of dst's descriptor, for the engine's sends
	dst  *net.TCPConn // for the rest of a send the socket cut, and for Deliver
	sent atomic.Int32 // sends the engine made whole
	// Begin refuses every third offer (the destination busy with another send): Deliver gets them
	// once the batch's sends are over.
	offers int
}

func (s *frameSender) frame(buf []byte, n int) int {
	start := SendHeadroom - 4
	binary.BigEndian.PutUint32(buf[start:], uint32(n))
	return start
}

func (s *frameSender) Begin(buf []byte, n int) (int, int, bool) {
	if s.offers++; s.offers%3 == 0 {
		return -1, 0, false
	}
	return s.fd, s.frame(buf, n), true
}

func (s *frameSender) End(out []byte, res int32) bool {
	switch {
	case int(res) == len(out):
		s.sent.Add(1)
		return true
	case res > 0:
		s.dst.Write(out[res:]) // the Sender finishes a cut send (here: blocking, the test reads)
		return true
	}
	return false
}

// readFrames reads framed payloads from c until it has want bytes of payload.
func readFrames(t *testing.T, c net.Conn, want int) []byte {
	t.Helper()
	var got []byte
	for len(got) < want {
		hdr := readN(t, c, 4)
		got = append(got, readN(t, c, int(binary.BigEndian.Uint32(hdr)))...)
	}
	return got
}

// TestEngineReaderSends: readers with a Sender have their bytes framed and sent in the engine's
// io_uring batches (Deliver takes what the Sender refuses, after the batch's sends); every
// destination gets its own peer's bytes, whole frames in order.
func TestEngineReaderSends(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		e := newEngine(1, ring)
		const readers, rounds = 16, 50
		type pair struct {
			peer, dstRead *net.TCPConn
			s             *frameSender
			done          chan error
		}
		ps := make([]*pair, readers)
		for i := range ps {
			peer, conn := loopbackPair(t)
			dstRead, dst := loopbackPair(t)
			fd, err := dupSocket(dst)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { syscall.Close(fd) })
			p := &pair{peer: peer, dstRead: dstRead, s: &frameSender{fd: fd, dst: dst}, done: make(chan error, 1)}
			ps[i] = p
			_, err = e.StartReader(ReaderOptions{
				Conn:   conn,
				Sender: p.s,
				Deliver: func(b []byte) bool {
					var hdr [SendHeadroom]byte
					start := p.s.frame(hdr[:], len(b))
					dst.Write(append(hdr[start:], b...))
					return true
				},
				Done: func(why error) { p.done <- why },
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		for r := range rounds {
			for i, p := range ps {
				fmt.Fprintf(p.peer, "reader %02d round %02d;", i, r)
			}
			for i, p := range ps {
				want := fmt.Sprintf("reader %02d round %02d;", i, r)
				if got := readFrames(t, p.dstRead, len(want)); string(got) != want {
					t.Fatalf("destination %d got %q, want %q", i, got, want)
				}
			}
		}
		sent := 0
		for _, p := range ps {
			sent += int(p.s.sent.Load())
			p.peer.Close()
			if why := <-p.done; why != nil {
				t.Fatalf("Done(%v) after the peer's FIN", why)
			}
		}
		switch {
		case !ring || e.loops[0].ring == nil:
			if sent != 0 {
				t.Fatalf("%d sends without a ring", sent)
			}
		case sent == 0:
			t.Fatalf("no read of %d rounds of %d readers was sent in a batch", rounds, readers)
		default:
			t.Logf("%d of %d messages sent in batches", sent, rounds*readers)
		}
	})
}
