package hcm

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/stats"
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
	activity atomic.Int64  // unix nanos of the last byte either way, for the idle timeout
	idle     time.Duration // the idle timeout (0: none), which the manager's sweep enforces

	// mu guards the timer, ended and timedOut. takeHandoff holds it until the record is complete,
	// so the engine's Done and the timeouts wait for it.
	mu        sync.Mutex
	ended     bool
	timedOut  bool // an idle or duration timeout aborted the tunnel (counted once)
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
	if p.idle > 0 {
		s.m.watchIdle(time.Unix(0, p.activity.Load()).Add(p.idle))
	}
	p.routerEnd = routerEnd
	p.connEnd = c.life.detach()
	s.acct.Close()
}

// arm restarts the stream's idle timeout and max_stream_duration on the record, as the stream
// counted them: the idle time from the last byte (see watchIdle), the duration from the request.
func (p *parkedTunnel) arm(idle time.Duration, deadline time.Time) {
	p.idle = idle
	if !deadline.IsZero() {
		ms := p.m.stats
		p.maxDur = time.AfterFunc(max(time.Until(deadline), 0), func() {
			p.timeout(ms.RqMaxDurationReached, errParkedMaxTime)
		})
	}
}

// timeout aborts the tunnel for one of its timeouts, counted in c, unless it has ended or another
// timeout came first.
func (p *parkedTunnel) timeout(c *stats.Counter, why error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended || p.timedOut {
		return
	}
	p.timedOut = true
	c.Inc()
	p.t.Abort(why)
}

// idleSweepGap is the least time between two idle sweeps, which bounds their cost when many
// tunnels fall idle one after another: a timeout fires at most this late.
const idleSweepGap = 20 * time.Millisecond

// watchIdle makes sure the idle sweep runs by at, when a parked tunnel would be idle too long.
// One timer per manager instead of one per tunnel: an idle tunnel's timer and closure were about
// 120 bytes of heap each, a tenth of what a parked tunnel holds.
func (m *Manager) watchIdle(at time.Time) {
	m.liveMu.Lock()
	defer m.liveMu.Unlock()
	if m.idleTimer == nil {
		m.idleTimer = time.AfterFunc(time.Until(at), m.sweepIdle)
		m.idleNext = at
		return
	}
	if m.idleNext.IsZero() || at.Before(m.idleNext) {
		m.idleNext = at
		m.idleTimer.Reset(time.Until(at))
	}
}

// sweepIdle aborts the parked tunnels idle for longer than their timeout and sets the timer for
// the next one to fall due. It reads each tunnel's last activity, so traffic needs no timer work.
func (m *Manager) sweepIdle() {
	now := time.Now()
	var expired []*parkedTunnel
	var next time.Time
	m.liveMu.Lock()
	for t := range m.tunnels {
		p, ok := t.(*parkedTunnel)
		if !ok || p.idle == 0 {
			continue
		}
		at := time.Unix(0, p.activity.Load()).Add(p.idle)
		if !at.After(now) {
			expired = append(expired, p)
		} else if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	m.idleNext = next
	if !next.IsZero() {
		m.idleTimer.Reset(max(next.Sub(now), idleSweepGap))
	}
	m.liveMu.Unlock()
	for _, p := range expired {
		p.timeout(m.stats.RqIdleTimeout, errParkedIdle)
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

// abortEngine aborts the stream's engine tunnel, if the engine took it, or the engine's reads of
// its client; a stream still carrying its tunnel ends with the server's context instead.
func (s *stream) abortEngine() {
	if t := s.engine.Load(); t != nil {
		t.Abort(errStreamEnded)
	}
	s.abortReads(errStreamEnded)
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
