// Package server assembles a running proxy from a compiled snapshot: clusters, filter builders,
// one connection manager per listener, accept loops and the admin endpoint. It is the only package
// that imports everything.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/switchyard-proxy/switchyard/filter"
	"github.com/switchyard-proxy/switchyard/internal/admin"
	"github.com/switchyard-proxy/switchyard/internal/cancelctx"
	"github.com/switchyard-proxy/switchyard/internal/cluster"
	"github.com/switchyard-proxy/switchyard/internal/config"
	bufferfilter "github.com/switchyard-proxy/switchyard/internal/filters/buffer"
	"github.com/switchyard-proxy/switchyard/internal/hcm"
	"github.com/switchyard-proxy/switchyard/internal/router"
	"github.com/switchyard-proxy/switchyard/internal/stats"
	"github.com/switchyard-proxy/switchyard/internal/workers"
	"google.golang.org/protobuf/proto"
)

// Version is reported by --version and /server_info.
const Version = "0.1.0"

// Builders lists the built-in HTTP filters explicitly (no init() registration), bound to the
// snapshot's clusters where they need them.
func Builders(cm *cluster.Manager, log *slog.Logger) map[string]filter.Builder {
	return map[string]filter.Builder{
		config.RouterFilter: router.Builder(cm, log),
		config.BufferFilter: bufferfilter.Build,
	}
}

// Server is one running proxy.
type Server struct {
	snap     *config.Snapshot
	log      *slog.Logger
	store    *stats.Store
	clusters *cluster.Manager
	admin    *admin.Server
	overload *overloadManager // nil without an overload_manager

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loops and connections
	mu     sync.Mutex
	lns    []net.Listener
	hcms   []*hcm.Manager
	conns  map[*openConn]struct{}
	quit   chan struct{}
	quitMu sync.Once

	drainGradual bool          // --drain-strategy gradual
	drainTime    time.Duration // --drain-time-s

	letGoRelease func() // lets go of the process's quiet releaser (release.go); nil until Start holds it
}

// SetDrain records the command line's drain strategy and time; call it before Start.
func (s *Server) SetDrain(gradual bool, drainTime time.Duration) {
	s.drainGradual, s.drainTime = gradual, drainTime
}

// New prepares a server; nothing listens until Start.
func New(snap *config.Snapshot, log *slog.Logger) *Server {
	// The parent of every connection's and stream's context: cancelctx keeps the thousands of
	// watches on it in a slice rather than the standard library's per-watch context and map.
	ctx := cancelctx.New(context.Background())
	return &Server{snap: snap, log: log, store: stats.NewStore(), ctx: ctx, cancel: ctx.Cancel,
		conns: map[*openConn]struct{}{}, quit: make(chan struct{})}
}

// Stats is the server's stat store.
func (s *Server) Stats() *stats.Store { return s.store }

// Start opens the admin endpoint and every listener and begins accepting.
func (s *Server) Start() error {
	s.clusters = cluster.NewManager(s.snap.Clusters, s.store, s.log)
	builders := Builders(s.clusters, s.log)
	s.overload = newOverloadManager(s.snap.Overload, s.store, s.log)
	var rs []*activeListener
	for _, l := range s.snap.Listeners {
		m, err := hcm.New(l.HCM, l.BufferLimit, s.store, builders, s.log)
		if err != nil {
			s.Close()
			return fmt.Errorf("listener %q: %w", l.Name, err)
		}
		if s.overload != nil && s.overload.stopRequests != nil {
			m.SetStopAcceptingRequests(s.overload.shedRequest)
		}
		if t := s.overload.memoryTracker(); t != nil {
			m.SetMemoryTracker(t)
		}
		// No TCP keepalive on accepted connections, as in Envoy without socket options (Go would
		// turn it on for each one).
		lc := net.ListenConfig{KeepAlive: -1}
		ln, err := lc.Listen(context.Background(), "tcp", l.Address)
		if err != nil {
			s.Close()
			return fmt.Errorf("listener %q: %w", l.Name, err)
		}
		if l.TLS != nil {
			tc, err := serverTLS(l)
			if err != nil {
				ln.Close()
				s.Close()
				return fmt.Errorf("listener %q: %w", l.Name, err)
			}
			// The handshake runs on the connection's goroutine (hcm.ServeConn), never in Accept.
			ln = tls.NewListener(ln, tc)
		}
		s.mu.Lock()
		s.lns = append(s.lns, ln)
		s.hcms = append(s.hcms, m)
		s.mu.Unlock()
		sc := s.store.Scope("listener." + l.StatName)
		rs = append(rs, &activeListener{m: m, ln: ln, cxT: sc.Counter("downstream_cx_total"),
			cxA: sc.Gauge("downstream_cx_active"), cxD: sc.Counter("downstream_cx_destroy"),
			globalOverflow: sc.Counter("downstream_global_cx_overflow"), limit: newConnLimit(l.ConnectionLimit, s.store)})
	}
	if s.snap.Admin != nil {
		a, err := admin.Start(admin.Options{
			Address:    s.snap.Admin.Address,
			Stats:      s.store,
			ConfigDump: func() proto.Message { return s.snap.Bootstrap },
			Clusters:   s.clusterStatus,
			Version:    Version,
			Quit:       s.Quit,
			Drain:      func(bool, bool) { s.Drain() },
			Logger:     s.log,
			Admit:      s.admitAdmin(),
		})
		if err != nil {
			s.Close()
			return fmt.Errorf("admin: %w", err)
		}
		s.admin = a
	}
	s.overload.start(s.ctx, &s.wg)
	s.letGoRelease = holdQuietRelease(s.store.Counter("server.memory_quiet_releases"))
	for _, r := range rs {
		s.wg.Add(1)
		go s.accept(r)
	}
	return nil
}

