package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// idleTunnelsDefault is the 9,000 tunnels, or fewer when the file descriptor limit cannot
// take them: this process holds two sockets per tunnel (client and upstream), as does the proxy.
func idleTunnelsDefault(t *testing.T) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 3000
	}
	n := min(9000, (int(lim.Cur)-1000)/2)
	if n < 9000 {
		t.Logf("RLIMIT_NOFILE %d: %d tunnels instead of 9000", lim.Cur, n)
	}
	return max(n, 100)
}

// TestLoadIdleTunnels holds thousands of idle WebSocket tunnels (9000, or
// SWITCHYARD_IDLE_TUNNELS) and measures what each costs the proxy. They are HTTP/1.1 tunnels with a
// router-only chain, so the tunnel engine carries them: no goroutine per tunnel (only the engine's
// loops, one per CPU) and under 4 KiB of memory; closing them all brings both back.
func TestLoadIdleTunnels(t *testing.T) {
	loadSkipShort(t)
	n := loadEnv(t, "SWITCHYARD_IDLE_TUNNELS", idleTunnelsDefault(t))
	var ups keptEnds
	up := newLoadUpstream(t, "websocket", ups.keep)
	p := harness.StartNoRace(t, harness.Config{UpstreamPort: up.port(), HCM: upgHCMws, Cluster: loadCluster}.YAML(), "-l", "info")
	clients := make([]*loadEnd, n)
	closeAll := func() {
		loadCloseAll(clients)
		ups.closeAll()
	}
	t.Cleanup(closeAll)
	open := func(from, to int) {
		t.Helper()
		start := time.Now()
		loadOpen(t, p, up, clients, from, to, func(int) string { return upgWSReq("/idle") }, 0)
		p.WaitStat(upgActiveStat, int64(to), loadWait)
		t.Logf("opened tunnels %d to %d in %v", from, to, time.Since(start).Round(time.Millisecond))
	}

	m := measureIdle(t, []*harness.Proxy{p}, n, "idle tunnels", open)
	m.checkFDs(t, "idle tunnel")
	kb := m.kb
	if m.g2-m.g0 > 16 {
		t.Errorf("%d goroutines for %d idle tunnels: the engine should hold them with none each", m.g2-m.g0, n)
	}
	// The target is 4 KB; 3.5-3.9 KiB is measured alone, up to 4.4 beside the other tests
	// (the records left after the hand-off are about 1.2 KiB of live heap; the rest is the garbage
	// collector's headroom, which depends on when it last ran). Before the parked record: 6-8.
	if kb >= 5 {
		t.Errorf("%.1f KiB of RSS per idle tunnel, want under 5 (3.5-4.4 measured)", kb)
	}

	// While they are open the engine carries them, but every gauge still counts them.
	for _, stat := range []string{"http.ingress.downstream_cx_active", "http.ingress.downstream_rq_active",
		"cluster.app.upstream_cx_active", "cluster.app.upstream_rq_active"} {
		if v := p.Stat(stat); v != int64(n) {
			t.Errorf("%s = %d with %d tunnels open", stat, v, n)
		}
	}
	closeAll()
	// Everything returns to where it was: the gauges, and the goroutines.
	p.WaitStat(upgActiveStat, 0, loadWait)
	for _, stat := range []string{"http.ingress.downstream_cx_active", "http.ingress.downstream_rq_active",
		"cluster.app.upstream_cx_active", "cluster.app.upstream_rq_active"} {
		p.WaitStat(stat, 0, loadWait)
	}
	waitGoroutines(t, p, m.g0)
}

// idleCost is what a batch of idle tunnels cost the proxy: goroutines before, halfway and after
// opening them, and RSS and goroutines per tunnel.
type idleCost struct {
	g0, g1, g2         int64
	perTunnel, kb, fds float64 // goroutines, KiB of RSS and descriptors per tunnel
	rss                int64   // the processes' RSS when measured, bytes
}

