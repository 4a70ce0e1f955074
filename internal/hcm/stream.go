package hcm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/filter"
	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/cancelctx"
	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/memacct"
	"github.com/switchyard-proxy/switchyard/internal/router"
	"github.com/switchyard-proxy/switchyard/internal/tunnel"
	"github.com/switchyard-proxy/switchyard/internal/workers"
)

// stream is one request/response exchange, or one upgrade and its tunnel.
//
// Ownership: the decode direction (request headers, body, upgrade payload from the client) runs on
// the connection's goroutine. The encode direction runs on whichever goroutine holds encMu: the
// router's upstream goroutine, or the decode goroutine for a local reply. Timers only ever reset.
type stream struct {
	m      *Manager
	down   downstream // the codec side: HTTP/1.1 connection or HTTP/2 stream
	ri     *requestInfo
	ctx    *cancelctx.Context
	h      *headers.Map
	method string

	upgrade string        // lower-cased type of an accepted upgrade, "" otherwise
	upStats *UpgradeStats // nil unless upgrade != ""
	route   *config.Route
	vh      *config.VirtualHost
	filters []any
	// bareEncoder: a local reply sent before any filter existed encodes straight to the codec,
	// and nothing aborts it.
	bareEncoder bool

	dec          *iterator // owned by the decode goroutine
	decoderLimit atomic.Int64
	decodeDone   atomic.Bool // end of stream has entered the decode chain
	expect100    bool

	encMu       sync.Mutex // guards enc and respEnded
	enc         *iterator
	respEnded   bool // the response's end has been written (or the stream reset)
	respStarted atomic.Bool
	localReply  atomic.Bool
	connClose   atomic.Bool // the connection must not carry another request after this one

	tunnelOpen atomic.Bool // a 101 went downstream
	upEnded    atomic.Bool // the client's half of the tunnel ended
	downEnded  atomic.Bool // the upstream's half of the tunnel ended (written downstream)

	finished  atomic.Bool   // markDone ran: the exchange (or tunnel) is over
	done      chan struct{} // closed by markDone; made by the first waiter (doneChan), under doneMu
	doneOnce  sync.Once
	wasReset  atomic.Bool
	resetOnce sync.Once

	wsDown    tunnel.FrameTracker // WebSocket frames written to the client; guarded by encMu
	goAway    atomic.Bool         // the drain time ran out: close the tunnel at the next frame boundary
	closeSent bool                // the Close (or FIN) toward the client went out; guarded by encMu

	activity atomic.Int64 // unix nanos of the last byte either way, for the idle timer
	timers   []*time.Timer

	// The hand-off of an HTTP/1.1 tunnel to the tunnel engine (see OfferTunnel).
	handoffMu sync.Mutex
	handoff   *handoff // offered by the router, taken by the decode pump
	pumpGone  bool     // the decode pump has stopped: too late to hand off
	detached  bool     // the engine carries the tunnel; set by the decode goroutine
	engine    atomic.Pointer[tunnel.Tunnel]

	// The engine reading an HTTP/1.1 client's side of a tunnel (see ReadClientOnEngine).
	readsOffered bool // guarded by handoffMu
	clientReads  atomic.Pointer[clientReads]

	// The on-demand decode pump of an HTTP/2 tunnel (see PumpOnDemand). The bools are owned by
	// the stream's goroutine.
	pump         workers.Demand
	pumpEligible bool // the pump may go on demand
	pumpStarted  bool // it went on demand (PumpOnDemand)
	pumpFinished bool // the client's side ended (or failed) through the on-demand pump

	// Leaving a tunnel that runs on callbacks alone (see LeaveTunnel).
	unattended bool       // the router's part needs no goroutine; set on the stream's goroutine
	left       bool       // the stream's goroutine left: end ends the stream; owned by that goroutine
	doneMu     sync.Mutex // orders onDone against markDone
	onDone     func()     // run once done closes, after the goroutine left

	// For the hand-off, which re-arms the timers on the record that outlives the stream.
	idleTimeout time.Duration // 0: none
	deadline    time.Time     // max_stream_duration; zero: none

	// acct is charged with the bytes held for this stream, for reset_high_memory_stream; nil
	// without buffer accounting. Opened in newStream, closed in finish.
	acct *memacct.Account
}

// handoff is the router's half of a tunnel, offered to the engine.
type handoff struct {
	up      net.Conn
	towardB *tunnel.FrameTracker // frames written upstream so far
	detach  func() (end func())  // the router's, once the engine has the tunnel
}

func newStream(ctx context.Context, m *Manager, down downstream, h *headers.Map) *stream {
	// Strings kept for the stream's life are copies: a view would keep the whole request head.
	s := &stream{m: m, down: down, ri: down.info(), h: h, method: strings.Clone(h.Get(headers.Method))}
	s.ctx = cancelctx.New(ctx)
	s.decoderLimit.Store(int64(m.bufferLimit))
	s.touch()
	s.acct = m.memory.NewAccount(func() { s.reset("overload_manager") })
	return s
}