// activeListener is one listener's accept side: its connection manager, socket, stats and
// connection_limit filter.
type activeListener struct {
	m              *hcm.Manager
	ln             net.Listener
	cxT, cxD       *stats.Counter // listener.<address>.downstream_cx_total, _destroy
	cxA            *stats.Gauge   // listener.<address>.downstream_cx_active
	globalOverflow *stats.Counter // listener.<address>.downstream_global_cx_overflow
	limit          *connLimit     // nil without a connection_limit filter
}

// accept is a listener's accept loop; it owns the connection goroutines it starts. As in Envoy,
// a connection over the global limit is closed at accept and never counts as a listener
// connection; one over the listener's connection_limit is a connection that the filter closes.
func (s *Server) accept(r *activeListener) {
	defer s.wg.Done()
	ln, m, cxT, cxA, cxD := r.ln, r.m, r.cxT, r.cxA, r.cxD
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accept failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !s.overload.tryAllocateConn() {
			r.globalOverflow.Inc()
			nc.Close()
			continue
		}
		// Go's accepted TCP connections already have TCP_NODELAY, as Envoy's do.
		s.mu.Lock()
		if s.conns == nil {
			s.mu.Unlock()
			nc.Close()
			s.overload.releaseConn()
			return
		}
		oc := &openConn{nc: nc}
		s.conns[oc] = struct{}{}
		s.mu.Unlock()
		cxT.Inc()
		cxA.Inc()
		admitted := r.limit == nil || r.limit.tryAcquire()
		s.wg.Add(1)
		// ended runs when the connection is over, which for a tunnel handed to the tunnel engine
		// is after its goroutine has returned.
		ended := func() {
			if r.limit != nil && admitted {
				r.limit.release()
			}
			s.overload.releaseConn()
			cxA.Dec()
			cxD.Inc()
			s.mu.Lock()
			delete(s.conns, oc)
			s.mu.Unlock()
			s.wg.Done()
		}
		// The tunnel engine took the socket: the net.Conn is closed, and an idle tunnel should
		// not keep it. Close reaches the tunnel through the HCM's AbortTunnels.
		detached := func() {
			s.mu.Lock()
			oc.nc = nil
			s.mu.Unlock()
		}
		workers.Go(func() {
			if r.limit != nil && !admitted {
				s.refuse(nc, m, r.limit.delay)
				ended()
				return
			}
			m.ServeConn(s.ctx, nc, hcm.ConnHooks{Ended: ended, Detached: detached})
		})
	}
}

// openConn is an accepted connection in Server.conns; nc is nil once the tunnel engine has its
// socket.
type openConn struct{ nc net.Conn }

// refuse is the connection_limit filter closing a connection over the limit: it is held for
// delay without being read (so a client cannot retry at once), then closed with no response. As
// in Envoy, where the filter chain exists before the limit filter rejects the connection, the
// HCM counts it in http.<prefix>.downstream_cx_total, _active and _destroy.
func (s *Server) refuse(nc net.Conn, m *hcm.Manager, delay time.Duration) {
	st := m.Stats()
	st.CxTotal.Inc()
	st.CxActive.Inc()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.ctx.Done():
		}
		t.Stop()
	}
	nc.Close()
	st.CxActive.Dec()
	st.CxDestroy.Inc()
}

// ListenerAddrs returns the bound address of every listener, in config order.
func (s *Server) ListenerAddrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, len(s.lns))
	for i, ln := range s.lns {
		out[i] = ln.Addr()
	}
	return out
}

