package router

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/cluster"
	"github.com/switchyard-proxy/switchyard/internal/codec/http2/client"
	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/rawsys"
	"github.com/switchyard-proxy/switchyard/internal/tunnel"
	"github.com/switchyard-proxy/switchyard/internal/workers"
)

// failure kinds a retry policy can name.
type failure int

const (
	failConnect failure = iota
	failReset           // disconnect, reset or per-try timeout before the response headers
	fail5xx
)

// upstreamHeaderLimit bounds an upstream response head.
const upstreamHeaderLimit = 60 << 10

// run is the upstream goroutine: it makes attempts until one produces the response, then relays
// that response (or carries the tunnel's upstream half) to the end.
func (r *routerFilter) run() {
	defer r.wg.Done()
	st := r.cl.Stats
	if err := r.cl.StartRequest(); err != nil {
		r.failOverloaded()
		return
	}
	defer func() {
		if !r.handedOff.Load() && !r.upPumped.Load() {
			r.cl.EndRequest()
		}
	}()
	retries := 0
	policy := r.action.Retry
	canRetry := func(f failure) bool {
		if policy == nil || retries >= policy.NumRetries || !r.canReplay() {
			return false
		}
		switch f {
		case failConnect:
			return policy.On5xx || policy.OnConnectFailure
		case failReset:
			return policy.On5xx || policy.OnReset
		default:
			return policy.On5xx
		}
	}
	for {
		if !r.attempt(canRetry, retries > 0) {
			return
		}
		retries++
		st.UpstreamRqRetry.Inc()
		// Envoy's default back-off: 25 ms base, doubled per retry, fully jittered.
		backoff := time.Duration(rand.Int64N(int64(25*time.Millisecond) << min(retries-1, 3)))
		select {
		case <-time.After(backoff):
		case <-r.cb.Context().Done():
			return
		}
		r.mu.Lock()
		if r.finished {
			r.mu.Unlock()
			return
		}
		r.att = nil
		if r.upgrade == "" {
			r.queue = append([]byte(nil), r.retained...)
			r.account()
		}
		r.mu.Unlock()
	}
}

// canReplay reports whether everything sent to the failed attempt can be sent again.
func (r *routerFilter) canReplay() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.finished && (r.upgrade != "" || r.retainable)
}

// fail answers the client from the router, unless the stream was already answered or ended.
func (r *routerFilter) fail(status int, body, details string) {
	r.mu.Lock()
	already := r.finished
	r.finished = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.cond.Broadcast()
	r.mu.Unlock()
	if !already {
		r.cb.SendLocalReply(status, body, details)
	}
}

// connect opens the attempt's exchange: a pooled HTTP/1.1 connection, or a stream on a shared
// HTTP/2 connection.
func (r *routerFilter) connect(ctx context.Context) (upstream, error) {
	if r.cl.Config.Protocol == config.UpstreamAuto {
		lease, cc, err := r.cl.AcquireAuto(ctx)
		switch {
		case err != nil:
			return nil, err
		case cc != nil && r.upgradeBody:
			return nil, errUpgradeBodyOverH2
		case cc != nil:
			return &h2Upstream{ctx: ctx, cc: cc, upgrade: r.upgrade}, nil
		}
		return &h1Upstream{lease: lease, method: r.method, chunked: r.chunked, makeKey: r.info.ExtendedConnect()}, nil
	}
	if r.cl.Config.Protocol == config.UpstreamHTTP2 {
		cc, err := r.cl.AcquireH2(ctx)
		if err != nil {
			return nil, err
		}
		return &h2Upstream{ctx: ctx, cc: cc, upgrade: r.upgrade, pickAgain: r.cl.AcquireH2}, nil
	}
	lease, err := r.cl.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return &h1Upstream{lease: lease, method: r.method, chunked: r.chunked, makeKey: r.info.ExtendedConnect()}, nil
}