// run serves the stream to its end and reports whether the connection may carry another request.
func (s *stream) run() bool {
	ms := s.m.stats
	cfg := s.m.cfg
	ms.RqTotal.Inc()
	ms.RqActive.Inc()
	defer func() {
		if !s.detached && !s.left {
			s.end()
		}
	}()

	if s.m.shedRequest != nil && s.m.shedRequest() {
		// Envoy drops new requests (upgrades too) as soon as the headers are decoded, before the
		// filter chain exists. A request with nothing more to read keeps its connection.
		ms.RqOverloadClose.Inc()
		if s.ri.bodyless && !headers.IsUpgrade(s.h) {
			s.decodeDone.Store(true)
			s.replyWithoutFilters(503, "envoy overloaded", "overload")
			return s.keepAlive()
		}
		s.earlyReply(503, "envoy overloaded", "overload")
		return false
	}

	h := s.h
	if s.ri.http10 {
		if !cfg.AcceptHTTP10 {
			s.earlyReply(426, "", "http1.0_not_allowed")
			return false
		}
		if h.Get(headers.Authority) == "" {
			h.Set(headers.Authority, cfg.DefaultHostHTTP10)
		}
	}
	if s.method == "CONNECT" {
		// CONNECT tunnels are not served yet; Envoy answers an unconfigured CONNECT with 404.
		s.earlyReply(404, "", "connect_not_supported")
		return false
	}

	isUpgrade := s.prepareRequestHeaders()
	s.vh = router.SelectVirtualHost(cfg.Routes, h.Get(headers.Authority))
	s.route = router.Match(s.vh, h)

	chain := cfg.HTTPFilters
	if isUpgrade {
		token := headers.UpgradeToken(h)
		verdict, c := decideUpgrade(cfg, s.route, token)
		switch verdict {
		case upgradeRejected:
			ms.RqWsOnNonWsRoute.Inc()
			ms.Upgrade(strings.ToLower(token)).Rejected.Inc()
			s.earlyReply(403, "", "upgrade_failed")
			return false
		case upgradeAccepted:
			s.upgrade = strings.Clone(strings.ToLower(token))
			s.upStats = ms.Upgrade(s.upgrade)
			s.upStats.Accepted.Inc()
			ms.CxUpgradesTotal.Inc()
			ms.CxUpgradesActive.Inc() // until end (or the parked tunnel's end)
			chain = c
		case upgradeNoRoute:
			// Envoy: with no route the upgrade is neither accepted nor refused; the router's 404
			// answers it, and the connection closes because the payload cannot be framed.
			headers.StripUpgrade(h)
			s.connClose.Store(true)
		}
	}
	s.buildChain(chain)
	s.startTimers()

	end := s.upgrade == "" && !isUpgrade && s.ri.bodyless
	if end {
		s.decodeDone.Store(true)
	}
	s.pumpEligible = !end && s.canPumpOnDemand()
	s.dec.pushHeaders(h, end) // the router may call PumpOnDemand, and run the tunnel, in here
	s.h = nil                 // the chain has them; a tunnel that stays open for hours does not keep them here
	if s.pumpStarted {
		if s.unattended && s.leave() {
			return false
		}
		s.stopPumpOnDemand()
	}
	if !end && !s.aborted() && !s.pumpFinished {
		if isUpgrade && s.upgrade == "" {
			// Not accepted and no route: the bytes after the head are not ours to parse.
			s.connClose.Store(true)
		} else {
			s.pumpRequest()
		}
	}
	if s.detached || s.left {
		return false // the engine has the connection now, or its client's side
	}
	select {
	case <-s.doneChan():
	case <-s.ctx.Done():
	}
	return s.keepAlive()
}

// prepareRequestHeaders applies the connection manager's request rules and reports whether the
// request is still an upgrade afterwards.
func (s *stream) prepareRequestHeaders() bool {
	h, cfg := s.h, s.m.cfg
	headers.StripH2C(h)
	if len(cfg.IgnoreUpgrades) > 0 && h.Has("upgrade") {
		var keep []string
		for _, t := range h.Tokens("upgrade") {
			ignored := false
			for _, sm := range cfg.IgnoreUpgrades {
				if router.MatchString(sm, t) {
					ignored = true
					break
				}
			}
			if !ignored {
				keep = append(keep, t)
			}
		}
		if len(keep) == 0 {
			headers.StripUpgrade(h)
		} else {
			h.Set("upgrade", strings.Join(keep, ", "))
		}
	}
	// RFC 9110 §7.8: a server must ignore Upgrade in an HTTP/1.0 request.
	isUpgrade := !s.ri.http10 && headers.IsUpgrade(h)
	if strings.EqualFold(h.Get("expect"), "100-continue") {
		// Like Envoy without proxy_100_continue: we answer 100 ourselves when we start reading the body.
		h.Del("expect")
		s.expect100 = s.ri.canExpect && !s.ri.bodyless
	}
	headers.RemoveHopByHop(h, isUpgrade)

	// Forwarding headers, as Envoy sets them for every request.
	remoteIP, _, _ := net.SplitHostPort(s.ri.remote)
	if cfg.UseRemoteAddress {
		if xff := h.Get("x-forwarded-for"); xff != "" {
			h.Set("x-forwarded-for", xff+", "+remoteIP)
		} else {
			h.Set("x-forwarded-for", remoteIP)
		}
		// The client's x-forwarded-proto is kept only when it came through trusted proxies
		// (xff_num_trusted_hops): an edge proxy behind a TLS load balancer must pass on "https".
		if cfg.XFFNumTrustedHops == 0 || !h.Has("x-forwarded-proto") {
			h.Set("x-forwarded-proto", s.ri.scheme)
		}
	} else if !h.Has("x-forwarded-proto") {
		h.Set("x-forwarded-proto", s.ri.scheme)
	}
	if cfg.GenerateRequestID && !h.Has("x-request-id") {
		h.Set("x-request-id", newRequestID())
	}
	h.Set(headers.Scheme, s.ri.scheme)
	return isUpgrade
}

