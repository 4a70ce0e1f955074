package e2e

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// Load and fault tests: a gigabyte through one tunnel, thousands of idle tunnels, slow readers,
// upstream resets, half-closes and a drain, all under load. Counts and times are bounded for a
// 2-core machine and the heavy tests skip under -short. They do not run in parallel, so their
// timings and memory readings are their own. Thousands of tunnels need the proxy built without
// -race (a -race process dies past 8128 goroutines); for the same reason the test side keeps no
// goroutine per idle tunnel.

// loadWait bounds every single step of a load test.
const loadWait = 10 * time.Second

// loadCluster lifts the cluster's circuit breakers above Envoy's default of 1024 connections and
// requests, which thousands of tunnels would trip.
const loadCluster = "circuit_breakers: {thresholds: [{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}]}"

// loadSkipShort skips a heavy test under -short.
func loadSkipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("load test: skipped with -short (it moves gigabytes or holds thousands of tunnels)")
	}
}

// loadEnv returns the positive integer in the environment variable name, or def.
func loadEnv(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// loadEnd is one end of a tunnel: its socket, read through the bytes that came with the head.
// It does not embed the socket, so io.Copy cannot read the socket behind those bytes' back.
type loadEnd struct {
	c *net.TCPConn
	r io.Reader
}

func (e *loadEnd) Read(p []byte) (int, error)  { return e.r.Read(p) }
func (e *loadEnd) Write(p []byte) (int, error) { return e.c.Write(p) }
func (e *loadEnd) CloseWrite() error           { return e.c.CloseWrite() }
func (e *loadEnd) Close() error                { return e.c.Close() }

// loadReadHead reads an HTTP head off c and returns it with c as a loadEnd. The small reader
// is dropped unless bytes past the head came with it, so an idle end holds no buffer.
func loadReadHead(c *net.TCPConn) (string, *loadEnd, error) {
	c.SetReadDeadline(time.Now().Add(loadWait))
	defer c.SetReadDeadline(time.Time{})
	br := bufio.NewReaderSize(c, 1024)
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		head.WriteString(line)
		if err != nil {
			return head.String(), nil, err
		}
		if line == "\r\n" {
			break
		}
	}
	e := &loadEnd{c: c, r: c}
	if n := br.Buffered(); n > 0 {
		early, _ := br.Peek(n)
		e.r = io.MultiReader(bytes.NewReader(bytes.Clone(early)), c)
	}
	return head.String(), e, nil
}

// loadUpstream answers every upgrade with a 101 and hands the upstream end of the tunnel to
// onTunnel with the request path. A few workers do the handshakes, so it keeps no goroutine per
// connection unless onTunnel starts one; onTunnel must not block.
type loadUpstream struct {
	ln      *net.TCPListener
	wg      sync.WaitGroup
	tunnels atomic.Int64 // handed to onTunnel so far
}

func newLoadUpstream(t *testing.T, upgrade string, onTunnel func(path string, e *loadEnd)) *loadUpstream {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &loadUpstream{ln: ln}
	accepted := make(chan *net.TCPConn, 256)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer close(accepted)
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range 8 {
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			for c := range accepted {
				head, e, err := loadReadHead(c)
				if f := strings.Fields(head); err != nil || len(f) < 2 {
					c.Close()
					continue
				}
				reply := upgSwitching(upgrade)
				if upgrade == "websocket" {
					reply = wsSwitching(head)
				}
				if _, err := io.WriteString(c, reply); err != nil {
					c.Close()
					continue
				}
				onTunnel(strings.Fields(head)[1], e)
				u.tunnels.Add(1)
			}
		}()
	}
	t.Cleanup(func() {
		ln.Close()
		u.wg.Wait()
	})
	return u
}

func (u *loadUpstream) port() int { return u.ln.Addr().(*net.TCPAddr).Port }

// keptEnds keeps the upstream ends a load upstream hands over (keep is an onTunnel), so that a
// test can close them all.
type keptEnds struct {
	mu   sync.Mutex
	ends []*loadEnd
}