// failOverloaded answers a request dropped by a circuit breaker the way Envoy does: 503 with
// x-envoy-overloaded: true, which also tells a proxy in front not to retry it.
func (r *routerFilter) failOverloaded() {
	r.mu.Lock()
	already := r.finished
	r.finished = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.cond.Broadcast()
	r.mu.Unlock()
	if already {
		return
	}
	h := headers.New(headers.Status, "503", "content-type", "text/plain",
		"content-length", strconv.Itoa(len(bodyOverflow)))
	if !r.suppressEnvoyHeaders {
		h.Set("x-envoy-overloaded", "true")
	}
	r.cb.EncodeHeaders(h, false)
	r.cb.EncodeData(buffer.Wrap([]byte(bodyOverflow)), true)
}

// attempt makes one try. It reports true when the caller should retry.
func (r *routerFilter) attempt(canRetry func(failure) bool, isRetry bool) bool {
	ctx := r.cb.Context()
	st := r.cl.Stats
	up, err := r.connect(ctx)
	if err != nil {
		var ce *cluster.ConnectError
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, errUpgradeBodyOverH2):
			r.fail(400, "", err.Error())
		case errors.Is(err, cluster.ErrOverflow):
			r.failOverloaded()
		case errors.Is(err, cluster.ErrNoHealthyUpstream):
			r.fail(503, bodyNoHealthy, "no_healthy_upstream")
		case errors.As(err, &ce):
			if canRetry(failConnect) {
				return true
			}
			r.fail(503, bodyConnectFailure, "upstream_reset_before_response_started{connection_failure}")
		default:
			r.fail(503, bodyConnectFailure, "upstream_reset_before_response_started{connection_failure}")
		}
		return false
	}
	st.UpstreamRqTotal.Inc()
	att := &attempt{up: up}
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		up.release(false)
		return false
	}
	r.att = att
	r.mu.Unlock()
	if p := r.action.Retry; p != nil && p.PerTryTimeout > 0 {
		att.perTry = time.AfterFunc(p.PerTryTimeout, func() { att.abort("per_try_timeout") })
	}
	stopPerTry := func() {
		if att.perTry != nil {
			att.perTry.Stop()
		}
	}
	defer stopPerTry()

	att.wmu.Lock()
	err = up.sendHeaders(r.upHeaders, !r.hasBody && r.upgrade == "")
	att.wmu.Unlock()
	if errors.Is(err, client.ErrNoExtendedConnect) {
		up.release(false)
		r.fail(503, "upstream does not support WebSocket over HTTP/2 (no SETTINGS_ENABLE_CONNECT_PROTOCOL)",
			"upstream_extended_connect_not_supported")
		return false
	}
	if err == nil && r.upgrade == "" && r.hasBody {
		r.wg.Add(1)
		go r.writeBody(att)
	}
	var resp *upResponse
	if err == nil {
		resp, err = up.response()
	}
	if err != nil {
		up.release(false)
		switch att.abortReason() {
		case "global_timeout", "downstream_reset", "stream_end":
			return false
		case "per_try_timeout":
			st.UpstreamRqPerTryTimeout.Inc()
			if canRetry(failReset) {
				return true
			}
			r.fail(504, bodyTimeout, "upstream_per_try_timeout")
			return false
		}
		if isProtocolError(err) {
			st.UpstreamCxProtocolError.Inc()
			r.fail(502, bodyProtocolError, "upstream_reset_before_response_started{protocol_error}")
			return false
		}
		st.UpstreamRqRxReset.Inc()
		if canRetry(failReset) {
			return true
		}
		r.fail(503, bodyReset, "upstream_reset_before_response_started{connection_termination}")
		return false
	}
	stopPerTry()
	status := resp.status
	st.CountResponse(status)
	if status >= 500 && canRetry(fail5xx) {
		up.release(false)
		return true
	}
	if isRetry && status < 500 {
		st.UpstreamRqRetrySuccess.Inc()
	}
	switch {
	case r.upgrade != "" && status == 101:
		if !validSwitch(resp, r.upgrade) {
			up.release(false)
			st.UpstreamCxProtocolError.Inc()
			r.fail(502, bodyProtocolError, "upgrade_response_invalid")
			return false
		}
		r.tunnel(att, resp)
	case status == 101:
		// RFC 9110 §15.2.2: a server must not switch to a protocol the client did not ask for.
		up.release(false)
		st.UpstreamCxProtocolError.Inc()
		r.fail(502, bodyProtocolError, "unsolicited_101")
	default:
		// Any other answer to an upgrade is relayed as a normal response, and the connection
		// that carried the upgrade attempt is never reused.
		r.relay(att, resp, r.upgrade == "")
	}
	return false
}