// buildChain instantiates the stream's filters, skipping those the route disables. Both
// directions' stages share one array and both iterators one allocation.
func (s *stream) buildChain(chain []*config.HTTPFilter) {
	s.filters = make([]any, 0, len(chain))
	stages := make([]stage, 0, 2*len(chain))
	var namesBuf [8]string // the encoder stages' names, without an allocation for short chains
	names := namesBuf[:0]
	for _, cf := range chain {
		nf := s.m.chains[cf]
		if s.route != nil && s.route.DisabledFilters[nf.name] {
			continue
		}
		f := nf.factory(s)
		s.filters = append(s.filters, f)
		names = append(names, nf.name)
		if d, ok := f.(filter.DecoderFilter); ok {
			stages = append(stages, stage{name: nf.name, dec: d})
		}
	}
	nDec := len(stages)
	for i := len(s.filters) - 1; i >= 0; i-- { // encoding runs the chain backwards
		if e, ok := s.filters[i].(filter.EncoderFilter); ok {
			stages = append(stages, stage{name: names[i], enc: e})
		}
	}
	its := new([2]iterator)
	s.dec, s.enc = &its[0], &its[1]
	s.dec.init(stages[:nDec:nDec], s, true)
	s.dec.acct = s.acct
	s.dec.sinkIgnoresHeaders = true
	s.enc.init(stages[nDec:], s, false)
	s.enc.acct = s.acct
}

// stageLimit, stageOverflow, directionAborted, sinkHeaders and sinkData make the stream its
// iterators' iterHost. Decoding: a stage holds up to the decoder limit, a stage over it answers 413,
// and what passes the router goes nowhere. Encoding: a stage holds up to the buffer limit, a stage
// over it resets the stream, and what passes the first filter goes to the codec.
func (s *stream) stageLimit(decode bool) int {
	if decode {
		return int(s.decoderLimit.Load())
	}
	return s.m.bufferLimit
}

func (s *stream) stageOverflow(decode bool) {
	if decode {
		s.m.stats.RqTooLarge.Inc()
		s.SendLocalReply(413, "Payload Too Large", "request_payload_too_large")
		return
	}
	s.m.stats.RsTooLarge.Inc()
	s.reset("response_payload_too_large")
}

func (s *stream) directionAborted(decode bool) bool {
	switch {
	case decode:
		return s.aborted()
	case s.bareEncoder:
		return false
	}
	return s.wasReset.Load()
}

func (s *stream) sinkHeaders(decode bool, h *headers.Map, end bool) {
	if !decode {
		s.writeHeaders(h, end)
	}
}

func (s *stream) sinkData(decode bool, b *buffer.Buffer, end bool) {
	if !decode {
		s.writeData(b, end)
	}
}

func (s *stream) aborted() bool { return s.localReply.Load() || s.wasReset.Load() }

// pumpEnded is the end of the decode pump's reads: the client's end of the request (or of its
// side of the tunnel), a request body the codec could not parse, or a broken connection.
func (s *stream) pumpEnded(err error, tunnelMode bool) {
	s.pumpEndedVia(err, tunnelMode, s.dec.pushData)
}

// pumpEndedVia is pumpEnded with the end of the request pushed through push.
func (s *stream) pumpEndedVia(err error, tunnelMode bool, push func(b *buffer.Buffer, end bool)) {
	var bad *badRequestError
	switch {
	case err == io.EOF:
		s.decodeDone.Store(true)
		if tunnelMode {
			s.upEnded.Store(true)
		}
		push(&buffer.Buffer{}, true)
		if tunnelMode {
			s.maybeTunnelDone()
		}
	case errors.As(err, &bad) && !s.respStarted.Load():
		s.m.stats.CxProtocolError.Inc()
		s.connClose.Store(true)
		s.SendLocalReply(400, "Bad Request", bad.Details)
	case !s.respFinished():
		s.reset("downstream_remote_disconnect")
	}
}