// checkFDs fails the test if a tunnel holds more descriptors than its two sockets: the process's
// descriptor limit caps how many tunnels it can carry.
func (m idleCost) checkFDs(t *testing.T, what string) {
	t.Helper()
	if m.fds > 2.05 {
		t.Errorf("%.2f descriptors per %s, want 2 (the client's socket and the upstream's)", m.fds, what)
	}
}

// measureIdle opens n tunnels in two halves with open and measures what they cost the proxies
// together (one, or both hops of the seed's deployment). The
// goroutines must grow by a constant per tunnel: the second half as much as the first, give or
// take a few goroutines of the proxy's own.
func measureIdle(t *testing.T, ps []*harness.Proxy, n int, what string, open func(from, to int)) idleCost {
	t.Helper()
	goroutines := func() (g int64) {
		for _, p := range ps {
			g += p.Goroutines()
		}
		return g
	}
	rss := func() (r int64) {
		for _, p := range ps {
			r += p.RSS()
		}
		return r
	}
	fds := func() (f int) {
		for _, p := range ps {
			f += p.FDs()
		}
		return f
	}
	var m idleCost
	var rss0, rss2 int64
	fd0 := fds()
	m.g0, rss0 = goroutines(), rss()
	open(0, n/2)
	m.g1 = goroutines()
	open(n/2, n)
	time.Sleep(500 * time.Millisecond) // let the handshakes' garbage be collected
	m.g2, rss2 = goroutines(), rss()
	m.perTunnel = float64(m.g2-m.g0) / float64(n)
	m.kb = float64(rss2-rss0) / 1024 / float64(n)
	m.rss = rss2
	m.fds = float64(fds()-fd0) / float64(n)
	t.Logf("%d %s: %.2f goroutines, %.2f descriptors and %.1f KiB of RSS each (RSS %d → %d MiB; goroutines %d → %d → %d)",
		n, what, m.perTunnel, m.fds, m.kb, rss0>>20, rss2>>20, m.g0, m.g1, m.g2)
	if first, second := m.g1-m.g0, m.g2-m.g1; first-second > 8 || second-first > 8 {
		t.Errorf("goroutines grew by %d for the first %d tunnels and by %d for the next %d: not a constant per tunnel",
			first, n/2, second, n-n/2)
	}
	return m
}

