package e2e

import (
	"fmt"
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
