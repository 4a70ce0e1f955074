package http2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/headers"
)

// goroutineParker parks a connection's reads on a goroutine of its own that reads the socket
// with net.Conn.Read: what the tunnel engine does for the proxy, without the engine (which this
// package does not import). Abort ends a read under way with a read deadline.
type goroutineParker struct {
	parks atomic.Int32
	fail  bool // refuse to park, as for a socket the engine cannot read
}

type goroutineReads struct {
	nc      net.Conn
	aborted atomic.Pointer[error]
}

func (g *goroutineParker) park(nc net.Conn, deliver func(p []byte) bool, done func(why error)) (ParkedReads, error) {
	if g.fail {
		return nil, errors.New("this socket cannot park")
	}
	g.parks.Add(1)
	r := &goroutineReads{nc: nc}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := nc.Read(buf)
			if n > 0 {
				deliver(buf[:n])
			}
			if why := r.aborted.Load(); why != nil {
				done(*why)
				return
			}
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					continue // a deadline the codec set; only Abort ends these reads
				}
				done(nil) // the peer's FIN (or its reset): a read on the socket finds it again
				return
			}
		}
	}()
	return r, nil
}

func (r *goroutineReads) Abort(why error) {
	r.aborted.CompareAndSwap(nil, &why)
	r.nc.SetReadDeadline(time.Now())
}

// leavingServer serves one accepted connection with ServeLeaving and reports how it went.
type leavingServer struct {
	ln    net.Listener
	sc    chan *ServerConn
	left  chan bool  // ServeLeaving's answer
	ended chan error // ended's argument, or Serve's result when it did not leave
}