// validSwitch checks a 101: it must be an upgrade to exactly the protocol the client asked for
// (for every upgrade type, not only websocket: CVE-2024-23326), and carry no body.
func validSwitch(resp *upResponse, requested string) bool {
	h := resp.h
	if !headers.IsUpgrade(h) || !strings.EqualFold(headers.UpgradeToken(h), requested) {
		return false
	}
	return resp.bad101 == ""
}

// writeBody copies queued request body bytes to the attempt's upstream.
func (r *routerFilter) writeBody(att *attempt) {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		for len(r.queue) == 0 && !r.bodyEnd && !r.finished && r.att == att {
			r.cond.Wait()
		}
		if r.finished || r.att != att {
			r.mu.Unlock()
			return
		}
		q, end := r.queue, r.bodyEnd
		r.queue = nil
		r.account()
		r.cond.Broadcast()
		r.mu.Unlock()

		att.wmu.Lock()
		var err error
		if len(q) > 0 {
			err = att.up.write(q)
		}
		if err == nil && end {
			err = att.up.endRequest()
		}
		att.wmu.Unlock()
		if err != nil {
			att.abort("upstream_write_failed")
			return
		}
		if end {
			att.mu.Lock()
			att.bodySent = true
			att.mu.Unlock()
			return
		}
	}
}

// relay passes a normal response downstream and returns its connection to the pool when the
// whole exchange was clean.
func (r *routerFilter) relay(att *attempt, resp *upResponse, reusable bool) {
	up := att.up
	h := resp.h
	if r.upgrade != "" && resp.status != 426 {
		// A failed handshake must not look like a switch (Envoy PR #45670); a 426 keeps its
		// Upgrade list, which RFC 9110 requires, and the connection manager drops Connection.
		headers.StripUpgrade(h)
	}
	r.responseHeaders(h)
	r.serviceTime(h)
	// finish ends the exchange with the upstream before the last byte goes downstream: once the
	// client has the whole response the stream ends and tears down whatever attempt it still
	// sees, so a clean connection must be back in the pool by then.
	finish := func(clean bool) {
		r.mu.Lock()
		r.finished = true
		r.att = nil
		if r.timer != nil {
			r.timer.Stop()
		}
		r.cond.Broadcast()
		r.mu.Unlock()
		att.mu.Lock()
		sent := att.bodySent || !r.hasBody
		att.mu.Unlock()
		up.release(reusable && clean && resp.keepAlive && sent && att.abortReason() == "")
	}
	if resp.bodyless {
		finish(true)
		r.cb.EncodeHeaders(h, true)
		return
	}
	r.cb.EncodeHeaders(h, false)
	var b buffer.Buffer // reused for every slab: the chain copies what it keeps
	for {
		slab, n, err := up.read()
		if n > 0 {
			b.SetBytes((*slab)[:n])
			r.cb.EncodeData(&b, false)
			buffer.PutSlab(slab)
		}
		if err == io.EOF {
			finish(true)
			r.cb.EncodeData(&buffer.Buffer{}, true)
			return
		}
		if err != nil {
			finish(false)
			r.cb.SendLocalReply(502, bodyReset, "upstream_reset_after_response_started")
			return
		}
	}
}

// serviceTime adds Envoy's x-envoy-upstream-service-time: milliseconds from the end of the
// client's request to the upstream's response headers. As in Envoy, only when the request was
// complete before the response began: never on an upgrade's answer, whose request never ends.
func (r *routerFilter) serviceTime(h *headers.Map) {
	if r.suppressEnvoyHeaders {
		return
	}
	r.mu.Lock()
	done := r.requestDone
	r.mu.Unlock()
	if !done.IsZero() {
		h.Set("x-envoy-upstream-service-time", strconv.FormatInt(time.Since(done).Milliseconds(), 10))
	}
}

