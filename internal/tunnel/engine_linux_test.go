//go:build linux

package tunnel

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/switchyard-proxy/switchyard/internal/uring"
)

// tcpPair returns the two ends of a loopback TCP connection.
func loopbackPair(t testing.TB) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// engineTunnel is client ⇄ [a | engine | b] ⇄ server on loopback.
type engineTunnel struct {
	client, server *net.TCPConn
	t              *Tunnel
	done           chan error
	up, down       atomic.Int64
}

func startEngineTunnel(t *testing.T, e *Engine, opt Options) *engineTunnel {
	t.Helper()
	client, a := loopbackPair(t)
	b, server := loopbackPair(t)
	et := &engineTunnel{client: client, server: server, done: make(chan error, 1)}
	opt.A, opt.B = a, b
	opt.Moved = func(toB bool, n int) {
		if toB {
			et.up.Add(int64(n))
		} else {
			et.down.Add(int64(n))
		}
	}
	opt.Done = func(why error) {
		a.Close()
		b.Close()
		et.done <- why
	}
	tun, err := e.Start(opt)
	if err != nil {
		t.Fatal(err)
	}
	et.t = tun
	return et
}

func (et *engineTunnel) waitDone(t *testing.T) error {
	t.Helper()
	select {
	case why := <-et.done:
		return why
	case <-time.After(10 * time.Second):
		t.Fatal("the tunnel did not end")
		return nil
	}
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	p := make([]byte, n)
	if _, err := io.ReadFull(c, p); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return p
}

func expectEOF(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var b [1]byte
	if n, err := c.Read(b[:]); err != io.EOF {
		t.Fatalf("read %d bytes, %v; want EOF", n, err)
	}
}

func TestEngineEchoAndHalfClose(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		e := newEngine(2, ring)
		et := startEngineTunnel(t, e, Options{})
		for i := range 50 {
			msg := bytes.Repeat([]byte{byte(i)}, 1+i*37)
			et.client.Write(msg)
			got := readN(t, et.server, len(msg))
			if !bytes.Equal(got, msg) {
				t.Fatalf("message %d arrived changed", i)
			}
			et.server.Write(got)
			if back := readN(t, et.client, len(msg)); !bytes.Equal(back, msg) {
				t.Fatalf("echo %d arrived changed", i)
			}
		}
		// The client's half-close reaches the server; the server's bytes still flow back.
		et.client.CloseWrite()
		expectEOF(t, et.server)
		et.server.Write([]byte("after"))
		if got := readN(t, et.client, 5); string(got) != "after" {
			t.Fatalf("got %q after the client's half-close", got)
		}
		et.server.CloseWrite()
		expectEOF(t, et.client)
		if why := et.waitDone(t); why != nil {
			t.Fatalf("clean end reported %v", why)
		}
		want := int64(0)
		for i := range 50 {
			want += int64(1 + i*37)
		}
		if et.up.Load() != want || et.down.Load() != want+5 {
			t.Fatalf("Moved counted %d up, %d down; want %d, %d", et.up.Load(), et.down.Load(), want, want+5)
		}
	})
}

// A gigabyte-scale transfer both ways at once, with the receiver slower than the sender part of
// the time, arrives intact.
func TestEngineBulkBothWays(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		e := newEngine(1, ring)
		et := startEngineTunnel(t, e, Options{})
		const size = 64 << 20
		send := func(c *net.TCPConn, seed byte) <-chan [32]byte {
			ch := make(chan [32]byte, 1)
			go func() {
				h := sha256.New()
				p := make([]byte, 100_000)
				for sent := 0; sent < size; {
					n := min(len(p), size-sent)
					rand.Read(p[:n])
					h.Write(p[:n])
					if _, err := c.Write(p[:n]); err != nil {
						t.Error(err)
						break
					}
					sent += n
				}
				c.CloseWrite()
				var sum [32]byte
				copy(sum[:], h.Sum(nil))
				ch <- sum
			}()
			return ch
		}
		recv := func(c *net.TCPConn, slow bool) <-chan [32]byte {
			ch := make(chan [32]byte, 1)
			go func() {
				h := sha256.New()
				p := make([]byte, 7000)
				for i := 0; ; i++ {
					if slow && i%200 == 0 {
						time.Sleep(2 * time.Millisecond)
					}
					n, err := c.Read(p)
					h.Write(p[:n])
					if err != nil {
						break
					}
				}
				var sum [32]byte
				copy(sum[:], h.Sum(nil))
				ch <- sum
			}()
			return ch
		}
		upSent, downSent := send(et.client, 1), send(et.server, 2)
		upGot, downGot := recv(et.server, true), recv(et.client, false)
		if <-upSent != <-upGot {
			t.Error("client → server bytes differ")
		}
		if <-downSent != <-downGot {
			t.Error("server → client bytes differ")
		}
		if why := et.waitDone(t); why != nil {
			t.Fatalf("clean end reported %v", why)
		}
		if et.up.Load() != size || et.down.Load() != size {
			t.Fatalf("Moved counted %d up, %d down; want %d each", et.up.Load(), et.down.Load(), size)
		}
	})
}