func startLeaving(t *testing.T, cfg ServerConfig, handle func(*ServerStream)) *leavingServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls := &leavingServer{ln: ln, sc: make(chan *ServerConn, 1), left: make(chan bool, 1), ended: make(chan error, 1)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		if cfg.Stats == nil {
			cfg.Stats = NewStats(nil)
		}
		sc := NewServerConn(nc, nil, cfg, handle)
		ls.sc <- sc
		left, err := sc.ServeLeaving(context.Background(), func() {}, func(err error) { ls.ended <- err })
		ls.left <- left
		if !left {
			ls.ended <- err
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ls
}

// openCounter serves one connection with ServeLeaving, parking with g, and opens stream 1 to a
// counter on it.
func openCounter(t *testing.T, g *goroutineParker, quiet time.Duration) (*leavingServer, *rawClient) {
	t.Helper()
	ls := startLeaving(t, ServerConfig{ParkReads: g.park, QuietBeforePark: quiet}, counter)
	rc := dialRaw(t, ls.ln.Addr().String())
	rc.handshake()
	rc.writeHeaders(1, false, request("POST", "/")...)
	return ls, rc
}

// counter answers 200 and, after each read, writes the number of bytes the stream has brought so
// far and ";" — or "out of order;" once a byte is not the pattern's (byte i is pattern[i%len]).
func counter(s *ServerStream) {
	if s.WriteHeaders(headers.New(":status", "200"), false) != nil {
		return
	}
	buf := make([]byte, 64<<10)
	total, ok := 0, true
	for {
		n, err := s.Read(buf)
		for _, b := range buf[:n] {
			ok = ok && b == pattern[total%len(pattern)]
			total++
		}
		ack := strconv.Itoa(total) + ";"
		if !ok {
			ack = "out of order;"
		}
		if n > 0 && s.WriteData([]byte(ack), false) != nil {
			return
		}
		if err != nil {
			s.WriteData(nil, true)
			return
		}
	}
}

const pattern = "0123456789abcdefghijklmnopqrstuvwxyz"

// sent writes n more bytes of the pattern on stream id, in 16 KiB frames, and waits for the
// count of all it sent so far.
func sent(t *testing.T, rc *rawClient, id uint32, total *int, n int) {
	t.Helper()
	for end := *total + n; *total < end; {
		k := min(16<<10, end-*total)
		p := make([]byte, k)
		for i := range p {
			p[i] = pattern[(*total+i)%len(pattern)]
		}
		rc.writeData(id, false, p)
		*total += k
	}
	want := ";" + strconv.Itoa(*total) + ";"
	got := ";"
	for !strings.HasSuffix(got, want) {
		f, err := rc.tryRead(5 * time.Second)
		if err != nil {
			t.Fatalf("waiting for the count %d (have %q): %v", *total, got[max(0, len(got)-40):], err)
		}
		if d, ok := f.(*h2.DataFrame); ok && d.StreamID == id {
			got += string(d.Data())
			if strings.Contains(got, "out of order") {
				t.Fatal("the handler got the bytes out of order")
			}
		}
	}
}

// A quiet connection's reads park and its goroutine returns; the client's next bytes take them
// back (a burst bigger than a parked read's queue, in order), the connection goes on and parks
// again once quiet; the client's close ends it, through ended.
func TestQuietConnectionParks(t *testing.T) {
	var g goroutineParker
	ls, rc := openCounter(t, &g, 50*time.Millisecond)
	total := 0
	sent(t, rc, 1, &total, 10)
	select {
	case left := <-ls.left:
		if !left {
			t.Fatal("ServeLeaving returned without leaving")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a quiet connection's goroutine did not leave")
	}
	sent(t, rc, 1, &total, 5)
	waitParks(t, &g, 2)
	sent(t, rc, 1, &total, 200<<10) // more than parked reads queue (frameBufSize)
	waitParks(t, &g, 3)
	sent(t, rc, 1, &total, 100)
	rc.nc.Close()
	select {
	case err := <-ls.ended:
		if err != nil {
			t.Errorf("ended(%v), want nil for the client's close", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection did not end after its client closed")
	}
}

// waitParks waits until the connection has parked n times.
func waitParks(t *testing.T, g *goroutineParker, n int32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for g.parks.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d parks, want %d: the connection did not park again once quiet", g.parks.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close on a parked connection aborts the parked reads before the socket closes: the client
// sees the connection end, and ended is called.
func TestCloseParkedConnection(t *testing.T) {
	var g goroutineParker
	ls, rc := openCounter(t, &g, 50*time.Millisecond)
	total := 0
	sent(t, rc, 1, &total, 6)
	sc := <-ls.sc
	if !<-ls.left {
		t.Fatal("ServeLeaving returned without leaving")
	}
	sc.Close()
	select {
	case <-ls.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("a parked connection's Close did not end it")
	}
	for {
		if _, err := rc.tryRead(5 * time.Second); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the client's connection is still open after Close")
			}
			break
		}
	}
}

// A socket whose reads cannot park keeps its goroutine, and keeps working past the quiet time.
func TestConnectionThatCannotPark(t *testing.T) {
	g := goroutineParker{fail: true}
	ls, rc := openCounter(t, &g, 20*time.Millisecond)
	total := 0
	sent(t, rc, 1, &total, 4)
	time.Sleep(100 * time.Millisecond)
	sent(t, rc, 1, &total, 4)
	select {
	case <-ls.left:
		t.Fatal("ServeLeaving returned while the connection was open")
	default:
	}
	rc.nc.Close()
	if left := <-ls.left; left {
		t.Error("ServeLeaving left, though its reads could not park")
	}
	<-ls.ended
}

// Keepalive goes on while the reads are parked: each answer to a PING wakes the connection, which
// parks again once quiet; when the client stops answering, the keepalive timeout closes the
// parked connection and ended reports ErrKeepaliveTimeout.
func TestKeepaliveOnParkedConnection(t *testing.T) {
	var g goroutineParker
	ls := startLeaving(t, ServerConfig{ParkReads: g.park, QuietBeforePark: 20 * time.Millisecond,
		Keepalive: KeepaliveConfig{Interval: 150 * time.Millisecond, Timeout: 300 * time.Millisecond}}, counter)
	rc := dialRaw(t, ls.ln.Addr().String())
	rc.handshake()
	rc.writeHeaders(1, false, request("POST", "/")...)
	for i := range 3 {
		if err := rc.fr.WritePing(true, rc.waitPing()); err != nil {
			t.Fatal(err)
		}
		waitParks(t, &g, int32(i+2)) // woken by the answer, parked again
	}
	select {
	case err := <-ls.ended:
		if !errors.Is(err, ErrKeepaliveTimeout) {
			t.Errorf("ended(%v), want ErrKeepaliveTimeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a parked connection whose client stopped answering PINGs did not end")
	}
	for {
		if _, err := rc.tryRead(5 * time.Second); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the client's connection is still open after the keepalive timeout")
			}
			break
		}
	}
}

// A graceful shutdown reaches a parked connection: the client gets the GOAWAY notice and the
// PING; its answer wakes the connection (or, unanswered, the drain timeout passes while the reads
// are parked, and the final GOAWAY takes them back for the close's grace period); the final
// GOAWAY and the server's half-close follow, and ended reports an orderly end once the client
// closes too.
func TestShutdownParkedConnection(t *testing.T) {
	for _, answer := range []bool{true, false} {
		t.Run(fmt.Sprintf("answered=%v", answer), func(t *testing.T) {
			var g goroutineParker
			cfg := ServerConfig{ParkReads: g.park, QuietBeforePark: 20 * time.Millisecond, DrainTimeout: 100 * time.Millisecond}
			ls := startLeaving(t, cfg, counter)
			rc := dialRaw(t, ls.ln.Addr().String())
			rc.handshake()
			sc := <-ls.sc
			waitParks(t, &g, 1)
			sc.Shutdown()
			goaways := 0
			for {
				f, err := rc.tryRead(5 * time.Second)
				if err != nil {
					if errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatal("the connection did not close after the shutdown")
					}
					break // the server's half-close
				}
				switch f := f.(type) {
				case *h2.GoAwayFrame:
					goaways++
				case *h2.PingFrame:
					if answer && !f.IsAck() {
						rc.fr.WritePing(true, f.Data)
					}
				}
			}
			if goaways != 2 {
				t.Errorf("%d GOAWAY frames, want the notice and the final one", goaways)
			}
			rc.nc.Close()
			select {
			case err := <-ls.ended:
				if err != nil {
					t.Errorf("ended(%v), want nil for a graceful shutdown", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a parked connection did not end after its shutdown")
			}
		})
	}
}