// waitQuietRelease waits for the proxy, quiet since its tunnels opened, to give the burst's
// memory back (server.memory_quiet_releases, package server's release.go): within 15 s, and its
// RSS falls below what it was when measured (rss) by at least 2 MiB.
func waitQuietRelease(t *testing.T, p *harness.Proxy, rss int64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for p.Stat("server.memory_quiet_releases") == 0 {
		if time.Now().After(deadline) {
			t.Errorf("no quiet release within 15 s of the tunnels opening (RSS %d MiB)", p.RSS()>>20)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	after := p.RSS()
	t.Logf("quiet release: RSS %d → %d MiB", rss>>20, after>>20)
	if after > rss-2<<20 {
		t.Errorf("after the quiet release the RSS is %d MiB, want at least 2 below the %d MiB measured before it", after>>20, rss>>20)
	}
}

// waitParked waits for the proxy's quiet HTTP/2 connections to park their reads on the tunnel
// engine: a connection's reader goroutine returns once its client has been quiet for a second,
// or at most two; on a loaded machine the last ones may take longer, so it then waits until the
// proxy's goroutine count has held still for a second and a half (at most 15 s).
func waitParked(p *harness.Proxy) {
	time.Sleep(2200 * time.Millisecond)
	deadline := time.Now().Add(15 * time.Second)
	for last, still := p.Goroutines(), 0; still < 3 && time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		if g := p.Goroutines(); g != last {
			last, still = g, 0
		} else {
			still++
		}
	}
}

// waitGoroutines waits until the proxy is back to at most g0 goroutines.
func waitGoroutines(t *testing.T, p *harness.Proxy, g0 int64) {
	t.Helper()
	deadline := time.Now().Add(loadWait)
	for p.Goroutines() > g0 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines %d after every tunnel closed, %d before any opened", p.Goroutines(), g0)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLoadIdleH2Tunnels holds idle WebSockets over HTTP/2 (RFC 8441; 1000, or
// SWITCHYARD_IDLE_H2_TUNNELS), each on a connection of its own as a browser's first WebSocket to a
// host would be, and measures what each costs the proxy: no goroutine (none waits for the
// connection's reads, writes or the client's bytes), and memory with no per-connection read or
// write buffer held while idle. Closing them brings everything back.
func TestLoadIdleH2Tunnels(t *testing.T) {
	loadSkipShort(t)
	n := loadEnv(t, "SWITCHYARD_IDLE_H2_TUNNELS", 1000)
	var ups keptEnds
	up := newLoadUpstream(t, "websocket", ups.keep)
	hcm := "codec_type: AUTO\nhttp2_protocol_options: {allow_connect: true}\n" + upgHCMws
	p := harness.StartNoRace(t, harness.Config{UpstreamPort: up.port(), HCM: hcm, Cluster: loadCluster}.YAML(), "-l", "info")
	clients := make([]*h2Conn, n)
	closeAll := func() {
		for _, c := range clients {
			if c != nil {
				c.close()
			}
		}
		ups.closeAll()
	}
	t.Cleanup(closeAll)
	open := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			c := dialH2(t, p.Addr(""))
			clients[i] = c
			if h := c.waitHead(c.connect("websocket", "/idle")); h[":status"] != "200" {
				t.Fatalf("tunnel %d: :status %q, want 200", i, h[":status"])
			}
		}
		up.wait(t, to)
		p.WaitStat(upgActiveStat, int64(to), loadWait)
		waitParked(p)
	}

	m := measureIdle(t, []*harness.Proxy{p}, n, "idle HTTP/2 tunnels", open)
	m.checkFDs(t, "idle HTTP/2 tunnel (one per connection)")
	perTunnel, kb := m.perTunnel, m.kb
	// None: the engine reads the upstream and, once the client is quiet, the connection; the
	// stream's goroutine has left (TunnelLeaver), and the connection's writer and the stream's
	// pump of client bytes run only while there is something to write or to pass on.
	if perTunnel > 0.1 {
		t.Errorf("%.2f goroutines per idle HTTP/2 tunnel, want none", perTunnel)
	}
	// 19.2 KiB measured (20.0 while the last header block's map stayed; 21.6-22 with the standard
	// library's contexts and the connection's write scratch held, 25-26 with the connection's reader waiting on the socket, 33-34 with the
	// stream's goroutine waiting for the tunnel's end too, 48-57 with the connection's buffers
	// held, 40 with its writer goroutine parked, 35 with a goroutine waiting for the client's
	// bytes).
	if kb >= 23 {
		t.Errorf("%.1f KiB of RSS per idle HTTP/2 tunnel, want under 23", kb)
	}
	waitQuietRelease(t, p, m.rss)
	closeAll()
	p.WaitStat(upgActiveStat, 0, loadWait)
	p.WaitStat("http.ingress.downstream_cx_active", 0, loadWait)
	waitGoroutines(t, p, m.g0)
}