func TestEngineAbort(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		e := newEngine(1, ring)
		et := startEngineTunnel(t, e, Options{})
		et.client.Write([]byte("x"))
		readN(t, et.server, 1)
		reason := errors.New("test abort")
		et.t.Abort(reason)
		if why := et.waitDone(t); why != reason {
			t.Fatalf("Done got %v, want %v", why, reason)
		}
		et.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := et.client.Read(make([]byte, 1)); err == nil {
			t.Fatal("the client could still read after the abort")
		}
	})
}

// A peer that resets its connection aborts the tunnel, and the other side is closed.
func TestEnginePeerReset(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		e := newEngine(1, ring)
		et := startEngineTunnel(t, e, Options{})
		et.server.SetLinger(0)
		et.server.Close()
		et.client.Write([]byte("into a reset connection"))
		if why := et.waitDone(t); why == nil {
			t.Fatal("a reset ended the tunnel cleanly")
		}
	})
}

// GoAway puts a WebSocket Close 1001 between frames toward both sides and half-closes them.
func TestEngineGoAwayWebSocket(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		e := newEngine(1, ring)
		et := startEngineTunnel(t, e, Options{WebSocket: true})
		// A masked client frame with 10 payload bytes, sent in two parts around the GoAway.
		frame := append([]byte{0x82, 0x80 | 10, 1, 2, 3, 4}, []byte("0123456789")...)
		et.client.Write(frame[:9])
		readN(t, et.server, 9)
		et.t.GoAway()
		// Toward the client (at a boundary: nothing was sent that way): an unmasked Close 1001.
		if got := readN(t, et.client, 4); !bytes.Equal(got, []byte{0x88, 2, 0x03, 0xe9}) {
			t.Fatalf("client got % x, want an unmasked Close 1001", got)
		}
		expectEOF(t, et.client)
		// Toward the server: the rest of the frame first, then a masked Close 1001.
		et.client.Write(frame[9:])
		rest := readN(t, et.server, len(frame)-9)
		if !bytes.Equal(rest, frame[9:]) {
			t.Fatalf("the frame's end arrived as % x", rest)
		}
		cl := readN(t, et.server, 8)
		if cl[0] != 0x88 || cl[1] != 0x82 {
			t.Fatalf("server got % x, want a masked Close", cl)
		}
		if code := uint16(cl[6]^cl[2])<<8 | uint16(cl[7]^cl[3]); code != CloseGoingAway {
			t.Fatalf("close code %d, want 1001", code)
		}
		expectEOF(t, et.server)
		// The peers answer and close; bytes after our Close are dropped; the tunnel ends.
		et.server.Write([]byte{0x88, 0})
		et.server.CloseWrite()
		et.client.Write([]byte{0x88, 0x80, 0, 0, 0, 0})
		et.client.CloseWrite()
		if why := et.waitDone(t); why != nil {
			t.Fatalf("drained tunnel ended with %v", why)
		}
	})
}