// tunnel carries an established upgrade: it sends the 101 downstream, flushes the client bytes
// held while waiting for it, and then pumps upstream bytes downstream until the upstream ends.
func (r *routerFilter) tunnel(att *attempt, resp *upResponse) {
	up := att.up
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		up.release(false)
		return
	}
	r.established = true
	if r.timer != nil {
		r.timer.Stop() // the route timeout covers only the wait for the 101
	}
	r.retained = nil
	r.account()
	r.mu.Unlock()

	up.openTunnel()
	h := resp.h
	r.responseHeaders(h)
	r.cb.EncodeHeaders(h, false)
	// What only the handshake needed goes now: an open tunnel should hold as little as possible.
	r.upHeaders, r.respRT, r.respVH, r.respRoute = nil, nil, nil, nil
	if u, ok := up.(*h1Upstream); ok {
		u.resp = nil
	}

	// Flush what the client sent while we waited, then let DecodeData write directly.
	att.wmu.Lock()
	for {
		r.mu.Lock()
		q, end := r.queue, r.bodyEnd
		r.queue = nil
		r.account()
		if len(q) == 0 {
			r.direct = true
			r.cond.Broadcast()
			r.mu.Unlock()
			if end {
				up.endRequest()
			}
			break
		}
		r.cond.Broadcast()
		r.mu.Unlock()
		if err := r.writeTunnelLocked(att, q); err != nil {
			break
		}
	}
	att.wmu.Unlock()
	if r.handOff(att) {
		return
	}
	inline := false // an HTTP/2 client's bytes go straight to the upstream's socket
	if u, ok := up.(*h1Upstream); ok && u.conn != nil && rawsys.Socket(u.conn) != nil {
		if taker, ok := r.info.(InlineTaker); ok {
			inline = taker.InlineTunnel(r.tryTunnelWrite) // only a plain socket can take a try-write
		}
	}
	if u, ok := up.(*h2Upstream); ok {
		if enc, ok := r.info.(TunnelEncoder); ok {
			if write := enc.TunnelEncoder(); write != nil {
				u.st.SetDataSink(write)
				r.pumpUpstreamOnDemand(u)
				if t, ok := r.info.(ClientReadTaker); ok {
					t.ReadClientOnEngine()
				}
				return
			}
		}
	}

	var b buffer.Buffer // reused for every slab: the chain copies what it keeps
	if u, ok := up.(*h1Upstream); ok && u.raw != nil {
		if len(u.early) > 0 { // what came with the 101 goes first
			b.SetBytes(u.early)
			r.cb.EncodeData(&b, false)
			u.early = nil
		}
		if inline && r.readUpstreamOnEngine(u) {
			return
		}
		err := u.raw.Stream(&u.stop, func(p []byte) bool {
			b.SetBytes(p)
			r.cb.EncodeData(&b, false)
			return true
		})
		if err == nil {
			err = io.EOF // Stream ends cleanly at the FIN
		}
		r.upstreamEnded(err)
		return
	}
	for {
		slab, n, err := up.read()
		if err != nil {
			r.upstreamEnded(err)
			return
		}
		b.SetBytes((*slab)[:n])
		r.cb.EncodeData(&b, false)
		buffer.PutSlab(slab)
	}
}

// Reading an HTTP/1.1 upstream on the tunnel engine. When the client is an HTTP/2 stream whose
// bytes go straight to the upstream's socket (InlineTunnel), the other way needs no goroutine
// either: the engine reads the upstream's socket (a tunnel.Reader) and passes what it reads to the
// stream's TunnelEncoder, which writes it as DATA on the engine's goroutine when nothing has to
// wait. No goroutine wakes per upstream message, and the engine's reads of many tunnels go to the
// kernel in one io_uring batch. What the encoder cannot take now (a window or the client's socket
// is full, a drain is closing the tunnel) goes through EncodeData on a goroutine of its own while
// the engine reads nothing more from that upstream: the tunnel holds at most one read's bytes
// beyond the stream's limits. No goroutine waits for the end either: the router's run returns
// once the engine reads (the request's accounting then ends in OnDestroy, as with the on-demand
// pump), the stream's goroutine may leave too (TunnelLeaver), and the engine's Done passes the
// end on from a goroutine started for it.