func (k *keptEnds) keep(_ string, e *loadEnd) {
	k.mu.Lock()
	k.ends = append(k.ends, e)
	k.mu.Unlock()
}

// closeAll closes every end kept so far and forgets them.
func (k *keptEnds) closeAll() {
	k.mu.Lock()
	loadCloseAll(k.ends)
	k.ends = nil
	k.mu.Unlock()
}

// wait waits until n tunnels have been handed to onTunnel. A client can see its 101 a moment
// before its upstream end is handed over.
func (u *loadUpstream) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(loadWait)
	for u.tunnels.Load() < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%d tunnels at the upstream, want %d", u.tunnels.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// loadDial opens a tunnel through the proxy at addr with the upgrade request req and waits for
// the 101. rcvBuf > 0 sets the socket's receive buffer before it connects, so a client that does
// not read stalls the proxy early.
func loadDial(addr, req string, rcvBuf int) (*loadEnd, error) {
	d := net.Dialer{Timeout: loadWait}
	if rcvBuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			})
			return errors.Join(err, serr)
		}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := nc.(*net.TCPConn)
	c.SetWriteDeadline(time.Now().Add(loadWait))
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	c.SetWriteDeadline(time.Time{})
	head, e, err := loadReadHead(c)
	if err != nil || !strings.HasPrefix(head, "HTTP/1.1 101 ") {
		c.Close()
		return nil, fmt.Errorf("handshake: %q, %v", head, err)
	}
	return e, nil
}

// loadParallel runs f(0..n-1) on workers goroutines and returns the first error.
func loadParallel(n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					errs <- fmt.Errorf("#%d: %w", i, err)
					next.Store(int64(n)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// loadOpen opens tunnels from..to-1 of clients through p, 32 at a time, with the request
// reqFor(i), and waits until the upstream holds them. A failure reports the cluster's connect
// failures, the usual suspect on a loaded machine.
func loadOpen(t *testing.T, p *harness.Proxy, up *loadUpstream, clients []*loadEnd, from, to int, reqFor func(i int) string, rcvBuf int) {
	t.Helper()
	if err := loadParallel(to-from, 32, func(i int) error {
		var err error
		clients[from+i], err = loadDial(p.Addr(""), reqFor(from+i), rcvBuf)
		return err
	}); err != nil {
		st := p.Stats()
		t.Fatalf("%v\nupstream_cx_connect_fail %d, upstream_cx_connect_timeout %d, upstream_cx_overflow %d",
			err, st["cluster.app.upstream_cx_connect_fail"], st["cluster.app.upstream_cx_connect_timeout"], st["cluster.app.upstream_cx_overflow"])
	}
	up.wait(t, to)
}

// loadCloseAll closes every end.
func loadCloseAll(ends []*loadEnd) {
	for _, e := range ends {
		if e != nil {
			e.Close()
		}
	}
}

// loadSend writes header and then size bytes of an AES-CTR keystream (keyed by key) to w, half-
// closes, and returns the SHA-256 of everything written. size is a multiple of 1 MiB. The work
// per byte is assembly (AES, SHA-256), so it stays cheap in a -race test binary.
func loadSend(w *loadEnd, header []byte, size int64, key byte) ([32]byte, error) {
	h := sha256.New()
	h.Write(header)
	if _, err := w.Write(header); err != nil {
		return [32]byte{}, err
	}
	block, _ := aes.NewCipher(bytes.Repeat([]byte{key}, 16))
	ctr := cipher.NewCTR(block, make([]byte, 16))
	buf := make([]byte, 1<<20)
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		ctr.XORKeyStream(buf, buf)
		h.Write(buf)
		if _, err := w.Write(buf); err != nil {
			return [32]byte{}, err
		}
	}
	return [32]byte(h.Sum(nil)), w.CloseWrite()
}

// loadReceive reads r to its end and returns the byte count and their SHA-256.
func loadReceive(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 1<<20))
	return n, [32]byte(h.Sum(nil)), err
}