// TestLoadIdleTwoHopTunnels holds idle WebSockets through the seed's deployment (client —H1→
// front —H2→ sidecar —H1→ app; 1000, or SWITCHYARD_IDLE_2HOP_TUNNELS) and measures what each costs
// the two proxies together: no goroutine (the front's engine reads its quiet clients, the sidecar's
// stream leaves its tunnel to callbacks, and the upstream side of each hop runs on demand or on
// the engine). Closing them brings both back.
func TestLoadIdleTwoHopTunnels(t *testing.T) {
	loadSkipShort(t)
	n := loadEnv(t, "SWITCHYARD_IDLE_2HOP_TUNNELS", 1000)
	var ups keptEnds
	up := newLoadUpstream(t, "websocket", ups.keep)
	const upgrades = "[{upgrade_type: websocket}]"
	sidecar := harness.StartNoRace(t, seedYAML("sidecar", "          codec_type: AUTO\n          http2_protocol_options: {allow_connect: true}", up.port(), false, upgrades))
	front := harness.StartNoRace(t, seedYAML("front", "          codec_type: HTTP1", portOf(t, sidecar.Addr("")), true, upgrades))
	clients := make([]*loadEnd, n)
	closeAll := func() {
		loadCloseAll(clients)
		ups.closeAll()
	}
	t.Cleanup(closeAll)
	open := func(from, to int) {
		t.Helper()
		loadOpen(t, front, up, clients, from, to, func(int) string { return upgWSReq("/idle") }, 0)
		front.WaitStat("http.front.downstream_cx_upgrades_active", int64(to), loadWait)
		sidecar.WaitStat("http.sidecar.downstream_cx_upgrades_active", int64(to), loadWait)
	}
	// Warm the front's pool: its HTTP/2 connections to the sidecar outlive the tunnels, so the
	// baselines are taken with them open.
	open(0, 64)
	closeAll()
	front.WaitStat("http.front.downstream_cx_upgrades_active", 0, loadWait)
	sidecar.WaitStat("http.sidecar.downstream_cx_upgrades_active", 0, loadWait)
	clients = make([]*loadEnd, n)
	up.tunnels.Store(0)
	g0front, g0sidecar := front.Goroutines(), sidecar.Goroutines()
	m := measureIdle(t, []*harness.Proxy{front, sidecar}, n, "idle two-hop tunnels", open)
	if m.perTunnel > 0.1 {
		t.Errorf("%.2f goroutines per idle two-hop tunnel (both proxies), want none", m.perTunnel)
	}
	// 15.4 KiB measured for the pair with the pool warm (16.4 while the headers and the unused
	// channels stayed, 18.6 with the standard library's contexts, 21.5-22 with the front's goroutine waiting for its client's bytes, 28-30 with the
	// sidecar's stream goroutine waiting for the tunnel's end too, 6-7 KiB more again with a
	// goroutine per tunnel waiting on the upstream in the front).
	if m.kb >= 21 {
		t.Errorf("%.1f KiB of RSS per idle two-hop tunnel (both proxies), want under 21", m.kb)
	}
	closeAll()
	front.WaitStat("http.front.downstream_cx_upgrades_active", 0, loadWait)
	sidecar.WaitStat("http.sidecar.downstream_cx_upgrades_active", 0, loadWait)
	// Give or take the goroutines of HTTP/2 connections the pool may have added in the burst.
	waitGoroutines(t, front, g0front+8)
	waitGoroutines(t, sidecar, g0sidecar+8)
}