// engineRead is one upstream read by the engine.
type engineRead struct {
	r       *routerFilter
	u       *h1Upstream
	write   func(p []byte) int // the stream's TunnelEncoder
	rd      *tunnel.Reader
	started chan struct{} // closed once rd is set
}

// readUpstreamOnEngine has the engine carry the upstream side of the tunnel, and the end passed
// on when it comes. It reports false, having done nothing, when the engine cannot take it.
func (r *routerFilter) readUpstreamOnEngine(u *h1Upstream) bool {
	enc, ok := r.info.(TunnelEncoder)
	if !ok || !tunnel.Pluggable(u.conn) {
		return false
	}
	write := enc.TunnelEncoder()
	if write == nil {
		return false
	}
	er := &engineRead{r: r, u: u, write: write, started: make(chan struct{})}
	u.readState.Store(engineReading)
	if u.stop.Load() { // closed already: leave it to the usual pump, which sees that
		u.readState.Store(engineNotReading)
		return false
	}
	opt := tunnel.ReaderOptions{Conn: u.conn, Deliver: er.deliver, Done: er.end}
	if ts, ok := r.info.(TunnelSender); ok {
		opt.Sender = ts.TunnelSender()
	}
	r.wg.Add(1) // the engine's share, done once the end is passed on; OnDestroy waits for it
	rd, err := tunnel.DefaultEngine().StartReader(opt)
	if err != nil {
		r.wg.Done()
		if u.readState.Swap(engineNotReading) == engineCloseAsked {
			go u.conn.Close()
		}
		return false
	}
	r.upPumped.Store(true) // the request ends in OnDestroy, not when run returns
	er.rd = rd
	// The stream's end reaches the engine through the router's watch on its context, which
	// aborts the attempt: the upstream's close (h1Upstream.close) aborts the reads.
	close(er.started)
	u.reader.Store(rd)
	u.raw = nil // the engine reads the socket now
	if u.stop.Load() {
		rd.Abort(nil) // close came first, and found no reader to stop
	}
	if l, ok := r.info.(TunnelLeaver); ok {
		l.LeaveTunnel()
	}
	return true
}

// deliver passes what the engine read to the client: at once if the encoder takes it, else
// through EncodeData on a goroutine, with the reads paused until that is done.
func (er *engineRead) deliver(p []byte) bool {
	n := er.write(p)
	if n == len(p) {
		return true
	}
	slab := buffer.GetSlab() // p is one engine read: at most a slab
	rest := (*slab)[:copy(*slab, p[n:])]
	er.r.wg.Add(1) // OnDestroy waits for it
	workers.Go(func() {
		defer er.r.wg.Done()
		var b buffer.Buffer
		b.SetBytes(rest)
		er.r.cb.EncodeData(&b, false)
		buffer.PutSlab(slab)
		<-er.started
		er.rd.Resume()
	})
	return false
}

// end is the engine's Done: from now on conn may be closed, and is if close asked meanwhile. The
// end goes on to the client from a goroutine of its own, as EncodeData may wait.
func (er *engineRead) end(why error) {
	if er.u.readState.Swap(engineNotReading) == engineCloseAsked {
		go er.u.conn.Close()
	}
	workers.Go(func() {
		r := er.r
		defer r.wg.Done()
		<-er.started
		if why == nil {
			why = io.EOF
		}
		r.upstreamEnded(why)
	})
}

// upstreamEnded passes on the end of a tunnel's upstream side: END_STREAM (or the FIN) after
// io.EOF, else a reset, unless the stream is already over.
func (r *routerFilter) upstreamEnded(err error) {
	if err == io.EOF {
		r.cb.EncodeData(&buffer.Buffer{}, true)
	} else if r.cb.Context().Err() == nil {
		r.cb.SendLocalReply(502, "", "upstream_reset_after_response_started")
	}
}