// pumpRequest is the decode pump: it feeds the request body, or an accepted upgrade's payload,
// into the chain until the client ends its side. The codec hands out pooled slabs only while bytes
// move, so an idle tunnel holds no copy buffer.
func (s *stream) pumpRequest() {
	tunnelMode := s.upgrade != ""
	if s.expect100 {
		s.down.continue100()
	}
	var b buffer.Buffer // reused for every slab: the chain copies what it keeps
	if d, ok := s.down.(*h1Stream); ok && tunnelMode {
		pass := func(p []byte) bool {
			if s.aborted() {
				return false
			}
			s.touch()
			s.upStats.BytesUp.Add(uint64(len(p)))
			b.SetBytes(p)
			s.dec.pushData(&b, false)
			return true
		}
		err := d.streamTunnel(pass)
		if s.aborted() {
			return
		}
		if err == nil {
			err = io.EOF
		}
		if s.takeClientReads(err, pass) || s.takeHandoff(err) {
			return
		}
		s.pumpEnded(err, true)
		return
	}
	for !s.aborted() && !(s.respFinished() && !tunnelMode) {
		slab, n, err := s.down.read(tunnelMode)
		if err != nil {
			if tunnelMode && s.takeHandoff(err) {
				return
			}
			s.pumpEnded(err, tunnelMode)
			return
		}
		s.touch()
		if tunnelMode {
			s.upStats.BytesUp.Add(uint64(n))
		}
		b.SetBytes((*slab)[:n])
		s.dec.pushData(&b, false)
		buffer.PutSlab(slab)
	}
}

// The on-demand pump. An accepted upgrade from an HTTP/2 client whose chain is the router alone
// needs no goroutine waiting for the client's bytes: the connection's reader passes them to the
// upstream itself (InlineTunnel), and what it cannot pass at once (the upstream's socket is full,
// the 101 has not come yet), the client's END_STREAM and a reset are taken by a pump goroutine
// started by the stream's read hook (a workers.Demand), which runs while there is something to
// read and ends. The
// stream's own goroutine is then free to run the router's exchange with the upstream and the
// tunnel's upstream side (PumpOnDemand), instead of the router starting a goroutine for them: an
// idle tunnel holds one goroutine fewer, and a handshake makes one goroutine hand-off fewer. When
// the router returns, the stream's goroutine takes the pump back. The router asks for it only once
// it is ready for DecodeData: bytes passed before that would be dropped.

// canPumpOnDemand reports whether the stream could have the on-demand pump.
func (s *stream) canPumpOnDemand() bool {
	if _, ok := s.down.(*h2Stream); !ok || s.upgrade == "" || len(s.filters) != 1 {
		return false
	}
	_, ok := s.filters[0].(filter.DecoderFilter)
	return ok
}

// PumpOnDemand is the router, ready for the client's bytes, asking the stream to pass them on
// demand (see router.TunnelPumper); it runs on the stream's goroutine, inside DecodeHeaders.
// Client bytes that came before it wait in the codec, in order.
func (s *stream) PumpOnDemand() bool {
	if !s.pumpEligible || s.pumpStarted {
		return false
	}
	s.pumpStarted = true
	s.pump.Init(s.pumpReady)
	s.down.(*h2Stream).st.SetReadHook(s.pump.Ask)
	s.pump.Ask() // bytes may have come already
	return true
}

// stopPumpOnDemand hands the pump back to the stream's goroutine: it waits for a run of the
// on-demand pump under way to end.
func (s *stream) stopPumpOnDemand() {
	s.down.(*h2Stream).st.SetReadHook(nil)
	s.pumpFinished = s.pump.Stop()
}

// pumpReady is a run of the on-demand pump: it passes the client's bytes to the router while a
// read would return at once, and reports whether the client's side ended.
func (s *stream) pumpReady() (ended bool) {
	d := s.down.(*h2Stream)
	rf := s.filters[0].(filter.DecoderFilter) // the router (canPumpOnDemand)
	push := func(b *buffer.Buffer, end bool) {
		if !s.aborted() {
			rf.DecodeData(b, end)
		}
	}
	var b buffer.Buffer
	for !s.aborted() && d.st.TryWaitReadable() {
		slab, n, err := s.down.read(true)
		if err != nil {
			s.pumpEndedVia(err, true, push)
			return true
		}
		s.touch()
		s.upStats.BytesUp.Add(uint64(n))
		b.SetBytes((*slab)[:n])
		push(&b, false)
		buffer.PutSlab(slab)
	}
	return false
}

// LeaveTunnel is the router saying its part of the tunnel needs no goroutine any more (see
// router.TunnelLeaver). It runs on the stream's goroutine, inside DecodeHeaders.
func (s *stream) LeaveTunnel() { s.unattended = true }

// leave lets the stream's goroutine return while the tunnel goes on: the on-demand pump carries
// the client's bytes, the router's callbacks the upstream's, and what the goroutine would have
// done once the tunnel ended (take the pump back, read what the client still sends, end the
// stream, return the stream to the codec) runs on a goroutine started when the stream is done or
// its context ends. It reports false, changing nothing, when the stream is done already.
func (s *stream) leave() bool {
	d := s.down.(*h2Stream) // the on-demand pump is only ever an HTTP/2 stream's
	s.doneMu.Lock()
	defer s.doneMu.Unlock()
	if s.respFinished() {
		return false
	}
	finish := d.st.Detach()
	var once sync.Once
	resume := func() {
		once.Do(func() {
			workers.Go(func() {
				s.stopPumpOnDemand()
				if !s.pumpFinished && !s.aborted() {
					s.pumpRequest()
				}
				s.end()
				finish()
			})
		})
	}
	// The watch ends with the context, which end cancels.
	s.ctx.AfterFunc(resume)
	s.onDone = resume
	s.left = true
	return true
}

