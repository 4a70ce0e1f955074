package hcm

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/tunnel"
)

// parkedTunnel is what is left of a stream and its HTTP/1.1 connection once the tunnel engine
// carries their tunnel: the stats to settle, the accounting to release and the timeouts still
// running. The stream, its filters and contexts, the connection and both net.Conns are let go, so
// that an idle tunnel costs this record and the engine's, and no more.
type parkedTunnel struct {
	m        *Manager
	t        *tunnel.Tunnel // set before mu is first unlocked
	up       *UpgradeStats
	remote   string
	activity atomic.Int64 // unix nanos of the last byte either way, for the idle timeout

	// mu guards the timers and ended. takeHandoff holds it until the record is complete, so the
	// engine's Done and the timers wait for it.
	mu        sync.Mutex
	ended     bool
	idle      *time.Timer
	maxDur    *time.Timer
	routerEnd func() // the upstream connection's and the request's accounting
	connEnd   func() // what is left of the downstream connection's lifetime
}

// Reasons an engine tunnel is aborted by its own timeouts.
var (
	errParkedIdle    = errors.New("stream_idle_timeout")
	errParkedMaxTime = errors.New("max_duration_timeout")
)

// park reduces s to p once the engine has the tunnel (p.t is set): the stream's timeouts move to
// p, the router and the connection end their own parts now and hand over what must wait for the
// tunnel's end, and the stream's buffer account goes (the caller cancels its context once it
// has checked it). Called on the decode goroutine
// with p.mu held.
func (s *stream) park(p *parkedTunnel, routerEnd func(), c *conn) {
	for _, t := range s.timers {
		t.Stop()
	}
	s.timers = nil
	p.arm(s.idleTimeout, s.deadline)
	s.m.replaceTunnel(s, p)
	p.routerEnd = routerEnd
	p.connEnd = c.life.detach()
	s.acct.Close()
}

// arm restarts the stream's idle timeout and max_stream_duration on the record, as the stream
// counted them: the idle time from the last byte, the duration from the request.
func (p *parkedTunnel) arm(idle time.Duration, deadline time.Time) {
	ms := p.m.stats
	if idle > 0 {
		p.idle = time.AfterFunc(idle, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.ended {
				return
			}
			if since := time.Since(time.Unix(0, p.activity.Load())); since < idle {
				p.idle.Reset(idle - since)
				return
			}
			ms.RqIdleTimeout.Inc()
			p.t.Abort(errParkedIdle)
		})
	}
	if !deadline.IsZero() {
		p.maxDur = time.AfterFunc(max(time.Until(deadline), 0), func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if !p.ended {
				ms.RqMaxDurationReached.Inc()
				p.t.Abort(errParkedMaxTime)
			}
		})
	}
}

// moved counts bytes the engine moved, as the pumps would have.
func (p *parkedTunnel) moved(toB bool, n int) {
	if toB {
		p.up.BytesUp.Add(uint64(n))
		p.m.stats.CxRxBytes.Add(uint64(n))
	} else {
		p.up.BytesDown.Add(uint64(n))
		p.m.stats.CxTxBytes.Add(uint64(n))
	}
	p.activity.Store(time.Now().UnixNano())
}

// done is the engine's Done: the stream's end, then its connection's, as stream.end and the
// connection's lifetime would have run them.
func (p *parkedTunnel) done(why error) {
	p.mu.Lock() // takeHandoff has finished the record
	defer p.mu.Unlock()
	p.ended = true
	if p.idle != nil {
		p.idle.Stop()
	}
	if p.maxDur != nil {
		p.maxDur.Stop()
	}
	if why != nil {
		p.m.log.Debug("tunnel ended", "reason", why, "remote", p.remote)
	}
	ms := p.m.stats
	ms.CxUpgradesActive.Dec()
	p.up.Active.Dec()
	p.m.untrackTunnel(p)
	p.routerEnd()
	ms.RqActive.Dec()
	p.connEnd()
}

// goingAway closes the tunnel cleanly at the drain deadline.
func (p *parkedTunnel) goingAway() { p.t.GoAway() }

// abortEngine tears the tunnel down, for a server closing at once.
func (p *parkedTunnel) abortEngine() { p.t.Abort(errStreamEnded) }

// openTunnel is an open tunnel as the manager tracks it for the drain and the server's close: a
// stream, or a parked tunnel the engine carries.
type openTunnel interface {
	goingAway()
	abortEngine()
}

// abortEngine aborts the stream's engine tunnel, if the engine took it; a stream still carrying
// its tunnel ends with the server's context instead.
func (s *stream) abortEngine() {
	if t := s.engine.Load(); t != nil {
		t.Abort(errStreamEnded)
	}
}

func (m *Manager) trackTunnel(t openTunnel) {
	m.liveMu.Lock()
	m.tunnels[t] = struct{}{}
	m.liveMu.Unlock()
}

func (m *Manager) untrackTunnel(t openTunnel) {
	m.liveMu.Lock()
	delete(m.tunnels, t)
	m.liveMu.Unlock()
}

func (m *Manager) replaceTunnel(old, new openTunnel) {
	m.liveMu.Lock()
	delete(m.tunnels, old)
	m.tunnels[new] = struct{}{}
	m.liveMu.Unlock()
}
