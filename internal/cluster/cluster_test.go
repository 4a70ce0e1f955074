package cluster

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/stats"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// upstream is a fake upstream host on a real socket; it accepts and keeps connections.
type upstream struct {
	ln    net.Listener
	conns chan net.Conn
}

func newUpstream(t *testing.T, addr string) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{ln: ln, conns: make(chan net.Conn, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(u.conns)
		for c := range u.conns {
			c.Close()
		}
	})
	return u
}

func (u *upstream) port() int { return u.ln.Addr().(*net.TCPAddr).Port }

// next returns the next accepted connection; the test owns it.
func (u *upstream) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-u.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("upstream accepted no connection")
		return nil
	}
}

// noMore fails if the upstream accepted another connection.
func (u *upstream) noMore(t *testing.T) {
	t.Helper()
	select {
	case <-u.conns:
		t.Fatal("upstream accepted an unexpected connection")
	case <-time.After(50 * time.Millisecond):
	}
}

// static returns a STATIC cluster "c" over the upstreams, weights 1, Envoy's default breakers.
func static(policy config.LBPolicy, ups ...*upstream) *config.Cluster {
	c := &config.Cluster{
		Name: "c", Type: config.Static, LBPolicy: policy, ConnectTimeout: time.Second,
		MaxConnections: 1024, MaxPending: 1024, MaxRequests: 1024,
	}
	for _, u := range ups {
		c.Endpoints = append(c.Endpoints, config.Endpoint{Host: "127.0.0.1", Port: u.port(), Weight: 1})
	}
	return c
}

func start(t *testing.T, o options, cfgs ...*config.Cluster) (*Manager, *stats.Store) {
	t.Helper()
	if o.lookup == nil {
		o.lookup = net.DefaultResolver.LookupHost
	}
	if o.idleTimeout == 0 {
		o.idleTimeout = IdleTimeout
	}
	st := stats.NewStore()
	m := newManager(cfgs, st, nil, o)
	t.Cleanup(m.Close)
	return m, st
}

func acquire(t *testing.T, c *Cluster) *Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := c.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// wantStats checks cluster.c.<name> values, counters and gauges alike.
func wantStats(t *testing.T, st *stats.Store, want map[string]int64) {
	t.Helper()
	got := map[string]int64{}
	for _, s := range st.Snapshot() {
		got[s.Name] = s.Value
	}
	for name, v := range want {
		if got["cluster.c."+name] != v {
			t.Errorf("%s = %d, want %d", name, got["cluster.c."+name], v)
		}
	}
}

func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func wantEOF(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read = %d, %v; want EOF", n, err)
	}
}

func TestPick(t *testing.T) {
	tests := []struct {
		name    string
		policy  config.LBPolicy
		weights []uint32
		active  []int64
		picks   int
		want    string // host indexes in pick order, for deterministic policies
		counts  []int  // picks per host, with tolerance for RANDOM
	}{
		{name: "round robin", policy: config.RoundRobin, weights: []uint32{1, 1, 1}, picks: 6, want: "012012"},
		{name: "smooth weighted round robin", policy: config.RoundRobin, weights: []uint32{5, 1, 1}, picks: 7, want: "0010200"},
		{name: "zero weight counts as one", policy: config.RoundRobin, weights: []uint32{0, 1}, picks: 4, want: "0101"},
		{name: "weighted random", policy: config.Random, weights: []uint32{1, 3}, picks: 4000, counts: []int{1000, 3000}},
		{name: "least request takes the idle host", policy: config.LeastRequest, weights: []uint32{1, 1}, active: []int64{3, 0}, picks: 20, counts: []int{0, 20}},
		{name: "least request of two busy hosts", policy: config.LeastRequest, weights: []uint32{1, 1, 1}, active: []int64{5, 1, 5}, picks: 3000, counts: []int{500, 2000, 500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hosts []*Host
			for i, w := range tt.weights {
				h := newHost(nil, strconv.Itoa(i), w)
				if tt.active != nil {
					h.rqActive.Store(tt.active[i])
				}
				hosts = append(hosts, h)
			}
			s := newHostSet(hosts)
			order := ""
			counts := make([]int, len(hosts))
			for range tt.picks {
				h := s.pick(tt.policy)
				order += h.Address
				counts[slices.Index(hosts, h)]++
			}
			if tt.want != "" && order != tt.want {
				t.Errorf("order %s, want %s", order, tt.want)
			}
			for i, want := range tt.counts {
				if d := counts[i] - want; d < -tt.picks/20 || d > tt.picks/20 { // ±5 % of the picks
					t.Errorf("host %d picked %d times, want about %d", i, counts[i], want)
				}
			}
		})
	}
	if h := newHostSet(nil).pick(config.RoundRobin); h != nil {
		t.Errorf("empty host set picked %v", h)
	}
}