// maybeTunnelDone ends a tunnel once both halves have ended.
func (s *stream) maybeTunnelDone() {
	if s.upEnded.Load() && s.downEnded.Load() {
		s.markDone()
	}
}

func (s *stream) respFinished() bool { return s.finished.Load() }

// closedDone is doneChan's answer once the stream is done and no one had waited.
var closedDone = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// doneChan is closed when the stream is done. It is made by the first goroutine to wait: a
// tunnel whose goroutine left holds none.
func (s *stream) doneChan() <-chan struct{} {
	s.doneMu.Lock()
	defer s.doneMu.Unlock()
	if s.done == nil {
		if s.finished.Load() {
			return closedDone
		}
		s.done = make(chan struct{})
	}
	return s.done
}

func (s *stream) markDone() {
	s.doneOnce.Do(func() {
		s.doneMu.Lock()
		s.finished.Store(true)
		if s.done != nil {
			close(s.done)
		}
		s.doneMu.Unlock()
		if !s.decodeDone.Load() || s.upgrade != "" {
			// The request is still arriving (or is a tunnel) and the exchange is over: stop reading.
			s.down.abortRead()
		}
		s.doneMu.Lock()
		onDone := s.onDone
		s.onDone = nil
		s.doneMu.Unlock()
		if onDone != nil {
			onDone()
		}
	})
}

// reset tears the stream down (for HTTP/1.1 the whole connection, for HTTP/2 the stream). The
// router sees the context end and closes its upstream side.
func (s *stream) reset(reason string) {
	s.resetOnce.Do(func() {
		s.wasReset.Store(true)
		s.connClose.Store(true)
		s.m.log.Debug("stream reset", "reason", reason, "remote", s.ri.remote)
		s.ctx.Cancel()
		s.down.reset()
		s.markDone()
	})
}

// keepAlive decides whether the connection may carry another request.
func (s *stream) keepAlive() bool {
	return !s.connClose.Load() && !s.wasReset.Load() && s.decodeDone.Load() && s.respFinished() && s.down.keepAlive()
}

// finish stops timers, ends the filters and releases the stream's context.
func (s *stream) finish() {
	for _, t := range s.timers {
		t.Stop()
	}
	if s.tunnelOpen.Load() {
		s.upStats.Active.Dec()
		s.m.untrackTunnel(s)
	}
	s.ctx.Cancel()
	for _, f := range s.filters {
		if d, ok := f.(filter.Destroyer); ok {
			d.OnDestroy()
		}
	}
	s.acct.Close()
}

// earlyReply answers before any filter exists, and closes the connection.
func (s *stream) earlyReply(status int, body, details string) {
	s.connClose.Store(true)
	s.replyWithoutFilters(status, body, details)
}

// replyWithoutFilters sends a local reply straight to the codec: no filter chain was built.
func (s *stream) replyWithoutFilters(status int, body, details string) {
	s.bareEncoder = true
	s.enc = new(iterator)
	s.enc.init(nil, s, false)
	s.SendLocalReply(status, body, details)
}

func (s *stream) touch() { s.activity.Store(time.Now().UnixNano()) }

// startTimers arms the stream's timeouts: idle (route idle_timeout, else stream_idle_timeout),
// request_timeout and max_stream_duration. A timer that fires before the response has started
// answers 408; after, it resets the stream.
func (s *stream) startTimers() {
	cfg := s.m.cfg
	idle := cfg.StreamIdleTimeout
	if s.route != nil && s.route.Action != nil && s.route.Action.IdleTimeout != nil {
		idle = *s.route.Action.IdleTimeout
	}
	s.idleTimeout = idle
	if idle > 0 {
		var t *time.Timer
		t = time.AfterFunc(idle, func() {
			if since := time.Since(time.Unix(0, s.activity.Load())); since < idle {
				t.Reset(idle - since)
				return
			}
			s.m.stats.RqIdleTimeout.Inc()
			s.timeout(408, "stream timeout", "stream_idle_timeout")
		})
		s.timers = append(s.timers, t)
	}
	if d := cfg.RequestTimeout; d > 0 {
		s.timers = append(s.timers, time.AfterFunc(d, func() {
			if s.decodeDone.Load() || s.respStarted.Load() {
				return
			}
			s.m.stats.RqTimeout.Inc()
			s.timeout(408, "request timeout", "request_overall_timeout")
		}))
	}
	if d := cfg.MaxStreamDuration; d > 0 {
		s.deadline = time.Now().Add(d)
		s.timers = append(s.timers, time.AfterFunc(d, func() {
			s.m.stats.RqMaxDurationReached.Inc()
			s.timeout(408, "downstream duration timeout", "max_duration_timeout")
		}))
	}
}

// timeout answers a timed-out stream without ever waiting behind a blocked write.
func (s *stream) timeout(status int, body, details string) {
	if s.respStarted.Load() || !s.encMu.TryLock() {
		s.reset(details)
		return
	}
	s.encMu.Unlock()
	s.connClose.Store(true)
	s.SendLocalReply(status, body, details)
	s.ctx.Cancel()
}

// filter.Callbacks and router.StreamInfo.