// loadFrameHeader is the header of one binary WebSocket frame with a 64-bit payload length,
// masked (with a zero key: the payload is sent as is) when it goes toward the server.
func loadFrameHeader(size int64, masked bool) []byte {
	h := []byte{0x82, 127}
	if masked {
		h[1] |= 0x80
	}
	h = binary.BigEndian.AppendUint64(h, uint64(size))
	if masked {
		h = append(h, 0, 0, 0, 0)
	}
	return h
}

// TestLoadGiBThroughOneTunnel: one WebSocket frame of 1 GiB each way, both at once, through
// one tunnel; each receiver's SHA-256 matches its sender's, and the byte counters are exact.
func TestLoadGiBThroughOneTunnel(t *testing.T) {
	loadSkipShort(t)
	const size = 1 << 30
	upCh := make(chan *loadEnd, 1)
	up := newLoadUpstream(t, "websocket", func(_ string, e *loadEnd) { upCh <- e })
	p := harness.Start(t, harness.Config{UpstreamPort: up.port(), HCM: upgHCMws}.YAML(), "-l", "info")
	c, err := loadDial(p.Addr(""), upgWSReq("/gib"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var u *loadEnd
	select {
	case u = <-upCh:
	case <-time.After(loadWait):
		t.Fatal("no tunnel at the upstream")
	}
	defer u.Close()
	deadline := time.Now().Add(55 * time.Second)
	c.c.SetDeadline(deadline)
	u.c.SetDeadline(deadline)

	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	var sentUp, sentDown, gotUp, gotDown result
	upHeader, downHeader := loadFrameHeader(size, true), loadFrameHeader(size, false)
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); sentUp.sum, sentUp.err = loadSend(c, upHeader, size, 1) }()
	go func() { defer wg.Done(); sentDown.sum, sentDown.err = loadSend(u, downHeader, size, 2) }()
	go func() { defer wg.Done(); gotUp.n, gotUp.sum, gotUp.err = loadReceive(u) }()
	go func() { defer wg.Done(); gotDown.n, gotDown.sum, gotDown.err = loadReceive(c) }()
	wg.Wait()
	d := time.Since(start)
	t.Logf("1 GiB each way at once in %v (%.0f MiB/s each way)", d.Round(time.Millisecond), float64(size>>20)/d.Seconds())
	for _, dir := range []struct {
		name       string
		sent, got  result
		headerSize int
	}{{"client→upstream", sentUp, gotUp, len(upHeader)}, {"upstream→client", sentDown, gotDown, len(downHeader)}} {
		if dir.sent.err != nil || dir.got.err != nil {
			t.Errorf("%s: send: %v, receive: %v", dir.name, dir.sent.err, dir.got.err)
			continue
		}
		if want := int64(size + dir.headerSize); dir.got.n != want || dir.got.sum != dir.sent.sum {
			t.Errorf("%s: received %d bytes with SHA-256 %x, sent %d with %x", dir.name, dir.got.n, dir.got.sum[:8], want, dir.sent.sum[:8])
		}
	}
	upgEnd(t, p)
	for stat, want := range map[string]int64{
		"http.ingress.upgrades.websocket.bytes_to_upstream":   size + int64(len(upHeader)),
		"http.ingress.upgrades.websocket.bytes_to_downstream": size + int64(len(downHeader)),
	} {
		if got := p.Stat(stat); got != want {
			t.Errorf("%s = %d, want %d", stat, got, want)
		}
	}
}

// loadPump writes buf to w over and over until a write fails, or reads r into buf until a read
// fails, adding the bytes it moved to moved.
func loadPump(w io.Writer, r io.Reader, buf []byte, moved *atomic.Int64) {
	for {
		var n int
		var err error
		if w != nil {
			n, err = w.Write(buf)
		} else {
			n, err = r.Read(buf)
		}
		moved.Add(int64(n))
		if err != nil {
			return
		}
	}
}