// The on-demand upstream pump. A tunnel to an HTTP/2 upstream whose DATA the upstream
// connection's reader writes to the client itself (the stream's TunnelEncoder) needs no goroutine
// waiting on the upstream stream: what the reader could not pass on (the client's socket is full),
// END_STREAM and a reset are taken by a pump goroutine started by the stream's read hook (a
// workers.Demand), which runs while there is something to read and ends. The router's own goroutine returns once the
// tunnel is open, so an idle tunnel through the seed's front proxy holds one goroutine fewer. The
// request's accounting (upstream_rq_active, the host's active request) lasts until the stream
// ends (OnDestroy), and OnDestroy waits for the pump's last run.

// pumpUpstreamOnDemand hands the upstream side of the tunnel to the on-demand pump.
func (r *routerFilter) pumpUpstreamOnDemand(u *h2Upstream) {
	r.upPumped.Store(true)
	r.upPump = u
	r.wg.Add(1) // the pump's share: done when it sees the upstream side end
	r.pump.Init(r.pumpUpstream)
	u.st.SetReadHook(r.pump.Ask)
	r.pump.Ask() // something may have come already
}

// pumpUpstream is a run of the on-demand pump: it passes the upstream's bytes to the client while
// a read would return at once, as the tunnel's loop does, and reports whether the upstream side
// ended.
func (r *routerFilter) pumpUpstream() (ended bool) {
	u := r.upPump
	var b buffer.Buffer
	for u.st.TryWaitReadable() {
		slab, n, err := u.read()
		if err != nil {
			r.upstreamEnded(err)
			u.st.SetReadHook(nil)
			r.wg.Done()
			return true
		}
		b.SetBytes((*slab)[:n])
		r.cb.EncodeData(&b, false)
		buffer.PutSlab(slab)
	}
	return false
}

// handOff offers an HTTP/1.1 tunnel to the stream for the tunnel engine: once taken, no goroutine
// waits on either side while the tunnel is idle. Only a raw upstream socket with nothing left in
// its read buffer qualifies; the stream decides for its side.
func (r *routerFilter) handOff(att *attempt) bool {
	u, ok := att.up.(*h1Upstream)
	taker, ok2 := r.info.(TunnelTaker)
	if !ok || !ok2 || len(u.early) > 0 || r.goAway.Load() {
		return false
	}
	r.handedOff.Store(true)
	if !taker.OfferTunnel(u.conn, &r.wsUp, func() func() { return r.detach(u) }) {
		r.handedOff.Store(false)
		if r.goAway.Load() {
			r.OnDrainDeadline() // it came while the offer was out, and did nothing
		}
		return false
	}
	// The stream ends the tunnel itself (the engine's Done, then OnDestroy): the watch on its
	// context, and the reader, are not needed any more.
	r.mu.Lock()
	stop := r.stopCtx
	r.stopCtx = nil
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
	u.raw = nil // the decode goroutine may still write to u until it hands off: see detach for u.w
	return true
}

// detach ends the router's part in a tunnel the engine took: the route timer, anything held for a
// retry, the account's charge. What it returns ends the upstream connection's and the request's
// accounting when the tunnel ends, and refers to nothing else of the router.
func (r *routerFilter) detach(u *h1Upstream) (end func()) {
	r.mu.Lock()
	r.finished = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.queue, r.retained = nil, nil
	r.account()
	// The stream cancels its context once it has parked: the watch on it must not see that as a
	// reset and end the connection's accounting while the tunnel runs. Stopping the watch is not
	// enough, as handOff may have taken it and not stopped it yet, and a stop does not wait for a
	// watch already running: the flag, read under mu, is what the watch obeys.
	r.detached = true
	stop := r.stopCtx
	r.stopCtx = nil
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
	u.w = nil // the decode goroutine, which runs detach, was its last writer
	closeUp, ok := cluster.SocketTaken(u.conn)
	if !ok {
		conn := u.conn
		closeUp = func() { conn.Close() }
	}
	cl := r.cl
	return func() {
		closeUp()
		cl.EndRequest() // the tunnel's request lasted until now, not until run returned
	}
}