func (s *stream) Context() context.Context { return s.ctx }
func (s *stream) UpgradeType() string      { return s.upgrade }
func (s *stream) RouteName() string {
	if s.route == nil {
		return ""
	}
	return s.route.Name
}
func (s *stream) SetDecoderBufferLimit(n int)      { s.decoderLimit.Store(int64(n)) }
func (s *stream) DecoderBufferLimit() int          { return int(s.decoderLimit.Load()) }
func (s *stream) Route() *config.Route             { return s.route }
func (s *stream) VirtualHost() *config.VirtualHost { return s.vh }
func (s *stream) RouteTable() *config.RouteTable   { return s.m.cfg.Routes }
func (s *stream) BufferLimit() int                 { return s.m.bufferLimit }
func (s *stream) RequestChunked() bool             { return s.ri.chunked }
func (s *stream) ExtendedConnect() bool            { return s.ri.extended }
func (s *stream) DownstreamRemoteAddress() string  { return s.ri.remote }

// MemoryAccount is router.AccountHolder: the router charges what it holds for the stream here.
func (s *stream) MemoryAccount() *memacct.Account { return s.acct }

// SendLocalReply answers from the proxy, through the encoder filters; after the response has
// started it resets the stream instead.
func (s *stream) SendLocalReply(status int, body, details string) {
	s.localReply.Store(true)
	if s.respStarted.Load() {
		// Never wait for the encode lock here: its holder may be blocked writing to a client
		// that does not read, and the reset is what unblocks it.
		s.reset(details)
		return
	}
	s.encMu.Lock()
	defer s.encMu.Unlock()
	if s.respStarted.Load() {
		s.reset(details)
		return
	}
	h := headers.New(headers.Status, strconv.Itoa(status))
	if body != "" {
		h.Add("content-type", "text/plain")
	}
	h.Add("content-length", strconv.Itoa(len(body)))
	s.m.log.Debug("local reply", "status", status, "details", details)
	s.enc.pushHeaders(h, body == "")
	if body != "" {
		s.enc.pushData(buffer.Wrap([]byte(body)), true)
	}
}

// EncodeHeaders starts the response from the router or a filter.
func (s *stream) EncodeHeaders(h *headers.Map, end bool) {
	s.encMu.Lock()
	defer s.encMu.Unlock()
	if s.respStarted.Load() || s.wasReset.Load() {
		return
	}
	s.enc.pushHeaders(h, end)
}

// EncodeData continues the response.
func (s *stream) EncodeData(b *buffer.Buffer, end bool) {
	s.encMu.Lock()
	defer s.encMu.Unlock()
	if s.closeSent && end && !s.downEnded.Load() {
		// The upstream answered the drain's Close by ending its half: now the tunnel may end.
		s.downEnded.Store(true)
		s.maybeTunnelDone()
	}
	if !s.respStarted.Load() || s.respEnded || s.wasReset.Load() {
		return
	}
	if s.tunnelOpen.Load() {
		s.upStats.BytesDown.Add(uint64(b.Len()))
		s.touch()
	}
	s.enc.pushData(b, end)
}

// newRequestID returns a random UUID v4, as Envoy's x-request-id.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	j := 0
	for i := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		hex.Encode(out[j:j+2], b[i:i+1])
		j += 2
	}
	return string(out[:])
}

// writeHeaders is the last stage of the encode direction: the parts of writing a response head
// that are the same for every codec. Called with encMu held.
func (s *stream) writeHeaders(h *headers.Map, end bool) {
	status, _ := strconv.Atoi(h.Get(headers.Status))
	s.respStarted.Store(true)
	switchProto := status == 101 && s.upgrade != "" && headers.IsUpgrade(h) &&
		strings.EqualFold(headers.UpgradeToken(h), s.upgrade)
	if status == 101 && !switchProto {
		// The router only passes a 101 that answers this upgrade; a switch the client did not
		// ask for must never reach it.
		s.m.log.Error("dropping a 101 that does not answer the request", "upgrade", s.upgrade)
		s.reset("invalid_101")
		return
	}
	if switchProto {
		upgrade := h.Values("upgrade")
		headers.RemoveHopByHop(h, false)
		h.Set("connection", "upgrade")
		for _, u := range upgrade {
			h.Add("upgrade", u)
		}
		h.Del("content-length")
	} else {
		offered := h.Values("upgrade")
		headers.RemoveHopByHop(h, false)
		if status == 426 {
			// RFC 9110 §15.5.22: a 426 must say which protocols the client could upgrade to.
			for _, u := range offered {
				h.Add("upgrade", u)
			}
		}
	}
	if name := s.m.cfg.ServerName; name != "" {
		h.Set("server", name)
	}
	if !h.Has("date") {
		h.Set("date", httpDate())
	}
	s.m.stats.countResponse(status)
	bodyless, err := s.down.writeHead(h, status, end, switchProto)
	if err != nil {
		s.reset("downstream_write_failed")
		return
	}
	if switchProto {
		s.tunnelOpen.Store(true)
		s.upStats.Established.Inc()
		s.upStats.Active.Inc()
		s.m.trackTunnel(s)
		return
	}
	if end || bodyless {
		s.finishResponse()
	}
}