// TestLoadUpstreamReset: an upstream that resets its socket (SO_LINGER 0, then close) while
// bytes flow either way gets its client's connection closed promptly — right after the bytes it
// had sent before the reset — alone and with a hundred tunnels reset at once; the clients'
// writes fail too, and the tunnels are no longer counted.
func TestLoadUpstreamReset(t *testing.T) {
	loadSkipShort(t)
	tests := []struct {
		name     string
		down, up bool // bytes flow upstream→client, client→upstream
		tunnels  int
	}{
		{"flowing to the client", true, false, 1},
		{"flowing to the upstream", false, true, 1},
		{"flowing both ways", true, true, 1},
		{"100 tunnels flowing both ways", true, true, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			ups := map[string]*loadEnd{}
			up := newLoadUpstream(t, "websocket", func(path string, e *loadEnd) {
				mu.Lock()
				ups[path] = e
				mu.Unlock()
			})
			// The single tunnels run the race-checked binary; the hundred, which measure how
			// promptly connections close while a loop is saturated, run the real one (the race
			// detector slows the loop several times over).
			start := harness.Start
			if tc.tunnels > 1 {
				start = harness.StartNoRace
			}
			p := start(t, harness.Config{UpstreamPort: up.port(), HCM: upgHCMws}.YAML(), "-l", "info")
			clients := make([]*loadEnd, tc.tunnels)
			t.Cleanup(func() { loadCloseAll(clients) })
			loadOpen(t, p, up, clients, 0, tc.tunnels, func(i int) string { return upgWSReq(fmt.Sprintf("/reset/%d", i)) }, 0)
			mu.Lock()
			defer mu.Unlock()
			// Every end reads all the time; the writers run as the case says.
			type ended struct{ lastByte, closed time.Time }
			clientDone := make(chan ended, tc.tunnels)
			var moved atomic.Int64 // bytes read at either end
			var wg sync.WaitGroup
			data := make([]byte, 32<<10)
			rand.Read(data)
			for i, c := range clients {
				u := ups[fmt.Sprintf("/reset/%d", i)]
				wg.Add(2)
				go func() {
					defer wg.Done()
					buf := make([]byte, 32<<10)
					var last time.Time
					for {
						n, err := c.Read(buf)
						if n > 0 {
							moved.Add(int64(n))
							last = time.Now()
						}
						if err != nil {
							clientDone <- ended{last, time.Now()}
							return
						}
					}
				}()
				go func() { defer wg.Done(); loadPump(nil, u, make([]byte, 32<<10), &moved) }()
				if tc.down {
					wg.Add(1)
					go func() { defer wg.Done(); loadPump(u, nil, data, new(atomic.Int64)) }()
				}
				if tc.up {
					wg.Add(1)
					go func() { defer wg.Done(); loadPump(c, nil, data, new(atomic.Int64)) }()
				}
			}
			time.Sleep(300 * time.Millisecond)
			before := moved.Load()
			if before == 0 {
				t.Fatal("no bytes flowed before the reset")
			}
			reset := time.Now()
			for _, u := range ups {
				u.c.SetLinger(0)
				u.Close()
			}
			// The bytes the upstream sent before its reset still reach the client (they sit in
			// socket buffers, megabytes of them); then the connection must close at once.
			var slowest, lag time.Duration
			for range tc.tunnels {
				select {
				case e := <-clientDone:
					slowest = max(slowest, e.closed.Sub(reset))
					if e.lastByte.After(reset) {
						lag = max(lag, e.closed.Sub(e.lastByte))
					} else {
						lag = max(lag, e.closed.Sub(reset))
					}
				case <-time.After(loadWait):
					t.Fatalf("a client connection was still open %v after its upstream reset", loadWait)
				}
			}
			t.Logf("%d client connections closed within %v of the resets, at most %v after their last byte (%d KiB moved before)",
				tc.tunnels, slowest.Round(time.Millisecond), lag.Round(time.Millisecond), before>>10)
			// A connection the proxy failed to close would stay open until its idle timeout (300 s).
			// 10 s, not less: on a CI machine loaded with race-detector tests, draining the buffered
			// bytes of a hundred tunnels and the abort's turn on the loop once took 3.5 s.
			if lag > 10*time.Second {
				t.Errorf("a client connection closed %v after the last byte its reset upstream had sent, want promptly", lag)
			}
			// The clients' writers must fail on their own: the proxy closed the connection, it did
			// not just half-close it.
			pumpsDone := make(chan struct{})
			go func() { wg.Wait(); close(pumpsDone) }()
			select {
			case <-pumpsDone:
			case <-time.After(loadWait):
				t.Errorf("clients could still write %v after their upstreams reset", loadWait)
			}
			loadCloseAll(clients)
			<-pumpsDone
			upgEnd(t, p)
		})
	}
}