// Idle tunnels hold no goroutine, and the loops end with the last tunnel.
func TestEngineIdleTunnelsHoldNoGoroutine(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		e := newEngine(2, ring)
		before := runtime.NumGoroutine()
		var ets []*engineTunnel
		for range 200 {
			et := startEngineTunnel(t, e, Options{})
			et.client.Write([]byte("hi"))
			readN(t, et.server, 2)
			ets = append(ets, et)
		}
		time.Sleep(50 * time.Millisecond)
		if n := runtime.NumGoroutine() - before; n > 2 {
			t.Fatalf("200 idle tunnels hold %d goroutines; want at most the 2 loops", n)
		}
		for _, et := range ets {
			et.client.CloseWrite()
			et.server.CloseWrite()
		}
		for _, et := range ets {
			if why := et.waitDone(t); why != nil {
				t.Fatal(why)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine() - before; n > 0 {
			t.Fatalf("%d goroutines left after every tunnel ended", n)
		}
	})
}

// Bytes and a FIN that arrived before the tunnel started are carried: the engine does not wait
// for an edge that came before it.
func TestEngineStartsOnPendingBytes(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		e := newEngine(1, ring)
		client, a := loopbackPair(t)
		b, server := loopbackPair(t)
		client.Write([]byte("early"))
		client.CloseWrite()
		server.Write([]byte("late"))
		server.CloseWrite()
		time.Sleep(20 * time.Millisecond)
		done := make(chan error, 1)
		if _, err := e.Start(Options{A: a, B: b, Done: func(why error) { done <- why }}); err != nil {
			t.Fatal(err)
		}
		if got := readN(t, server, 5); string(got) != "early" {
			t.Fatalf("server got %q", got)
		}
		expectEOF(t, server)
		if got := readN(t, client, 4); string(got) != "late" {
			t.Fatalf("client got %q", got)
		}
		expectEOF(t, client)
		select {
		case why := <-done:
			if why != nil {
				t.Fatal(why)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no Done")
		}
	})
}

// A reader that stops for a while blocks the engine's writes (no bytes pile up in the proxy) and
// everything arrives once it reads again.
func TestEngineStalledReader(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		e := newEngine(1, ring)
		et := startEngineTunnel(t, e, Options{})
		const total = 20 << 20
		payload := make([]byte, total)
		rand.Read(payload)
		et.client.SetReadBuffer(64 << 10)
		et.server.SetWriteBuffer(64 << 10)
		go func() {
			et.server.Write(payload)
			et.server.CloseWrite()
		}()
		time.Sleep(1 * time.Second)
		got := make([]byte, 0, total)
		et.client.SetReadDeadline(time.Now().Add(20 * time.Second))
		p := make([]byte, 64<<10)
		for {
			n, err := et.client.Read(p)
			got = append(got, p[:n]...)
			if err != nil {
				break
			}
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("got %d bytes, want %d intact", len(got), total)
		}
	})
}

// Large WebSocket frames are spliced inside their payload and arrive intact, and GoAway after
// them still closes between frames.
func TestEngineWebSocketBulkThenGoAway(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		for _, noSplice := range []bool{false, true} {
			e := newEngine(1, ring)
			et := startEngineTunnel(t, e, Options{WebSocket: true, NoSplice: noSplice})
			var sent []byte
			for i := range 20 {
				payload := make([]byte, 100_000+i*4099)
				rand.Read(payload)
				// A masked binary frame with a 64-bit length and a zero mask (payload unchanged).
				h := []byte{0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
				for j := range 8 {
					h[2+j] = byte(uint64(len(payload)) >> (56 - 8*j))
				}
				sent = append(append(sent, h...), payload...)
			}
			go et.client.Write(sent)
			got := readN(t, et.server, len(sent))
			if !bytes.Equal(got, sent) {
				t.Fatalf("noSplice=%v: frames arrived changed", noSplice)
			}
			et.t.GoAway()
			cl := readN(t, et.server, 8)
			if cl[0] != 0x88 || cl[1] != 0x82 {
				t.Fatalf("noSplice=%v: after the frames the server got % x, want a masked Close", noSplice, cl)
			}
			expectEOF(t, et.server)
			if et.up.Load() != int64(len(sent)) {
				t.Fatalf("Moved counted %d, want %d", et.up.Load(), len(sent))
			}
			et.t.Abort(errors.New("test over"))
			et.waitDone(t)
		}
	})
}