func TestAcquireSpreadsOverHosts(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		picks   int
		want    []int
	}{
		{name: "round robin", weights: []uint32{1, 1, 1}, picks: 6, want: []int{2, 2, 2}},
		{name: "weighted round robin", weights: []uint32{1, 2, 3}, picks: 12, want: []int{2, 4, 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ups []*upstream
			for range tt.weights {
				ups = append(ups, newUpstream(t, "127.0.0.1:0"))
			}
			cfg := static(config.RoundRobin, ups...)
			for i, w := range tt.weights {
				cfg.Endpoints[i].Weight = w
			}
			m, _ := start(t, options{}, cfg)
			got := make([]int, len(ups))
			for range tt.picks {
				l := acquire(t, m.Get("c"))
				if l.Conn.RemoteAddr().String() != l.Host.Address {
					t.Fatalf("connected to %s, host is %s", l.Conn.RemoteAddr(), l.Host.Address)
				}
				for i, u := range ups {
					if l.Host.Address == u.ln.Addr().String() {
						got[i]++
					}
				}
				l.Release(false)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("picks per host %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLeastRequestPrefersIdleHost(t *testing.T) {
	m, _ := start(t, options{}, static(config.LeastRequest, newUpstream(t, "127.0.0.1:0"), newUpstream(t, "127.0.0.1:0")))
	c := m.Get("c")
	busy := acquire(t, c)
	defer busy.Release(false)
	for range 20 {
		l := acquire(t, c)
		if l.Host == busy.Host {
			t.Fatalf("picked the busy host %s (%d active)", busy.Host.Address, busy.Host.ActiveRequests())
		}
		l.Release(true)
	}
	if busy.Host.ActiveRequests() != 1 {
		t.Errorf("busy host has %d active requests, want 1", busy.Host.ActiveRequests())
	}
}

func TestReleaseReusesOrCloses(t *testing.T) {
	for _, reusable := range []bool{true, false} {
		t.Run("reusable="+strconv.FormatBool(reusable), func(t *testing.T) {
			u := newUpstream(t, "127.0.0.1:0")
			m, st := start(t, options{}, static(config.RoundRobin, u))
			c := m.Get("c")
			first := acquire(t, c)
			srv := u.next(t)
			if first.Reused {
				t.Error("a new connection is Reused")
			}
			if first.Reader.Size() != ReaderSize || first.Writer.Size() != WriterSize {
				t.Errorf("buffers %d/%d, want %d/%d", first.Reader.Size(), first.Writer.Size(), ReaderSize, WriterSize)
			}
			first.Release(reusable)
			first.Release(false) // idempotent: must not close a pooled conn

			second := acquire(t, c)
			defer second.Release(false)
			if second.Reused != reusable {
				t.Errorf("Reused = %v, want %v", second.Reused, reusable)
			}
			if reusable {
				second.Writer.WriteString("ping")
				second.Writer.Flush()
				if got := readN(t, srv, 4); got != "ping" {
					t.Errorf("upstream read %q on its first connection", got)
				}
				u.noMore(t)
				wantStats(t, st, map[string]int64{"upstream_cx_total": 1, "upstream_cx_destroy": 0, "upstream_cx_active": 1})
			} else {
				wantEOF(t, srv)
				u.next(t)
				wantStats(t, st, map[string]int64{"upstream_cx_total": 2, "upstream_cx_destroy": 1, "upstream_cx_active": 1})
			}
		})
	}
}

func TestIdleConnClosedByPeerIsNotHandedOut(t *testing.T) {
	u := newUpstream(t, "127.0.0.1:0")
	m, st := start(t, options{}, static(config.RoundRobin, u))
	c := m.Get("c")
	l := acquire(t, c)
	u.next(t).Close()
	if _, err := l.Reader.ReadByte(); err != io.EOF { // the FIN has arrived
		t.Fatalf("read %v, want EOF", err)
	}
	l.Release(true)

	l = acquire(t, c)
	defer l.Release(false)
	if l.Reused {
		t.Error("handed out the connection the peer closed")
	}
	u.next(t)
	wantStats(t, st, map[string]int64{"upstream_cx_total": 2, "upstream_cx_destroy": 1, "upstream_cx_active": 1})
}

func TestIdleTimeoutClosesPooledConn(t *testing.T) {
	u := newUpstream(t, "127.0.0.1:0")
	m, st := start(t, options{idleTimeout: 50 * time.Millisecond}, static(config.RoundRobin, u))
	acquire(t, m.Get("c")).Release(true)
	wantEOF(t, u.next(t))
	l := acquire(t, m.Get("c"))
	defer l.Release(false)
	if l.Reused {
		t.Error("reused a connection closed by the idle timeout")
	}
	wantStats(t, st, map[string]int64{"upstream_cx_idle_timeout": 1, "upstream_cx_destroy": 1, "upstream_cx_active": 1})
}

func TestConnectFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := static(config.RoundRobin)
	cfg.Endpoints = []config.Endpoint{{Host: "127.0.0.1", Port: port, Weight: 1}}
	m, st := start(t, options{}, cfg)

	_, err = m.Get("c").Acquire(context.Background())
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.Timeout || ce.Host != "127.0.0.1:"+strconv.Itoa(port) {
		t.Fatalf("err = %#v, want a *ConnectError without timeout", err)
	}
	wantStats(t, st, map[string]int64{
		"upstream_cx_total": 1, "upstream_cx_connect_fail": 1, "upstream_cx_connect_timeout": 0,
		"upstream_cx_destroy": 1, "upstream_cx_active": 0,
	})
	if h := m.Get("c").Hosts()[0]; h.ActiveConnections() != 0 || h.ActiveRequests() != 0 {
		t.Errorf("host counts %d connections, %d requests after a failed connect", h.ActiveConnections(), h.ActiveRequests())
	}
}

func TestMaxConnections(t *testing.T) {
	tests := []struct {
		name       string
		maxPending int
		wantErr    error
		wantStats  map[string]int64
	}{
		{
			name: "waits as pending until ctx ends", maxPending: 1024, wantErr: context.DeadlineExceeded,
			wantStats: map[string]int64{"upstream_cx_overflow": 1, "upstream_rq_pending_total": 1, "upstream_rq_pending_overflow": 0, "upstream_rq_pending_active": 0},
		},
		{
			name: "no room to wait", maxPending: 0, wantErr: ErrOverflow,
			wantStats: map[string]int64{"upstream_cx_overflow": 1, "upstream_rq_pending_total": 0, "upstream_rq_pending_overflow": 1, "upstream_rq_pending_active": 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := static(config.RoundRobin, newUpstream(t, "127.0.0.1:0"))
			cfg.MaxConnections, cfg.MaxPending = 1, tt.maxPending
			m, st := start(t, options{}, cfg)
			held := acquire(t, m.Get("c"))
			defer held.Release(false)

			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			begin := time.Now()
			_, err := m.Get("c").Acquire(ctx)
			waited := time.Since(begin)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == ErrOverflow && waited > 50*time.Millisecond {
				t.Errorf("overflow took %v; want immediate", waited)
			}
			if tt.wantErr != ErrOverflow && waited < 100*time.Millisecond {
				t.Errorf("gave up after %v; want to wait for the ctx", waited)
			}
			wantStats(t, st, tt.wantStats)
		})
	}
}

func TestPendingAcquireGetsReleasedConn(t *testing.T) {
	u := newUpstream(t, "127.0.0.1:0")
	cfg := static(config.RoundRobin, u)
	cfg.MaxConnections = 1
	m, st := start(t, options{}, cfg)
	held := acquire(t, m.Get("c"))

	got := make(chan *Lease, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l, err := m.Get("c").Acquire(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	for st.Gauge("cluster.c.upstream_rq_pending_active").Value() != 1 {
		time.Sleep(time.Millisecond)
	}
	held.Release(true)
	l := <-got
	if l == nil {
		t.FailNow()
	}
	defer l.Release(false)
	if !l.Reused || l.Conn != held.Conn {
		t.Error("the waiter did not get the released connection")
	}
	u.next(t)
	u.noMore(t)
	wantStats(t, st, map[string]int64{"upstream_rq_pending_total": 1, "upstream_rq_pending_active": 0})
}

func TestIdleConnOfOtherHostIsEvictedAtMaxConnections(t *testing.T) {
	a, b := newUpstream(t, "127.0.0.1:0"), newUpstream(t, "127.0.0.1:0")
	cfg := static(config.RoundRobin, a, b)
	cfg.MaxConnections = 1
	m, st := start(t, options{}, cfg)
	acquire(t, m.Get("c")).Release(true) // host a, now idle

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l, err := m.Get("c").Acquire(ctx) // host b
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(false)
	wantEOF(t, a.next(t))
	b.next(t)
	wantStats(t, st, map[string]int64{"upstream_cx_total": 2, "upstream_cx_destroy": 1, "upstream_cx_overflow": 0})
}

func TestStartRequestMaxRequests(t *testing.T) {
	cfg := static(config.RoundRobin)
	cfg.MaxRequests = 1
	m, st := start(t, options{}, cfg)
	c := m.Get("c")
	if err := c.StartRequest(); err != nil {
		t.Fatal(err)
	}
	if err := c.StartRequest(); !errors.Is(err, ErrOverflow) {
		t.Fatalf("second request: %v, want ErrOverflow", err)
	}
	wantStats(t, st, map[string]int64{"upstream_rq_active": 1, "upstream_rq_pending_overflow": 1})
	c.EndRequest()
	if err := c.StartRequest(); err != nil {
		t.Fatalf("after EndRequest: %v", err)
	}
	c.EndRequest()
	wantStats(t, st, map[string]int64{"upstream_rq_active": 0})
}

func TestHijack(t *testing.T) {
	u := newUpstream(t, "127.0.0.1:0")
	m, st := start(t, options{}, static(config.RoundRobin, u))
	c := m.Get("c")
	l := acquire(t, c)
	srv := u.next(t)
	hc := l.Hijack()
	if l.Hijack() != hc {
		t.Error("a second Hijack returned another conn")
	}
	l.Release(true)

	// Still open, and a half-close reaches the peer while the other direction keeps working.
	hc.Write([]byte("x"))
	if got := readN(t, srv, 1); got != "x" {
		t.Fatalf("upstream read %q", got)
	}
	if err := hc.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wantEOF(t, srv)
	srv.Write([]byte("y"))
	if got := readN(t, hc, 1); got != "y" {
		t.Fatalf("read %q from the hijacked conn", got)
	}

	// Not in the pool.
	other := acquire(t, c)
	if other.Reused {
		t.Error("the hijacked connection was pooled")
	}
	other.Release(false)
	if other.Hijack() != nil {
		t.Error("Hijack after Release returned a conn")
	}
	wantStats(t, st, map[string]int64{"upstream_cx_active": 1, "upstream_cx_destroy": 1})
	if l.Host.ActiveRequests() != 1 {
		t.Errorf("host has %d active requests during the tunnel, want 1", l.Host.ActiveRequests())
	}

	hc.Close()
	hc.Close()
	wantStats(t, st, map[string]int64{"upstream_cx_active": 0, "upstream_cx_destroy": 2})
	if l.Host.ActiveRequests() != 0 || l.Host.ActiveConnections() != 0 {
		t.Errorf("host counts %d requests, %d connections after the tunnel", l.Host.ActiveRequests(), l.Host.ActiveConnections())
	}
}

func TestStrictDNSLocalhost(t *testing.T) {
	u := newUpstream(t, "127.0.0.1:0")
	cfg := static(config.RoundRobin)
	cfg.Type = config.StrictDNS
	cfg.Endpoints = []config.Endpoint{{Host: "localhost", Port: u.port(), Weight: 1}}
	m, st := start(t, options{}, cfg)

	l := acquire(t, m.Get("c"))
	defer l.Release(false)
	u.next(t)
	if l.Host.Address != u.ln.Addr().String() {
		t.Errorf("host %s, want %s", l.Host.Address, u.ln.Addr())
	}
	n := int64(len(m.Get("c").Hosts()))
	if n == 0 {
		t.Fatal("no hosts")
	}
	wantStats(t, st, map[string]int64{"membership_total": n, "membership_healthy": n})
}

// scriptedDNS is a lookup the test answers call by call: while the test holds a call, the refresh
// loop is inside it, so the host set shows every earlier answer and none later.
type scriptedDNS chan chan answer

type answer struct {
	addrs []string
	err   error
}

func (s scriptedDNS) lookup(ctx context.Context, _ string) ([]string, error) {
	reply := make(chan answer)
	select {
	case s <- reply:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case a := <-reply:
		return a.addrs, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s scriptedDNS) answer(t *testing.T, addrs []string, err error) {
	t.Helper()
	select {
	case reply := <-s:
		reply <- answer{addrs, err}
	case <-time.After(5 * time.Second):
		t.Fatal("no DNS lookup")
	}
}

// wait blocks until the next lookup starts, which means the previous answer is applied.
func (s scriptedDNS) wait(t *testing.T) chan answer {
	t.Helper()
	select {
	case reply := <-s:
		return reply
	case <-time.After(5 * time.Second):
		t.Fatal("no DNS lookup")
		return nil
	}
}

func addresses(hosts []*Host) []string {
	var out []string
	for _, h := range hosts {
		out = append(out, h.Address)
	}
	return out
}

func dnsCluster(typ config.ClusterType, name string, port int) *config.Cluster {
	cfg := static(config.RoundRobin)
	cfg.Type = typ
	cfg.DNSRefreshRate = time.Millisecond
	cfg.Endpoints = []config.Endpoint{{Host: name, Port: port, Weight: 1}}
	return cfg
}

func TestStrictDNSRefresh(t *testing.T) {
	dns := make(scriptedDNS)
	m, st := start(t, options{lookup: dns.lookup}, dnsCluster(config.StrictDNS, "svc", 80))
	c := m.Get("c")

	dns.answer(t, []string{"10.0.0.1", "::1", "10.0.0.2"}, nil) // IPv4 preferred
	reply := dns.wait(t)
	if got := addresses(c.Hosts()); !slices.Equal(got, []string{"10.0.0.1:80", "10.0.0.2:80"}) {
		t.Fatalf("hosts %v", got)
	}
	kept := c.Hosts()[1]
	reply <- answer{err: errors.New("SERVFAIL")}
	reply = dns.wait(t)
	if got := addresses(c.Hosts()); !slices.Equal(got, []string{"10.0.0.1:80", "10.0.0.2:80"}) {
		t.Fatalf("after a failed lookup: hosts %v, want the old ones", got)
	}
	reply <- answer{addrs: []string{"10.0.0.2"}}
	dns.wait(t)
	if got := c.Hosts(); len(got) != 1 || got[0] != kept {
		t.Fatalf("hosts %v, want the same 10.0.0.2 host", addresses(got))
	}
	wantStats(t, st, map[string]int64{"membership_total": 1, "membership_healthy": 1})
}

func TestDNSFailsFirstTime(t *testing.T) {
	dns := make(scriptedDNS)
	m, st := start(t, options{lookup: dns.lookup}, dnsCluster(config.StrictDNS, "svc", 80))
	dns.answer(t, nil, errors.New("NXDOMAIN"))
	if _, err := m.Get("c").Acquire(context.Background()); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Fatalf("err = %v, want ErrNoHealthyUpstream", err)
	}
	wantStats(t, st, map[string]int64{"upstream_cx_none_healthy": 1, "membership_total": 0})
}

func TestLogicalDNSDialsCurrentFirstAddress(t *testing.T) {
	u1 := newUpstream(t, "127.0.0.1:0")
	if ln, err := net.Listen("tcp", "127.0.0.2:"+strconv.Itoa(u1.port())); err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	} else {
		ln.Close()
	}
	u2 := newUpstream(t, "127.0.0.2:"+strconv.Itoa(u1.port()))
	dns := make(scriptedDNS)
	m, _ := start(t, options{lookup: dns.lookup}, dnsCluster(config.LogicalDNS, "svc.test", u1.port()))
	c := m.Get("c")
	name := "svc.test:" + strconv.Itoa(u1.port())

	dns.answer(t, []string{"127.0.0.1", "127.0.0.2"}, nil)
	l := acquire(t, c)
	u1.next(t)
	if l.Host.Address != name {
		t.Errorf("host %s, want %s", l.Host.Address, name)
	}
	l.Release(false)

	dns.answer(t, []string{"127.0.0.2"}, nil)
	dns.wait(t) // the answer is applied
	l = acquire(t, c)
	defer l.Release(false)
	u2.next(t)
	if got := c.Hosts(); len(got) != 1 || got[0] != l.Host || l.Host.DialAddress() != u2.ln.Addr().String() {
		t.Errorf("hosts %v dialing %s; want one logical host dialing %s", addresses(got), l.Host.DialAddress(), u2.ln.Addr())
	}
}

func TestManagerCloseStopsEverything(t *testing.T) {
	u := newUpstream(t, "127.0.0.1:0")
	before := goleak.IgnoreCurrent()
	st := stats.NewStore()
	strict := dnsCluster(config.StrictDNS, "localhost", u.port())
	strict.Name = "strict"
	logical := dnsCluster(config.LogicalDNS, "localhost", u.port())
	logical.Name = "logical"
	m := NewManager([]*config.Cluster{static(config.RoundRobin, u), strict, logical}, st, nil)

	var names []string
	for _, c := range m.All() {
		names = append(names, c.Config.Name)
	}
	if !slices.Equal(names, []string{"c", "strict", "logical"}) || m.Get("nope") != nil {
		t.Errorf("All() = %v, want config order", names)
	}
	acquire(t, m.Get("c")).Release(true) // idle, with its timer armed
	held := acquire(t, m.Get("strict"))
	if err := m.Get("logical").WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.Close()
	m.Close()
	wantEOF(t, u.next(t))
	held.Release(true) // after Close: closed, not pooled
	wantEOF(t, u.next(t))
	for _, name := range []string{"cluster.c.upstream_cx_active", "cluster.strict.upstream_cx_active"} {
		if v := st.Gauge(name).Value(); v != 0 {
			t.Errorf("%s = %d after Close", name, v)
		}
	}
	goleak.VerifyNone(t, before)
}

func TestCountResponse(t *testing.T) {
	tests := []struct {
		codes []int
		want  map[string]int64
	}{
		{codes: []int{101}, want: map[string]int64{"upstream_rq_101": 1, "upstream_rq_1xx": 1, "upstream_rq_completed": 1}},
		{codes: []int{200, 204, 503}, want: map[string]int64{"upstream_rq_200": 1, "upstream_rq_204": 1, "upstream_rq_2xx": 2, "upstream_rq_503": 1, "upstream_rq_5xx": 1, "upstream_rq_completed": 3}},
		{codes: []int{42, 600}, want: map[string]int64{"upstream_rq_completed": 2}},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.codes[0]), func(t *testing.T) {
			st := stats.NewStore()
			s := NewStats(st.Scope("cluster.c"))
			var wg sync.WaitGroup
			for _, code := range tt.codes {
				wg.Go(func() { s.CountResponse(code) })
			}
			wg.Wait()
			got := map[string]int64{}
			for _, sm := range st.Snapshot() {
				if sm.Value != 0 {
					got[sm.Name[len("cluster.c."):]] = sm.Value
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("non-zero stats %v, want %v", got, tt.want)
			}
			wantStats(t, st, tt.want)
		})
	}
}