// writeData writes body bytes or tunnel payload downstream. Called with encMu held.
func (s *stream) writeData(b *buffer.Buffer, end bool) {
	if s.respEnded {
		return
	}
	if b.Len() > 0 {
		if err := s.down.writeBody(b.Bytes()); err != nil {
			s.reset("downstream_write_failed")
			return
		}
		if s.upgrade == "websocket" && s.tunnelOpen.Load() {
			s.wsDown.Feed(b.Bytes())
		}
	}
	if end {
		s.finishResponse()
		return
	}
	if s.goAway.Load() {
		s.closeTowardClientLocked()
	}
}

// goingAway ends the tunnel's two directions cleanly at the drain deadline. A direction busy
// writing finishes its current frame and closes after it.
func (s *stream) goingAway() {
	s.handoffMu.Lock()
	s.goAway.Store(true)
	handedOff := s.handoff != nil
	s.handoffMu.Unlock()
	if handedOff {
		// The engine has the tunnel, or is about to: takeHandoff passes the GoAway on.
		if t := s.engine.Load(); t != nil {
			t.GoAway()
		}
		return
	}
	if s.encMu.TryLock() {
		s.closeTowardClientLocked()
		s.encMu.Unlock()
	}
	for _, f := range s.filters {
		if d, ok := f.(filter.DrainCloser); ok {
			d.OnDrainDeadline()
		}
	}
}

// closeTowardClientLocked sends the client a WebSocket Close 1001 between frames (or just ends a
// tunnel of another type), then half-closes. Called with encMu held.
func (s *stream) closeTowardClientLocked() {
	if s.closeSent || s.respEnded || !s.tunnelOpen.Load() {
		return
	}
	if s.upgrade == "websocket" {
		if !s.wsDown.AtBoundary() {
			return // the frame being written ends first; writeData comes back here after it
		}
		if err := s.down.writeBody(tunnel.CloseFrame(tunnel.CloseGoingAway, false)); err != nil {
			s.reset("downstream_write_failed")
			return
		}
	}
	s.closeSent = true
	// Half-close toward the client, but the upstream's half has not ended: it still owes its
	// answer to the Close the router sent it, and closing its socket with that answer unread
	// would reset it (RST) before it reads our Close. EncodeData ends the tunnel when the
	// upstream ends its half; the server closes whatever is left after a grace period.
	s.respEnded = true
	if err := s.down.closeTunnelWrite(); err != nil {
		s.reset("half_close_failed")
	}
}

// finishResponse ends the response: the last chunk, or the tunnel's half-close toward the client.
func (s *stream) finishResponse() {
	s.respEnded = true
	if s.tunnelOpen.Load() {
		s.downEnded.Store(true)
		if err := s.down.closeTunnelWrite(); err != nil {
			s.reset("half_close_failed")
			return
		}
		s.maybeTunnelDone()
		return
	}
	if err := s.down.endBody(); err != nil {
		s.reset("downstream_write_failed")
		return
	}
	s.markDone()
}

// end is the stream's end, when run returns: what run counted, and finish. A stream whose tunnel
// went to the engine ends as a parkedTunnel instead.
func (s *stream) end() {
	ms := s.m.stats
	if s.upgrade != "" {
		ms.CxUpgradesActive.Dec()
	}
	s.finish()
	ms.RqActive.Dec()
}

// OfferTunnel is the router offering its half of an open tunnel to the tunnel engine, so that
// neither half keeps a goroutine while the tunnel is idle. It accepts only what the engine can
// carry without changing behaviour: an HTTP/1.1 client on a plain TCP socket, a chain that is
// the router alone (no filter sees the payload), no drain under way. On true the router stops
// reading its side; the decode pump hands both sockets to the engine once it has passed on every
// client byte it read (see takeHandoff).
func (s *stream) OfferTunnel(up net.Conn, towardB *tunnel.FrameTracker, detach func() (end func())) bool {
	d, ok := s.down.(*h1Stream)
	if !ok || len(s.filters) != 1 || !tunnel.Pluggable(d.c.nc) || !tunnel.Pluggable(up) {
		return false
	}
	s.handoffMu.Lock()
	if s.pumpGone || s.goAway.Load() || s.aborted() {
		s.handoffMu.Unlock()
		return false
	}
	s.handoff = &handoff{up: up, towardB: towardB, detach: detach}
	s.handoffMu.Unlock()
	d.c.wakeReader() // the pump's wait for client bytes returns; it takes the hand-off
	return true
}

// InlineTunnel lets an HTTP/2 connection's reader pass this tunnel's client bytes straight to the
// router's write (see router.InlineTaker), when the chain is the router alone, counting them as
// the decode pump would. The pump stays: it carries whatever write does not take.
func (s *stream) InlineTunnel(write func(p []byte) int) bool {
	d, ok := s.down.(*h2Stream)
	if !ok || len(s.filters) != 1 {
		return false
	}
	d.st.SetDataSink(func(p []byte) int {
		if s.aborted() {
			return 0
		}
		n := write(p)
		if n > 0 {
			s.touch()
			s.upStats.BytesUp.Add(uint64(n))
		}
		return n
	})
	return true
}