// TestLoadHalfClose: 200 tunnels at once, half of them half-closed first by the client and half
// by the upstream, with bytes flowing both ways before and after the half-close: each side gets
// exactly what the other sent, and every tunnel ends once both sides have.
func TestLoadHalfClose(t *testing.T) {
	loadSkipShort(t)
	const tunnels, part = 200, 64 << 10
	pattern := make([]byte, part)
	rand.Read(pattern)
	// payload is what one side sends in one part: the tunnel's id, then the pattern.
	payload := func(id int, what string) []byte {
		return append([]byte(fmt.Sprintf("%06d %s|", id, what)), pattern...)
	}
	var mu sync.Mutex
	ups := map[string]*loadEnd{}
	up := newLoadUpstream(t, "websocket", func(path string, e *loadEnd) {
		mu.Lock()
		ups[path] = e
		mu.Unlock()
	})
	p := harness.Start(t, harness.Config{UpstreamPort: up.port(), HCM: upgHCMws}.YAML(), "-l", "info")
	clients := make([]*loadEnd, tunnels)
	t.Cleanup(func() { loadCloseAll(clients) })
	loadOpen(t, p, up, clients, 0, len(clients), func(i int) string { return upgWSReq(fmt.Sprintf("/half/%d", i)) }, 0)
	mu.Lock()
	defer mu.Unlock()
	for _, u := range ups {
		t.Cleanup(func() { u.Close() })
	}

	errs := make(chan error, tunnels)
	start := time.Now()
	for i, c := range clients {
		u := ups[fmt.Sprintf("/half/%d", i)]
		c.c.SetDeadline(time.Now().Add(30 * time.Second))
		u.c.SetDeadline(time.Now().Add(30 * time.Second))
		// first half-closes first; second keeps sending after it sees that.
		first, second, name := c, u, "client first"
		if i%2 == 1 {
			first, second, name = u, c, "upstream first"
		}
		go func() {
			errs <- func() error {
				firstGot := make(chan []byte, 1)
				go func() { b, _ := io.ReadAll(first); firstGot <- b }()
				before := make(chan error, 1)
				go func() { _, err := second.Write(payload(i, "before")); before <- err }()
				if _, err := first.Write(payload(i, "last")); err != nil {
					return fmt.Errorf("%s #%d: write: %v", name, i, err)
				}
				if err := first.CloseWrite(); err != nil {
					return err
				}
				got, err := io.ReadAll(second)
				if err != nil || !bytes.Equal(got, payload(i, "last")) {
					return fmt.Errorf("%s #%d: the peer got %d bytes (%v) before EOF, want the %d sent", name, i, len(got), err, part)
				}
				if err := <-before; err != nil {
					return fmt.Errorf("%s #%d: write before: %v", name, i, err)
				}
				if _, err := second.Write(payload(i, "after")); err != nil {
					return fmt.Errorf("%s #%d: writing after the peer's half-close: %v", name, i, err)
				}
				if err := second.CloseWrite(); err != nil {
					return err
				}
				want := append(payload(i, "before"), payload(i, "after")...)
				if got := <-firstGot; !bytes.Equal(got, want) {
					return fmt.Errorf("%s #%d: the half-closed side got %d bytes, want the %d sent", name, i, len(got), len(want))
				}
				return nil
			}()
		}()
	}
	for range tunnels {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	t.Logf("%d tunnels half-closed and drained in %v", tunnels, time.Since(start).Round(time.Millisecond))
	upgEnd(t, p)
	if got := p.Stat("http.ingress.downstream_cx_upgrades_total"); got != tunnels {
		t.Errorf("downstream_cx_upgrades_total = %d, want %d", got, tunnels)
	}
}

// TestLoadFairness: while 100 tunnels push empty WebSocket frames both ways as fast as they can —
// more than the proxy's CPU can carry — a quiet tunnel's round trip and the admin endpoint still
// answer within a fraction of a second. A busy tunnel's pump always has bytes ready and never
// parks, so unless it yields, Go lets it keep a CPU for a 10 ms time slice at a time, and
// everything else waits for a hundred of those.
func TestLoadFairness(t *testing.T) {
	loadSkipShort(t)
	const busy = 100
	var mu sync.Mutex
	ups := map[string]*loadEnd{}
	up := newLoadUpstream(t, "websocket", func(path string, e *loadEnd) {
		mu.Lock()
		ups[path] = e
		mu.Unlock()
	})
	p := harness.StartNoRace(t, harness.Config{UpstreamPort: up.port(), HCM: upgHCMws}.YAML(), "-l", "info")
	clients := make([]*loadEnd, busy+1) // the last one is the quiet tunnel
	t.Cleanup(func() { loadCloseAll(clients) })
	loadOpen(t, p, up, clients, 0, len(clients), func(i int) string { return upgWSReq(fmt.Sprintf("/fair/%d", i)) }, 0)
	mu.Lock()
	defer mu.Unlock()
	var wg sync.WaitGroup
	var moved atomic.Int64
	// Zeros are, to the proxy, empty WebSocket frames of two bytes each: the most work per byte.
	zeros := make([]byte, 32<<10)
	for i, c := range clients[:busy] {
		u := ups[fmt.Sprintf("/fair/%d", i)]
		wg.Add(4)
		go func() { defer wg.Done(); loadPump(c, nil, zeros, &moved) }()
		go func() { defer wg.Done(); loadPump(nil, c, make([]byte, 32<<10), &moved) }()
		go func() { defer wg.Done(); loadPump(u, nil, zeros, &moved) }()
		go func() { defer wg.Done(); loadPump(nil, u, make([]byte, 32<<10), &moved) }()
	}
	quiet, quietUp := clients[busy], ups[fmt.Sprintf("/fair/%d", busy)]
	wg.Add(1)
	go func() { defer wg.Done(); io.Copy(quietUp, quietUp) }() // the quiet upstream echoes
	time.Sleep(500 * time.Millisecond)

	const rounds = 10
	var rtts, admin []time.Duration
	quiet.c.SetDeadline(time.Now().Add(30 * time.Second))
	for i := range rounds {
		ping := []byte(fmt.Sprintf("ping%02d", i))
		start := time.Now()
		if _, err := quiet.Write(ping); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(ping))
		if _, err := io.ReadFull(quiet, got); err != nil || !bytes.Equal(got, ping) {
			t.Fatalf("quiet tunnel echoed %q, %v; want %q", got, err, ping)
		}
		rtts = append(rtts, time.Since(start))
		start = time.Now()
		p.Stat("server.goroutines")
		admin = append(admin, time.Since(start))
		time.Sleep(50 * time.Millisecond)
	}
	moving := moved.Load()
	for _, c := range clients {
		c.Close()
	}
	for _, u := range ups {
		u.Close()
	}
	wg.Wait()
	slices.Sort(rtts)
	slices.Sort(admin)
	t.Logf("with %d busy tunnels (%d MiB moved): quiet round trip median %v, max %v; admin /stats median %v, max %v",
		busy, moving>>20, rtts[rounds/2].Round(time.Millisecond), rtts[rounds-1].Round(time.Millisecond),
		admin[rounds/2].Round(time.Millisecond), admin[rounds-1].Round(time.Millisecond))
	if rtts[rounds/2] > time.Second {
		t.Errorf("a quiet tunnel's median round trip is %v behind %d busy tunnels, want well under a second", rtts[rounds/2], busy)
	}
	if admin[rounds/2] > time.Second {
		t.Errorf("the admin endpoint's median answer takes %v behind %d busy tunnels, want well under a second", admin[rounds/2], busy)
	}
	upgEnd(t, p)
}
