package e2e

import (
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
	"golang.org/x/net/http2"
)

// TestH2TunnelsEndWithoutTheirGoroutines: the tunnels of an HTTP/2 client to an HTTP/1.1 app
// through a router-only chain hold no goroutine while open (the engine reads the app, the
// connection's reader passes the client's bytes, and the stream's goroutine leaves), and every way
// a tunnel can end still ends it completely: the app closing first, the client half-closing first,
// the client's RST_STREAM, the client's connection dropped. The connection's other tunnels go on
// unharmed, and at the end the streams, requests and upgrades are counted back to zero and the
// proxy's goroutines are back where they were.
func TestH2TunnelsEndWithoutTheirGoroutines(t *testing.T) {
	t.Parallel()
	const perWay = 10
	app := harness.NewRawUpstream(t)
	p := harness.Start(t, seedYAML("a", h2ListenerConnect, app.Port(), false, "[{upgrade_type: foo}]"))
	g0 := p.Goroutines()
	c := dialH2(t, p.Addr(""))
	defer c.close()

	type tun struct {
		id uint32
		up *harness.RawConn
	}
	open := func() tun {
		id, u := h2OpenFoo(t, c, app)
		return tun{id, u}
	}
	// The first tunnel brings the connection's own goroutines; the others must add none.
	tuns := []tun{open()}
	p.WaitStat("http.a.downstream_cx_upgrades_active", 1, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // the first tunnel's goroutines that end, ended
	g1 := p.Goroutines()
	for len(tuns) < 4*perWay {
		tuns = append(tuns, open())
	}
	p.WaitStat("http.a.downstream_cx_upgrades_active", 4*perWay, 5*time.Second)
	// Every tunnel carries both ways once the stream's goroutine has gone.
	for i, tu := range tuns {
		c.send(tu.id, fmt.Sprintf("ping-%d;", i), false)
		tu.up.WaitForData(fmt.Sprintf("ping-%d;", i), 5*time.Second)
		tu.up.Write(fmt.Sprintf("pong-%d;", i))
		c.waitData(tu.id, fmt.Sprintf("pong-%d;", i))
	}
	if g := p.Goroutines(); g-g1 > 5 {
		t.Errorf("%d open tunnels hold %d goroutines more than one did: want none each", 4*perWay-1, g-g1)
	}

	appFirst, clientFirst, reset, dropped := tuns[1:1+perWay], tuns[1+perWay:1+2*perWay], tuns[1+2*perWay:1+3*perWay], append(tuns[1+3*perWay:], tuns[0])
	for _, tu := range appFirst { // the app closes; the client sees END_STREAM and ends its side
		tu.up.Close()
		c.waitEnd(tu.id)
		c.send(tu.id, "", true)
	}
	for _, tu := range clientFirst { // the client half-closes; the app answers, then closes
		c.send(tu.id, "bye;", true)
		if got := tu.up.WaitForEOF(5 * time.Second); got[len(got)-4:] != "bye;" {
			t.Errorf("stream %d: the app got %q, want it to end with bye;", tu.id, got)
		}
		tu.up.Write("last;")
		tu.up.Close()
		c.waitData(tu.id, "last;")
		c.waitEnd(tu.id)
	}
	for _, tu := range reset { // the client resets: the app's connection closes
		c.reset(tu.id, http2.ErrCodeCancel)
		tu.up.WaitForEOF(5 * time.Second)
	}
	p.WaitStat("http.a.downstream_cx_upgrades_active", int64(len(dropped)), 5*time.Second)
	p.WaitStat("http.a.http2.streams_active", int64(len(dropped)), 5*time.Second)
	p.WaitStat("http.a.downstream_rq_active", int64(len(dropped)), 5*time.Second)
	for _, tu := range dropped { // still carrying, both ways
		c.send(tu.id, "again;", false)
		tu.up.WaitForData("again;", 5*time.Second)
		tu.up.Write("still;")
		c.waitData(tu.id, "still;")
	}
	c.close() // the client's connection drops: every tunnel on it ends
	for _, tu := range dropped {
		tu.up.WaitForEOF(5 * time.Second)
	}
	for _, s := range []string{"http.a.downstream_cx_upgrades_active", "http.a.http2.streams_active",
		"http.a.downstream_rq_active", "cluster.next.upstream_rq_active", "http.a.downstream_cx_active"} {
		p.WaitStat(s, 0, 5*time.Second)
	}
	waitGoroutines(t, p, g0)
}

// TestTwoHopTunnelsEndWithoutTheirGoroutines: through the seed's deployment, an open tunnel holds
// no goroutine in the sidecar (its stream has left the tunnel to callbacks) and at most one in the
// front (which reads a client that has just talked on a goroutine, and a quiet one on the engine),
// and every way a tunnel ends still ends it completely in both: the app closing first, the
// client half-closing first, the client resetting its connection, the app resetting its
// connection (which the sidecar turns into a stream reset, and the front into the client
// connection's close). Both proxies count everything back to zero, and the front's goroutines are
// back where they were.
func TestTwoHopTunnelsEndWithoutTheirGoroutines(t *testing.T) {
	t.Parallel()
	const perWay = 5
	app := harness.NewRawUpstream(t)
	front, sidecar := startSeed(t, app.Port())
	open := func() hopTunnel { return openFooThrough(t, front, app) }
	// The first tunnel brings the HTTP/2 connection between the proxies; the others add nothing.
	tuns := []hopTunnel{open()}
	front.WaitStat("http.front.downstream_cx_upgrades_active", 1, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // the first tunnel's goroutines that end, ended
	g1front, g1sidecar := front.Goroutines(), sidecar.Goroutines()
	for len(tuns) < 4*perWay {
		tuns = append(tuns, open())
	}
	front.WaitStat("http.front.downstream_cx_upgrades_active", 4*perWay, 5*time.Second)
	sidecar.WaitStat("http.sidecar.downstream_cx_upgrades_active", 4*perWay, 5*time.Second)
	for i, tu := range tuns { // every tunnel carries both ways with no goroutine of its own
		tu.client.Write(fmt.Sprintf("ping-%d;", i))
		tu.up.WaitForData(fmt.Sprintf("ping-%d;", i), 5*time.Second)
		tu.up.Write(fmt.Sprintf("pong-%d;", i))
		tu.client.WaitForData(fmt.Sprintf("pong-%d;", i), 5*time.Second)
	}
	if g := sidecar.Goroutines(); g-g1sidecar > 5 {
		t.Errorf("sidecar: %d open tunnels hold %d goroutines more than one did: want none each", 4*perWay-1, g-g1sidecar)
	}
	if g := front.Goroutines(); g-g1front > 4*perWay-1+5 {
		t.Errorf("front: %d open tunnels hold %d goroutines more than one did: want one each", 4*perWay-1, g-g1front)
	}

	reset := func(c *harness.RawConn) {
		c.Conn().(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	for i, tu := range tuns {
		switch i % 4 {
		case 0: // the app closes; the client sees the FIN and closes too
			tu.up.Close()
			tu.client.WaitForEOF(5 * time.Second)
			tu.client.Close()
		case 1: // the client half-closes; the app answers, then closes
			tu.client.Write("bye;")
			tu.client.CloseWrite()
			if got := tu.up.WaitForEOF(5 * time.Second); !strings.HasSuffix(got, "bye;") {
				t.Errorf("tunnel %d: the app got %q, want it to end with bye;", i, got)
			}
			tu.up.Write("last;")
			tu.up.Close()
			if got := tu.client.WaitForEOF(5 * time.Second); !strings.HasSuffix(got, "last;") {
				t.Errorf("tunnel %d: the client got %q, want it to end with last;", i, got)
			}
			tu.client.Close()
		case 2: // the client resets its connection
			reset(tu.client)
			tu.up.WaitForEOF(5 * time.Second)
		case 3: // the app resets its connection: the client's connection closes
			reset(tu.up)
			tu.client.WaitForEOF(5 * time.Second)
			tu.client.Close()
		}
	}
	for _, s := range []string{"http.front.downstream_cx_upgrades_active", "http.front.downstream_rq_active",
		"http.front.downstream_cx_active", "cluster.next.upstream_rq_active"} {
		front.WaitStat(s, 0, 5*time.Second)
	}
	for _, s := range []string{"http.sidecar.downstream_cx_upgrades_active", "http.sidecar.downstream_rq_active",
		"http.sidecar.http2.streams_active", "cluster.next.upstream_rq_active"} {
		sidecar.WaitStat(s, 0, 5*time.Second)
	}
	// The front's pool keeps its HTTP/2 connection to the sidecar, and that connection's goroutines.
	waitGoroutines(t, front, g1front)
}

// TestTwoHopQuietClientGoesToTheEngine: the front reads a quiet client on the tunnel engine and a
// talking one on a goroutine of its own. A tunnel that has been quiet for over a second holds no
// goroutine in the front; when its client talks again (here a 1 MiB burst against a 32 KiB
// buffer limit, more than the engine's reads may queue before the pump takes them back: they
// pause and resume on the way) every byte reaches the app in order, the app's answer comes
// back, and once quiet again the tunnel holds no goroutine. The tunnels then end, and the front
// counts everything back.
func TestTwoHopQuietClientGoesToTheEngine(t *testing.T) {
	t.Parallel()
	const n = 8
	app := harness.NewRawUpstream(t)
	upgrades := "[{upgrade_type: foo}]"
	sidecar := harness.Start(t, seedYAML("sidecar", h2ListenerConnect, app.Port(), false, upgrades))
	frontYAML := seedYAML("front", "          codec_type: HTTP1", portOf(t, sidecar.Addr("")), true, upgrades)
	listener := "  - name: front\n    address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n"
	if !strings.Contains(frontYAML, listener) {
		t.Fatalf("the seed's front config has no listener line %q", listener)
	}
	frontYAML = strings.Replace(frontYAML, listener, listener+"    per_connection_buffer_limit_bytes: 32768\n", 1)
	front := harness.Start(t, frontYAML)
	open := func() hopTunnel { return openFooThrough(t, front, app) }
	tuns := []hopTunnel{open()}
	front.WaitStat("http.front.downstream_cx_upgrades_active", 1, 5*time.Second)
	time.Sleep(100 * time.Millisecond)
	g1 := front.Goroutines()
	for len(tuns) < n {
		tuns = append(tuns, open())
	}
	quiet := func(when string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for front.Goroutines() > g1+3 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the front holds %d goroutines, %d with one quiet tunnel: quiet tunnels should hold none", when, front.Goroutines(), g1)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	quiet("after the upgrades")
	burst := make([]byte, 1<<20)
	for i := range burst {
		burst[i] = byte('a' + i%26)
	}
	for round := 0; round < 2; round++ {
		for i, tu := range tuns {
			head := fmt.Sprintf("round-%d-%d;", round, i)
			tu.client.Write(head + string(burst) + "end;")
		}
		for i, tu := range tuns {
			head := fmt.Sprintf("round-%d-%d;", round, i)
			got := tu.up.WaitForData(head+string(burst)+"end;", 10*time.Second)
			if !strings.HasSuffix(got, head+string(burst)+"end;") {
				t.Fatalf("round %d, tunnel %d: the app's bytes do not end with the burst, in order", round, i)
			}
			tu.up.Write(head + "ack;")
			tu.client.WaitForData(head+"ack;", 5*time.Second)
		}
		quiet(fmt.Sprintf("after round %d", round))
	}
	for _, tu := range tuns {
		tu.client.Close()
		tu.up.WaitForEOF(5 * time.Second)
		tu.up.Close()
	}
	for _, s := range []string{"http.front.downstream_cx_upgrades_active", "http.front.downstream_rq_active",
		"http.front.downstream_cx_active"} {
		front.WaitStat(s, 0, 5*time.Second)
	}
	waitGoroutines(t, front, g1)
}

// hopTunnel is a "foo" tunnel through a proxy: the client's end and the app's.
type hopTunnel struct{ client, up *harness.RawConn }

// openFooThrough opens a "foo" tunnel from a new HTTP/1.1 client through p to app, which accepts it.
func openFooThrough(t *testing.T, p *harness.Proxy, app *harness.RawUpstream) hopTunnel {
	t.Helper()
	c, u, _ := upgOpenTunnel(t, p, app, upgReq("/", "upgrade", "foo"), "foo")
	return hopTunnel{c, u}
}

// TestQuietH2ConnectionsGoToTheEngine: an HTTP/2 connection whose client has been quiet for a
// second is read by the tunnel engine, and holds no goroutine. Whatever its client then sends is
// handled as before — a 512 KiB burst on one tunnel (more than the engine's reads queue before a
// goroutine takes them back: they pause on the way), a stream reset, the connection dropped
// without a word — and a connection that is quiet again goes back to the engine. A drain's GOAWAY
// reaches a quiet connection, and the proxy's exit closes one.
func TestQuietH2ConnectionsGoToTheEngine(t *testing.T) {
	t.Parallel()
	const conns, perConn = 3, 4
	app := harness.NewRawUpstream(t)
	p := harness.Start(t, seedYAML("a", h2ListenerConnect, app.Port(), false, "[{upgrade_type: foo}]"))
	type conn struct {
		c   *h2Conn
		ids []uint32
		ups []*harness.RawConn
	}
	cs := make([]conn, conns)
	open := func(i, tunnels int) {
		cs[i].c = dialH2(t, p.Addr(""))
		for range tunnels {
			id, u := h2OpenFoo(t, cs[i].c, app)
			cs[i].ids, cs[i].ups = append(cs[i].ids, id), append(cs[i].ups, u)
		}
	}
	var g1 int64
	quiet := func(when string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for p.Goroutines() > g1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d goroutines, %d with one quiet connection: quiet connections should hold none", when, p.Goroutines(), g1)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The first connection's tunnels start every loop of the engine (one per CPU, each a goroutine
	// of its own, taken in turn); once it is quiet, the others must add no goroutine.
	open(0, max(perConn, runtime.NumCPU()))
	waitParked(p)
	g1 = p.Goroutines()
	for i := 1; i < conns; i++ {
		open(i, perConn)
	}
	total := len(cs[0].ids) + (conns-1)*perConn
	p.WaitStat("http.a.downstream_cx_upgrades_active", int64(total), 5*time.Second)
	quiet("after the upgrades")

	// A burst from a quiet client, in 16 KiB frames, and the app's answer.
	a := cs[0]
	chunk := strings.Repeat("0123456789abcdef", 1024)
	var want strings.Builder
	for i := range 32 {
		frame := fmt.Sprintf("%03d", i) + chunk[3:]
		a.c.send(a.ids[0], frame, false)
		want.WriteString(frame)
	}
	if got := a.ups[0].WaitForData(want.String(), 10*time.Second); !strings.HasSuffix(got, want.String()) {
		t.Fatalf("the app's %d bytes do not end with the %d the client sent, in order", len(got), want.Len())
	}
	a.ups[0].Write("ack;")
	a.c.waitData(a.ids[0], "ack;")
	quiet("after the burst")

	// A reset from a quiet client ends its stream only.
	b := cs[1]
	b.c.reset(b.ids[0], http2.ErrCodeCancel)
	b.ups[0].WaitForEOF(5 * time.Second)
	b.c.send(b.ids[1], "still;", false)
	b.ups[1].WaitForData("still;", 5*time.Second)
	quiet("after the reset")

	// A quiet client's connection drops: its tunnels end, and the others carry on.
	a.c.close()
	for _, u := range a.ups {
		u.WaitForEOF(5 * time.Second)
	}
	p.WaitStat("http.a.downstream_cx_upgrades_active", int64(total-len(a.ids)-1), 5*time.Second)
	p.WaitStat("http.a.downstream_cx_active", conns-1, 5*time.Second)
	c := cs[2]
	c.ups[0].Write("app;")
	c.c.waitData(c.ids[0], "app;")
	quiet("after the drop")

	// A drain reaches the quiet connections with GOAWAY; the proxy's exit closes them.
	resp, err := http.Post("http://"+p.Admin+"/drain_listeners?graceful", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	b.c.waitGoAway()
	c.c.waitGoAway()
	c.c.send(c.ids[1], "after-goaway;", false) // open streams carry on through a drain
	c.ups[1].WaitForData("after-goaway;", 5*time.Second)
	if resp, err = http.Post("http://"+p.Admin+"/quitquitquit", "", nil); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := p.WaitExit(10 * time.Second); err != nil {
		t.Fatalf("the proxy did not exit with quiet connections open: %v", err)
	}
	for _, k := range []int{1, 2} {
		cs[k].c.wait("the connection's close", 5*time.Second, func() bool { return cs[k].c.readErr != nil })
	}
}