// TunnelEncoder returns a non-blocking EncodeData for this tunnel's payload (see
// router.TunnelEncoder), when the chain is the router alone.
func (s *stream) TunnelEncoder() func(p []byte) int {
	d, ok := s.down.(tryBodyWriter)
	if !ok || len(s.filters) != 1 {
		return nil
	}
	return func(p []byte) int { return s.tryEncodeTunnel(d, p) }
}

// TunnelSender returns the stream's side of the tunnel engine's sends of upstream bytes as DATA
// (see tunnel.Sender), when the client is an HTTP/2 stream and the chain the router alone; else
// nil.
func (s *stream) TunnelSender() tunnel.Sender {
	d, ok := s.down.(*h2Stream)
	if !ok || len(s.filters) != 1 {
		return nil
	}
	return d
}

// tryBodyWriter is a downstream that can write tunnel payload without waiting: what it takes now
// (HTTP/1.1: what the socket takes; HTTP/2: all or nothing, as the windows and the connection's
// other writes allow). Called with the stream's encMu held.
type tryBodyWriter interface {
	tryWriteBody(p []byte) int
}

// tryEncodeTunnel writes what the client's socket takes now and counts it as EncodeData would.
// It takes nothing (0) whenever EncodeData would do more than write (see lockTunnelEncode): the
// caller then queues, behind it.
func (s *stream) tryEncodeTunnel(d tryBodyWriter, p []byte) int {
	if !s.lockTunnelEncode() {
		return 0
	}
	n := d.tryWriteBody(p)
	s.unlockTunnelEncode(p[:n])
	return n
}

// lockTunnelEncode takes encMu for a tunnel write that must not wait, when EncodeData would do no
// more than write: the tunnel is open and not over, no drain is closing it, and no write is under
// way. It reports whether it did.
func (s *stream) lockTunnelEncode() bool {
	if s.goAway.Load() || !s.encMu.TryLock() {
		return false
	}
	if s.closeSent || s.respEnded || s.wasReset.Load() || !s.tunnelOpen.Load() {
		s.encMu.Unlock()
		return false
	}
	return true
}

// unlockTunnelEncode counts the payload written (as EncodeData would) and lets encMu go.
func (s *stream) unlockTunnelEncode(written []byte) {
	if n := len(written); n > 0 {
		s.upStats.BytesDown.Add(uint64(n))
		s.touch()
		if s.upgrade == "websocket" {
			s.wsDown.Feed(written)
		}
	}
	// A drain deadline that found this write under way left the Close to it (see goingAway). The
	// Close may have to wait for room, which the caller must not: it goes on a goroutine of its
	// own, as the deadline's timer would have sent it.
	closeNow := s.goAway.Load() && !s.closeSent
	s.encMu.Unlock()
	if closeNow {
		go func() {
			s.encMu.Lock()
			defer s.encMu.Unlock()
			s.closeTowardClientLocked()
		}()
	}
}

// errStreamEnded aborts an engine tunnel whose stream was reset or timed out.
var errStreamEnded = errors.New("stream ended")

// takeHandoff runs on the decode pump when its read fails in a tunnel: if the router offered its
// half, the pump starts the engine tunnel and reports true (it must stop). Every client byte read
// so far has gone upstream, so the engine starts at the right place in both streams. Once the
// engine has the sockets, the stream, its filters and its connection are reduced to a
// parkedTunnel, and let go.
func (s *stream) takeHandoff(readErr error) bool {
	s.handoffMu.Lock()
	h := s.handoff
	if h == nil {
		s.pumpGone = true
		s.handoffMu.Unlock()
		return false
	}
	s.handoffMu.Unlock()
	d := s.down.(*h1Stream)
	d.c.nc.SetReadDeadline(time.Time{})
	s.encMu.Lock()
	towardA := s.wsDown
	// Nothing encodes through the chain any more: the engine writes to the client.
	s.respEnded, s.enc = true, nil
	s.encMu.Unlock()
	p := &parkedTunnel{m: s.m, up: s.upStats, remote: s.ri.remote}
	p.activity.Store(s.activity.Load())
	p.mu.Lock() // the engine's Done and the record's timers wait until it is complete
	defer p.mu.Unlock()
	t, err := tunnel.DefaultEngine().Start(tunnel.Options{
		A: d.c.nc, B: h.up,
		WebSocket: s.upgrade == "websocket",
		TowardB:   *h.towardB, TowardA: towardA,
		Moved: p.moved,
		Done:  p.done,
	})
	if err != nil {
		s.m.log.Error("the tunnel engine refused a tunnel", "err", err)
		s.reset("tunnel_engine_failed")
		return true
	}
	p.t = t
	s.handoffMu.Lock()
	s.detached = true
	s.engine.Store(t)
	goAway := s.goAway.Load()
	s.handoffMu.Unlock()
	s.park(p, h.detach(), d.c)
	// A reset or a timeout that came before the timers moved reaches the engine here (or through
	// h1Stream.reset); later ones through the record; the server's close through
	// Manager.AbortTunnels.
	switch {
	case s.ctx.Err() != nil || s.wasReset.Load():
		t.Abort(errStreamEnded)
	case readErr != io.EOF && !isTimeout(readErr):
		t.Abort(readErr)
	case goAway:
		t.GoAway()
	}
	s.ctx.Cancel() // nothing watches it now; cancelling unlinks it from the server's context
	return true
}