// TestLoadSlowReaders: 1000 tunnels (or SWITCHYARD_SLOW_TUNNELS) whose upstream writes 1 MiB
// (or SWITCHYARD_SLOW_MIB) as fast as it can while the client reads nothing for 2 s. The bytes
// pile up in socket buffers, never in the proxy: its memory grows by less than the per-connection
// buffer limit (64 KiB) per tunnel, far less than what went through it. Then the clients read,
// and every byte arrives in order.
//
// On loopback the kernel takes about 1.5 MiB per tunnel before the upstream blocks (the proxy's
// send buffer toward the client grows to ten 64 KiB segments), so at this scale it is the
// kernel, not the proxy, that pushes back; TestUpgradeSlowReader shows the proxy pushing back on
// one tunnel. More per tunnel here would fill the machine's TCP memory (net.ipv4.tcp_mem).
func TestLoadSlowReaders(t *testing.T) {
	loadSkipShort(t)
	n := loadEnv(t, "SWITCHYARD_SLOW_TUNNELS", 1000)
	l := newSlowReaderLoad(t, loadEnv(t, "SWITCHYARD_SLOW_MIB", 1)<<20)
	close(l.write) // at once: an idle HTTP/1.1 tunnel costs next to nothing
	p := harness.StartNoRace(t, harness.Config{UpstreamPort: l.up.port(), HCM: upgHCMws, Cluster: loadCluster, BufferLimit: slowLimit}.YAML(), "-l", "info")
	clients := make([]*loadEnd, n)
	t.Cleanup(func() {
		loadCloseAll(clients)
		l.ups.closeAll()
	})

	rss0 := p.RSS()
	start := time.Now()
	loadOpen(t, p, l.up, clients, 0, n, func(int) string { return upgWSReq("/slow") }, 16<<10)
	t.Logf("opened %d tunnels in %v", n, time.Since(start).Round(time.Millisecond))
	l.stall(t, p, n, rss0)

	start = time.Now()
	perTunnel := len(l.payload)
	if err := loadParallel(n, n, func(i int) error {
		c := clients[i]
		c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 32<<10)
		off := 0
		for {
			k, err := c.Read(buf)
			if off+k > perTunnel || !bytes.Equal(buf[:k], l.payload[off:off+k]) {
				return fmt.Errorf("bytes %d to %d differ from what the upstream sent", off, off+k)
			}
			off += k
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("after %d bytes: %v", off, err)
			}
		}
		if off != perTunnel {
			return fmt.Errorf("got %d bytes before EOF, want %d", off, perTunnel)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("the clients read %d MiB in %v", int64(n*perTunnel)>>20, time.Since(start).Round(time.Millisecond))
	l.writers.Wait()
	loadCloseAll(clients)
	upgEnd(t, p)
}

// TestLoadSlowReadersH2 is TestLoadSlowReaders with WebSockets over HTTP/2 (1000, or
// SWITCHYARD_SLOW_H2_TUNNELS, one per connection, 512 KiB each): the client's stream windows
// (256 KiB) run out while it reads nothing, so the proxy holds the upstream's bytes back itself —
// the engine stops reading a tunnel's upstream while what it read last waits for the window — and
// its memory still grows by less than the buffer limit per tunnel. Then every byte arrives in
// order, and each stream ends.
func TestLoadSlowReadersH2(t *testing.T) {
	loadSkipShort(t)
	n := loadEnv(t, "SWITCHYARD_SLOW_H2_TUNNELS", 1000)
	l := newSlowReaderLoad(t, 512<<10)
	hcm := "codec_type: AUTO\nhttp2_protocol_options: {allow_connect: true}\n" + upgHCMws
	p := harness.StartNoRace(t, harness.Config{UpstreamPort: l.up.port(), HCM: hcm, Cluster: loadCluster, BufferLimit: slowLimit}.YAML(), "-l", "info")
	clients := make([]*h2Conn, n)
	ids := make([]uint32, n)
	t.Cleanup(func() {
		for _, c := range clients {
			if c != nil {
				c.close()
			}
		}
		l.ups.closeAll()
	})

	rss0 := p.RSS()
	start := time.Now()
	for i := range clients {
		c := dialH2(t, p.Addr(""), http2.Setting{ID: http2.SettingInitialWindowSize, Val: 256 << 10})
		c.write(func() error { return c.fr.WriteWindowUpdate(0, 1<<30) })
		clients[i] = c
		c.hold.Lock() // after the first frame it reads, it reads nothing more
		ids[i] = c.connect("websocket", "/slow")
	}
	l.up.wait(t, n)
	p.WaitStat(upgActiveStat, int64(n), loadWait)
	time.Sleep(time.Second)
	rss1 := p.RSS()
	t.Logf("opened %d tunnels in %v: %.1f KiB each while idle", n, time.Since(start).Round(time.Millisecond), float64(rss1-rss0)/1024/float64(n))
	// The upstream writes from now on: what the proxy's memory grows by is what slow readers cost.
	close(l.write)
	l.stall(t, p, n, rss1)

	start = time.Now()
	for _, c := range clients {
		c.hold.Unlock()
	}
	// One deadline for the whole phase, not one per tunnel: every client reads at once and the
	// proxy shares its time among them, so the first tunnel ends about when the last does. What
	// sets the pace is this test's own client (3.8 s without -race, ~27 s with it on two cores,
	// more while other packages' tests run beside it), so the bound is wide.
	readBy := start.Add(120 * time.Second)
	for i, c := range clients {
		var got []byte
		c.wait(fmt.Sprintf("tunnel %d's bytes", i), time.Until(readBy), func() bool {
			s := c.stream(ids[i])
			got = s.data.Bytes()
			return len(got) >= len(l.payload) || s.rst != nil
		})
		if !bytes.Equal(got, l.payload) {
			t.Fatalf("tunnel %d: %d bytes, not the %d the upstream sent, in order", i, len(got), len(l.payload))
		}
	}
	t.Logf("the clients read %d MiB in %v", int64(n*len(l.payload))>>20, time.Since(start).Round(time.Millisecond))
	l.writers.Wait()
	for i, c := range clients {
		c.wait("END_STREAM", 10*time.Second, func() bool { return c.stream(ids[i]).end })
		c.close()
	}
	upgEnd(t, p)
}

// slowReaderLoad is the upstream of the slow-reader tests: it writes the payload into every
// tunnel as fast as the proxy takes it, then half-closes.
type slowReaderLoad struct {
	payload []byte
	written atomic.Int64 // bytes the upstream has written, all tunnels together
	ups     keptEnds
	writers sync.WaitGroup
	up      *loadUpstream
	write   chan struct{} // the upstream writes once it is closed
}

// The upstream's write size (and send buffer), and the proxy's per-connection buffer limit.
const slowChunk, slowLimit = 16 << 10, 64 << 10

func newSlowReaderLoad(t *testing.T, perTunnel int) *slowReaderLoad {
	l := &slowReaderLoad{payload: make([]byte, perTunnel), write: make(chan struct{})}
	rand.Read(l.payload)
	l.up = newLoadUpstream(t, "websocket", func(path string, e *loadEnd) {
		e.c.SetWriteBuffer(slowChunk)
		l.ups.keep(path, e)
		l.writers.Add(1)
		go func() {
			defer l.writers.Done()
			<-l.write
			for off := 0; off < perTunnel; off += slowChunk {
				k, err := e.Write(l.payload[off : off+slowChunk])
				l.written.Add(int64(k))
				if err != nil {
					return
				}
			}
			e.CloseWrite()
		}()
	})
	return l
}

// stall samples the proxy's memory for 2 s while nobody reads, and checks that it grew by less
// than the buffer limit per tunnel (and 32 MiB), while more than twice that went into it.
func (l *slowReaderLoad) stall(t *testing.T, p *harness.Proxy, n int, rss0 int64) {
	t.Helper()
	peak := p.RSS()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
		peak = max(peak, p.RSS())
	}
	stalled := l.written.Load()
	growth := peak - rss0
	bound := int64(n)*slowLimit + 32<<20
	t.Logf("%d slow readers: %d of %d MiB written while nobody read; proxy RSS %d → %d MiB peak: %.1f KiB per tunnel (bound %d MiB)",
		n, stalled>>20, int64(n*len(l.payload))>>20, rss0>>20, peak>>20, float64(growth)/1024/float64(n), bound>>20)
	if growth >= bound {
		t.Errorf("proxy RSS grew by %d MiB for %d stalled tunnels, want under %d MiB", growth>>20, n, bound>>20)
	}
	if stalled < 2*bound {
		t.Errorf("only %d MiB went into the proxy while nobody read: too little to tell buffering from not", stalled>>20)
	}
}