// Many tunnels busy at once, so that a loop's rounds carry many directions: every byte arrives in
// order both ways, through short writes into slow readers, and half-closes end each tunnel. With
// io_uring the reads and writes went in batches.
func TestEngineManyBusyTunnels(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		e := newEngine(1, ring)
		const tunnels, perTunnel = 48, 1 << 20
		ets := make([]*engineTunnel, tunnels)
		for i := range ets {
			ets[i] = startEngineTunnel(t, e, Options{})
			ets[i].client.SetReadBuffer(32 << 10)
			ets[i].server.SetReadBuffer(32 << 10)
		}
		errs := make(chan error, 3*tunnels)
		for i, et := range ets {
			// The client sends messages from 1 byte to 40 KB (past the loop's 16 KiB reads) and
			// hashes what comes back; the server echoes, pausing now and then so that the engine's
			// writes toward it come up short.
			sent := make(chan [32]byte, 1)
			go func() {
				h := sha256.New()
				p := make([]byte, 40_000)
				for n, k := 0, 0; n < perTunnel; k++ {
					m := min(1+(k*7919+i*131)%len(p), perTunnel-n)
					rand.Read(p[:m])
					h.Write(p[:m])
					if _, err := et.client.Write(p[:m]); err != nil {
						errs <- err
						return
					}
					n += m
				}
				et.client.CloseWrite()
				sent <- [32]byte(h.Sum(nil))
			}()
			go func() {
				p := make([]byte, 9000)
				for k := 0; ; k++ {
					if k%64 == i%64 {
						time.Sleep(time.Millisecond)
					}
					n, err := et.server.Read(p)
					if _, werr := et.server.Write(p[:n]); werr != nil {
						errs <- werr
						return
					}
					if err == io.EOF {
						et.server.CloseWrite()
						errs <- nil
						return
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
			go func() {
				h := sha256.New()
				et.client.SetReadDeadline(time.Now().Add(60 * time.Second))
				if _, err := io.Copy(h, et.client); err != nil {
					errs <- err
					return
				}
				if got, want := [32]byte(h.Sum(nil)), <-sent; got != want {
					errs <- errors.New("the echo differs from what was sent")
					return
				}
				errs <- nil
			}()
		}
		for range 2 * tunnels {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for _, et := range ets {
			if why := et.waitDone(t); why != nil {
				t.Fatalf("clean end reported %v", why)
			}
			if et.up.Load() != perTunnel || et.down.Load() != perTunnel {
				t.Fatalf("Moved counted %d up, %d down; want %d each", et.up.Load(), et.down.Load(), perTunnel)
			}
		}
		if !ring {
			return
		}
		r, err := uring.New(1)
		if err != nil {
			t.Logf("io_uring is not available here (%v): the loop made its calls one by one", err)
			return
		}
		r.Close()
		if e.loops[0].batched.Load() == 0 {
			t.Fatal("with io_uring available, no read went in a batch")
		}
	})
}

// A loop waits in epoll_wait with few tunnels and in Go's poller with many: tunnels keep carrying
// bytes across the switches both ways, and Abort reaches a loop in either.
func TestEngineWaitSwitches(t *testing.T) {
	forEachMode(t, func(t *testing.T, ring bool) {
		e := newEngine(1, ring)
		echo := func(et *engineTunnel, tag string) {
			t.Helper()
			et.client.Write([]byte(tag))
			if got := readN(t, et.server, len(tag)); string(got) != tag {
				t.Fatalf("%s: server got %q", tag, got)
			}
			et.server.Write([]byte(tag))
			if got := readN(t, et.client, len(tag)); string(got) != tag {
				t.Fatalf("%s: client got %q", tag, got)
			}
		}
		first := startEngineTunnel(t, e, Options{})
		echo(first, "alone") // one tunnel: epoll_wait
		var more []*engineTunnel
		for i := range 2 * loopPollMin {
			et := startEngineTunnel(t, e, Options{})
			echo(et, fmt.Sprint("added ", i))
			more = append(more, et)
		}
		echo(first, "crowded") // many: the poller
		for i, et := range more {
			et.t.Abort(errors.New("test: fewer tunnels"))
			if why := et.waitDone(t); why == nil {
				t.Fatal("an aborted tunnel ended cleanly")
			}
			echo(first, fmt.Sprint("after abort ", i))
		}
		echo(first, "alone again")
		first.client.CloseWrite()
		expectEOF(t, first.server)
		first.server.CloseWrite()
		expectEOF(t, first.client)
		if why := first.waitDone(t); why != nil {
			t.Fatalf("clean end reported %v", why)
		}
		if n := e.loops[0].switches.Load(); n < 3 {
			t.Fatalf("the loop changed how it waits %d times, want 3 (epoll_wait, poller, epoll_wait)", n)
		}
	})
}

// A ring that fails is given up: a failed batch of reads loses nothing (what was read is written
// the old way, and the loop goes on one call at a time); a failed batch of writes aborts only the
// tunnels whose bytes it carried, since whether they went is unknown.
func TestEngineRingFailure(t *testing.T) {
	if r, err := uring.New(1); err != nil {
		t.Skipf("io_uring is not available here: %v", err)
	} else {
		r.Close()
	}
	for _, failAt := range []int{1, 2} { // the reads' batch, the writes' batch
		t.Run(fmt.Sprint("submit ", failAt), func(t *testing.T) {
			var calls atomic.Int32
			failed := make(chan struct{})
			submitRing = func(r *uring.Ring, res []int32) error {
				err := r.Submit(res)
				if calls.Add(1) == int32(failAt) {
					close(failed)
					return errors.New("test: ring failed")
				}
				return err
			}
			t.Cleanup(func() { submitRing = (*uring.Ring).Submit })
			e := newEngine(1, true)
			const n = 8
			ets := make([]*engineTunnel, n)
			for i := range ets {
				ets[i] = startEngineTunnel(t, e, Options{})
			}
			// All clients write at once, round after round, until a round of the loop has had
			// several directions to serve (the ring is used only then).
			want := make([]string, n)
			for round := 1; ; round++ {
				for i, et := range ets {
					msg := fmt.Sprintf("round %d tunnel %d;", round, i)
					want[i] += msg
					et.client.Write([]byte(msg))
				}
				select {
				case <-failed:
				case <-time.After(100 * time.Millisecond):
					if round < 100 {
						continue
					}
					t.Fatal("no round of the loop made a batch")
				}
				break
			}
			for i, et := range ets {
				// Every message arrives, and then the tunnel works on one call at a time; or
				// (writes only) it was aborted because a failed batch carried its bytes. Never a
				// clean end that lost something.
				aborted := func(what string, err error) {
					if failAt == 1 {
						t.Fatalf("tunnel %d: %s after a failed batch of reads: %v", i, what, err)
					}
					if why := et.waitDone(t); why == nil {
						t.Fatalf("tunnel %d stopped carrying bytes but ended cleanly", i)
					}
				}
				et.server.SetReadDeadline(time.Now().Add(5 * time.Second))
				got := make([]byte, len(want[i]))
				if _, err := io.ReadFull(et.server, got); err != nil {
					aborted("messages lost", err)
					continue
				}
				if string(got) != want[i] {
					t.Fatalf("tunnel %d: server got %q, want %q", i, got, want[i])
				}
				et.server.Write([]byte("back"))
				et.client.SetReadDeadline(time.Now().Add(5 * time.Second))
				back := make([]byte, 4)
				if _, err := io.ReadFull(et.client, back); err != nil {
					aborted("no echo", err)
					continue
				}
				if string(back) != "back" {
					t.Fatalf("tunnel %d: client got %q", i, back)
				}
				et.client.CloseWrite()
				et.server.CloseWrite()
				if why := et.waitDone(t); why != nil {
					t.Fatalf("tunnel %d ended with %v", i, why)
				}
			}
			if e.loops[0].ring != nil {
				t.Fatal("the loop kept using a ring that failed")
			}
		})
	}
}

// TestTunnelRecordFitsSizeClass guards what an idle engine tunnel costs: its record is most of
// it, and one byte past 256 would put every tunnel in the 288-byte size class.
func TestTunnelRecordFitsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(Tunnel{}); n > 256 {
		t.Fatalf("Tunnel is %d bytes, want at most 256 (see the field order of direction)", n)
	}
}

// forEachMode runs test with the engine's loops batching through io_uring (where the kernel
// allows it) and making one call at a time.
func forEachMode(t *testing.T, test func(t *testing.T, ring bool)) {
	t.Run("ring", func(t *testing.T) { test(t, true) })
	t.Run("calls", func(t *testing.T) { test(t, false) })
}