// admitAdmin is the admin endpoint's part of the global connection limit: like Envoy, admin
// connections count toward global_downstream_max_connections unless
// admin.ignore_global_conn_limit, and one past it is closed at accept and counted in
// listener.admin.downstream_global_cx_overflow.
func (s *Server) admitAdmin() func() (func(), bool) {
	if s.overload == nil || s.overload.maxConns <= 0 || s.snap.Admin.IgnoreGlobalConnLimit {
		return nil
	}
	overflow := s.store.Scope("listener.admin").Counter("downstream_global_cx_overflow")
	return func() (func(), bool) {
		if !s.overload.tryAllocateConn() {
			overflow.Inc()
			return nil, false
		}
		return s.overload.releaseConn, true
	}
}

// AdminAddr returns the admin endpoint's address, or nil.
func (s *Server) AdminAddr() net.Addr {
	if s.admin == nil {
		return nil
	}
	return s.admin.Addr()
}

// Quit asks the process to exit at once (admin /quitquitquit).
func (s *Server) Quit() { s.quitMu.Do(func() { close(s.quit) }) }

// Quitting is closed when Quit was called.
func (s *Server) Quitting() <-chan struct{} { return s.quit }

// Drain stops accepting connections and winds the open ones down (Connection: close on HTTP/1.1,
// GOAWAY on HTTP/2, idle connections closed), leaving requests in flight and established tunnels
// running. Admin's /drain_listeners and SIGTERM call it.
func (s *Server) Drain() {
	s.mu.Lock()
	for _, ln := range s.lns {
		ln.Close()
	}
	hcms := s.hcms
	s.mu.Unlock()
	if s.admin != nil {
		s.admin.SetState(admin.StateDraining)
	}
	for _, m := range hcms {
		m.Drain(s.drainGradual, s.drainTime)
	}
}

// closeTunnels ends open tunnels cleanly (WebSocket Close 1001, or FIN / END_STREAM) and gives
// the peers a moment to answer before the connections are closed.
func (s *Server) closeTunnels() {
	s.mu.Lock()
	hcms := s.hcms
	s.mu.Unlock()
	for _, m := range hcms {
		m.CloseTunnels()
	}
	deadline := time.Now().Add(tunnelCloseGrace)
	for s.ActiveConnections() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// tunnelCloseGrace is how long peers get to answer our Close before their connections are cut.
const tunnelCloseGrace = time.Second

// ActiveConnections is the number of downstream connections still open.
func (s *Server) ActiveConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Shutdown drains, waits up to drainTime for the connections (tunnels included) to end on their
// own, then closes whatever is left. It returns early if abort is closed.
func (s *Server) Shutdown(drainTime time.Duration, abort <-chan struct{}) {
	s.Drain()
	deadline := time.NewTimer(drainTime)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for s.ActiveConnections() > 0 {
		select {
		case <-deadline.C:
			s.log.Info("drain time is over; closing the tunnels and connections left", "connections", s.ActiveConnections())
			s.closeTunnels()
			s.Close()
			return
		case <-abort:
			s.Close()
			return
		case <-tick.C:
		}
	}
	s.Close()
}

// Close stops listening, closes every connection (tunnels included) and waits for every goroutine
// the server started.
func (s *Server) Close() {
	s.mu.Lock()
	for _, ln := range s.lns {
		ln.Close()
	}
	var conns []net.Conn
	for oc := range s.conns {
		if oc.nc != nil {
			conns = append(conns, oc.nc)
		}
	}
	s.conns = nil
	hcms := s.hcms
	s.mu.Unlock()
	s.cancel()
	for _, m := range hcms {
		m.AbortTunnels()
	}
	for _, nc := range conns {
		nc.Close()
	}
	s.wg.Wait()
	if s.letGoRelease != nil {
		s.letGoRelease()
	}
	if s.admin != nil {
		s.admin.Close()
	}
	if s.clusters != nil {
		s.clusters.Close()
	}
}

// serverTLS builds a listener's TLS config. As in Envoy, ALPN is offered only when
// alpn_protocols lists it: without it, clients speak HTTP/1.1.
func serverTLS(l *config.Listener) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: l.TLS.ALPN}
	for _, c := range l.TLS.Certificates {
		pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
		if err != nil {
			return nil, err
		}
		tc.Certificates = append(tc.Certificates, pair)
	}
	return tc, nil
}

func (s *Server) clusterStatus() []admin.ClusterStatus {
	var out []admin.ClusterStatus
	for _, c := range s.clusters.All() {
		cs := admin.ClusterStatus{Name: c.Config.Name}
		for _, h := range c.Hosts() {
			cs.Hosts = append(cs.Hosts, admin.HostStatus{Address: h.Address, Healthy: true,
				ActiveRequests: h.ActiveRequests(), ActiveConnections: h.ActiveConnections(), Weight: h.Weight})
		}
		out = append(out, cs)
	}
	return out
}
