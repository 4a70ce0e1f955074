package router

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/filter"
	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/cancelctx"
	"github.com/switchyard-proxy/switchyard/internal/cluster"
	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/memacct"
	"github.com/switchyard-proxy/switchyard/internal/tunnel"
	"github.com/switchyard-proxy/switchyard/internal/workers"
	"google.golang.org/protobuf/proto"
)

// StreamInfo is what the connection manager tells the router about a stream, beyond
// filter.Callbacks. The HCM's stream implements it; the router type-asserts.
type StreamInfo interface {
	Route() *config.Route
	VirtualHost() *config.VirtualHost
	RouteTable() *config.RouteTable
	BufferLimit() int     // per_connection_buffer_limit_bytes: bounds what the router holds
	RequestChunked() bool // the request body arrives without a known length
	// ExtendedConnect says the request arrived as an HTTP/2 extended CONNECT (RFC 8441): a
	// WebSocket without Sec-WebSocket-Key, which an HTTP/1.1 upstream needs.
	ExtendedConnect() bool
}

// TunnelTaker is implemented by a stream that can hand an open tunnel to the tunnel engine.
// OfferTunnel gives it the upstream connection and the frame state of what was written to it; on
// true the router stops carrying the tunnel. If the engine then takes the tunnel, the stream calls
// detach instead of OnDestroy: the router lets go of everything and returns what must happen when
// the tunnel ends (the upstream connection's and the request's accounting), holding nothing else,
// so that an idle tunnel keeps neither the router nor the upstream net.Conn. Otherwise OnDestroy
// ends the router as usual.
type TunnelTaker interface {
	OfferTunnel(up net.Conn, towardB *tunnel.FrameTracker, detach func() (end func())) bool
}

// InlineTaker is implemented by a stream whose client bytes can be passed to the upstream by the
// goroutine that reads them off the client's connection (an HTTP/2 connection's reader), skipping
// the stream's own goroutine and its copy. write is the router's: it never blocks, writes what
// the upstream socket takes at once and returns how much; the stream sends the rest through the
// chain as usual. The stream accepts only when the chain is the router alone.
type InlineTaker interface {
	InlineTunnel(write func(p []byte) int) bool
}

// TunnelPumper is implemented by a stream that can pass an accepted upgrade's client bytes to the
// router without its own goroutine waiting for them (an HTTP/2 stream whose chain is the router
// alone: its connection's reader writes them inline, and a goroutine started on demand takes what
// that cannot). DecodeHeaders calls PumpOnDemand once it is ready for DecodeData; when it returns
// true the stream has started doing so, and DecodeHeaders runs the exchange with the upstream and
// the tunnel on the calling goroutine, returning when the tunnel ends, instead of starting one.
type TunnelPumper interface {
	PumpOnDemand() bool
}

// ClientReadTaker is implemented by a stream whose client's side of a tunnel the tunnel engine
// can read (an HTTP/1.1 client on a plain socket, the router alone in the chain). A router whose
// upstream side needs no goroutine (an HTTP/2 upstream's reader writes to the client) calls
// ReadClientOnEngine once DecodeData writes straight to the upstream: the stream's decode pump
// then lets the engine read the client, and its goroutine returns.
type ClientReadTaker interface {
	ReadClientOnEngine()
}

// TunnelLeaver is implemented by a stream whose goroutine can leave a tunnel that runs on
// callbacks alone. After PumpOnDemand, a router whose upstream side also needs no goroutine (the
// tunnel engine reads the upstream) calls LeaveTunnel before DecodeHeaders returns while the
// tunnel goes on: the stream's goroutine then returns too, and the stream ends when the tunnel
// does, on a goroutine started for that. An idle tunnel then holds no goroutine of its own.
type TunnelLeaver interface {
	LeaveTunnel()
}

// TunnelEncoder is implemented by a stream whose client can be written to by the goroutine that
// reads an HTTP/2 upstream's frames (the upstream connection's reader), skipping the router's pump
// and its copy. The function it returns never blocks: it writes what the client's socket takes at
// once and returns how much; the pump passes the rest through the chain as usual. It returns nil
// when that cannot be: a filter besides the router sees the payload, or the client is not a plain
// HTTP/1.1 socket.
type TunnelEncoder interface {
	TunnelEncoder() func(p []byte) int
}

// TunnelSender is implemented by a stream whose client the tunnel engine can send to itself, in
// its io_uring batches (see tunnel.Sender); TunnelSender returns nil when it cannot.
type TunnelSender interface {
	TunnelSender() tunnel.Sender
}

// AccountHolder is implemented by a stream whose buffered bytes are accounted for the overload
// action reset_high_memory_stream; the router charges the request bytes it holds (queued for the
// upstream, kept for a retry) to its account.
type AccountHolder interface {
	MemoryAccount() *memacct.Account
}

// errUpgradeBodyOverH2 is an upgrade request with a body that would cross an HTTP/2 hop.
var errUpgradeBodyOverH2 = errors.New("upgrade_request_with_body_over_http2")

// Local reply bodies, as Envoy words them, so clients and dashboards that match on them keep working.
const (
	bodyConnectFailure = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	bodyReset          = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
	bodyOverflow       = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
	bodyProtocolError  = "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
	bodyTimeout        = "upstream request timeout"
	bodyNoHealthy      = "no healthy upstream"
)

// Builder returns the router filter's builder, bound to the snapshot's clusters.
func Builder(cm *cluster.Manager, log *slog.Logger) filter.Builder {
	return func(msg proto.Message) (filter.Factory, error) {
		rc, _ := msg.(*routerv3.Router)
		suppress := rc.GetSuppressEnvoyHeaders()
		return func(cb filter.Callbacks) any {
			r := &routerFilter{cb: cb, cm: cm, log: log, retainable: true, suppressEnvoyHeaders: suppress}
			r.cond = sync.NewCond(&r.mu)
			if info, ok := cb.(StreamInfo); ok {
				r.info = info
			}
			if h, ok := cb.(AccountHolder); ok {
				r.acct = h.MemoryAccount()
			}
			return r
		}, nil
	}
}

// routerFilter is one stream's router: it runs attempts (retries) against the route's cluster,
// holds an upgrade's payload until the upstream answers 101, and then carries the tunnel's
// upstream half.
type routerFilter struct {
	filter.PassThrough
	cb   filter.Callbacks
	info StreamInfo
	cm   *cluster.Manager
	log  *slog.Logger
	// suppressEnvoyHeaders is the Router's suppress_envoy_headers: none of the x-envoy-* headers
	// the router adds (expected-rq-timeout-ms, original-path, upstream-service-time, overloaded).
	suppressEnvoyHeaders bool

	// Set by DecodeHeaders on the decode goroutine before any attempt starts; read-only after.
	action    *config.RouteAction
	cl        *cluster.Cluster
	upHeaders *headers.Map
	upgrade   string
	method    string
	chunked   bool
	hasBody   bool
	// The levels whose response header rules apply, in this order (nil: none at that level):
	// pointers into the immutable config rather than slices grown per request.
	respRT    *config.RouteTable
	respVH    *config.VirtualHost
	respRoute *config.Route
	limit     int
	// upgradeBody: the upgrade request declares a body. The seed: the HTTP/2 upgrade path will
	// not proxy upgrade requests with bodies — an extended CONNECT's DATA is tunnel payload, so a
	// body would silently become payload. Such a request gets 400 before anything goes upstream.
	upgradeBody bool

	mu          sync.Mutex // guards everything below
	cond        *sync.Cond // signalled when queue, bodyEnd, direct or finished change
	queue       []byte     // request bytes not yet written to the current attempt
	retained    []byte     // every request byte so far, kept for a retry while it fits the limit
	retainable  bool
	bodyEnd     bool      // the client's end of stream has been received
	requestDone time.Time // when bodyEnd became true, for x-envoy-upstream-service-time
	direct      bool      // the tunnel is open: DecodeData writes straight to the upstream connection
	finished    bool      // no more attempts: the response is decided or the stream is gone
	established bool      // the upstream switched protocols
	att         *attempt
	timer       *time.Timer // the route timeout
	started     bool        // DecodeHeaders began the request
	stopCtx     func() bool // set once before run starts; taken under mu
	// detached: the engine took the tunnel and the router's part is over (see detach); the watch
	// on the stream's context, which the stream cancels after parking, must then do nothing.
	detached bool
	wg       sync.WaitGroup
	acct     *memacct.Account // charged with len(queue)+len(retained); nil: no accounting
	charged  int              // what acct holds for queue and retained

	// handedOff: the tunnel engine carries the tunnel (see handOff); the router only ends it.
	handedOff atomic.Bool

	// The on-demand pump of an HTTP/2 upstream's bytes (see pumpUpstreamOnDemand).
	upPumped atomic.Bool // the pump carries the upstream side: the request ends in OnDestroy
	upPump   *h2Upstream // set before the pump first runs
	pump     workers.Demand

	// Tunnel shutdown at the drain deadline; guarded by the attempt's wmu once the tunnel is open.
	wsUp      tunnel.FrameTracker // WebSocket frames written upstream
	goAway    atomic.Bool         // close at the next frame boundary
	closeSent bool                // the Close (or FIN) toward the upstream went out
}

// attempt is one try against one upstream connection.
type attempt struct {
	up       upstream
	wmu      sync.Mutex // serialises writes to the upstream
	mu       sync.Mutex
	reason   string // why the attempt was aborted ("" while live)
	bodySent bool   // the whole request body reached the connection
	perTry   *time.Timer
}

func (a *attempt) abort(reason string) {
	a.mu.Lock()
	if a.reason == "" {
		a.reason = reason
	}
	a.mu.Unlock()
	a.up.close()
}

func (a *attempt) abortReason() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reason
}

// DecodeHeaders picks the cluster and starts the first attempt.
func (r *routerFilter) DecodeHeaders(h *headers.Map, end bool) filter.Status {
	if r.info == nil {
		r.cb.SendLocalReply(500, "", "router_without_stream_info")
		return filter.StopIteration
	}
	route := r.info.Route()
	switch {
	case route == nil:
		r.cb.SendLocalReply(404, "", "route_not_found")
		return filter.StopIteration
	case route.DirectResponse != nil:
		r.directResponse(route)
		return filter.StopIteration
	}
	r.action = route.Action
	name := r.action.Cluster
	if len(r.action.WeightedClusters) > 0 {
		name = pickWeighted(r.action.WeightedClusters, r.action.TotalWeight)
	}
	r.cl = r.cm.Get(name)
	if r.cl == nil {
		r.cb.SendLocalReply(503, "", "cluster_not_found")
		return filter.StopIteration
	}
	r.upgrade = r.cb.UpgradeType()
	if r.upgrade != "" {
		cl := h.Get("content-length")
		r.upgradeBody = (cl != "" && cl != "0") || r.info.RequestChunked()
	}
	if r.upgradeBody && r.cl.Config.Protocol == config.UpstreamHTTP2 {
		r.cb.SendLocalReply(400, "", errUpgradeBodyOverH2.Error())
		return filter.StopIteration
	}
	r.method = strings.Clone(h.Get(headers.Method)) // not a view of the request head, which may go
	r.hasBody = !end
	r.chunked = r.upgrade == "" && r.info.RequestChunked()
	r.limit = r.info.BufferLimit()
	r.upHeaders = r.requestHeaders(h, route)
	r.started = true
	stop := cancelctx.AfterFunc(r.cb.Context(), func() {
		r.mu.Lock()
		if r.detached {
			r.mu.Unlock()
			return
		}
		r.finished = true
		att := r.att
		r.cond.Broadcast()
		r.mu.Unlock()
		if att != nil {
			att.abort("downstream_reset")
		}
	})
	r.stopCtx = stop
	r.mu.Lock()
	r.bodyEnd = end
	if end {
		r.requestDone = time.Now()
	}
	if r.upgrade != "" || end {
		// Envoy arms the route timeout at the end of the request; an upgrade never ends its
		// request, so for upgrades it covers the wait for the 101 from the headers on.
		r.armTimeout()
	}
	r.mu.Unlock()
	r.wg.Add(1)
	if p, ok := r.info.(TunnelPumper); ok && r.upgrade != "" && p.PumpOnDemand() {
		r.run() // the stream's goroutine has nothing else to do until the tunnel ends
		return filter.StopIteration
	}
	workers.Go(r.run)
	return filter.StopIteration
}

// DecodeData queues request bytes for the current attempt, or writes them straight to the tunnel.
// It blocks while more than the buffer limit is queued, so a fast client cannot grow our memory.
func (r *routerFilter) DecodeData(b *buffer.Buffer, end bool) filter.Status {
	if !r.started {
		return filter.StopIteration
	}
	p := b.Bytes()
	r.mu.Lock()
	if r.finished && !r.established {
		r.mu.Unlock()
		return filter.StopIteration
	}
	if r.retainable && !r.established {
		if len(r.retained)+len(p) > r.limit {
			r.retainable, r.retained = false, nil
		} else {
			r.retained = append(r.retained, p...)
		}
	}
	if end {
		r.bodyEnd = true
		r.requestDone = time.Now()
		if r.upgrade == "" {
			r.armTimeout()
		}
	}
	if r.direct {
		att := r.att
		r.account()
		r.mu.Unlock()
		att.wmu.Lock()
		var err error
		switch {
		case r.closeSent:
			// The upstream already got our Close: nothing may follow it.
		case len(p) > 0:
			err = r.writeTunnelLocked(att, p)
		}
		if end && err == nil && !r.closeSent {
			err = att.up.endRequest()
		}
		if err == nil && r.goAway.Load() {
			err = r.closeUpstreamLocked(att)
		}
		att.wmu.Unlock()
		if err != nil {
			att.abort("upstream_write_failed")
			// The upstream is gone: end the tunnel (the response has started, so this resets the
			// stream) instead of reading client bytes that can go nowhere.
			r.cb.SendLocalReply(502, "", "upstream_write_failed")
		}
		return filter.StopIteration
	}
	r.queue = append(r.queue, p...)
	r.account()
	r.cond.Broadcast()
	for len(r.queue) > r.limit && !r.direct && !r.finished {
		r.cond.Wait()
	}
	r.mu.Unlock()
	return filter.StopIteration
}

// account brings the stream's memory account up to what queue and retained hold. Called with
// r.mu held after either changes.
func (r *routerFilter) account() {
	n := len(r.queue) + len(r.retained)
	if d := n - r.charged; d > 0 {
		r.acct.Charge(d)
	} else {
		r.acct.Credit(-d)
	}
	r.charged = n
}

// writeTunnelLocked writes tunnel bytes upstream, following WebSocket frames. Called with the
// attempt's wmu held.
func (r *routerFilter) writeTunnelLocked(att *attempt, p []byte) error {
	if err := att.up.write(p); err != nil {
		return err
	}
	if r.upgrade == "websocket" {
		r.wsUp.Feed(p)
	}
	return nil
}

// tryTunnelWrite is the router's half of InlineTunnel: a non-blocking DecodeData for an
// established tunnel to an HTTP/1.1 upstream socket. It takes nothing (0) whenever DecodeData
// would do more than write: the tunnel is not direct yet or is over, a drain is closing it, or a
// write is under way (the caller then queues, behind it).
func (r *routerFilter) tryTunnelWrite(p []byte) int {
	if r.goAway.Load() {
		return 0
	}
	r.mu.Lock()
	att, ok := r.att, r.direct && !r.finished
	r.mu.Unlock()
	if !ok {
		return 0
	}
	u, ok := att.up.(*h1Upstream)
	if !ok || !att.wmu.TryLock() {
		return 0
	}
	if r.closeSent {
		att.wmu.Unlock()
		return 0
	}
	n := u.tryWrite(p)
	if n > 0 && r.upgrade == "websocket" {
		r.wsUp.Feed(p[:n])
	}
	// A drain deadline that found this write under way left the Close to it (see
	// OnDrainDeadline). The Close may have to wait for room, which the HTTP/2 reader must not:
	// it goes on a goroutine of its own, as the deadline's timer would have sent it.
	closeNow := r.goAway.Load() && !r.closeSent
	att.wmu.Unlock()
	if closeNow {
		go r.OnDrainDeadline()
	}
	return n
}

// OnDrainDeadline closes the upstream half of a tunnel still open when the drain time runs out:
// a WebSocket Close 1001 between frames, then a half-close.
func (r *routerFilter) OnDrainDeadline() {
	r.goAway.Store(true)
	if r.handedOff.Load() {
		return // the engine closes both halves
	}
	r.mu.Lock()
	att, direct := r.att, r.direct
	r.mu.Unlock()
	if att == nil || !direct || !att.wmu.TryLock() {
		return // not a tunnel yet, or a write is in progress: DecodeData (or tryTunnelWrite) closes after it
	}
	r.closeUpstreamLocked(att)
	att.wmu.Unlock()
}

// closeUpstreamLocked sends the Close (or just the half-close) once, at a frame boundary.
func (r *routerFilter) closeUpstreamLocked(att *attempt) error {
	if r.closeSent || (r.upgrade == "websocket" && !r.wsUp.AtBoundary()) {
		return nil
	}
	r.closeSent = true
	if r.upgrade == "websocket" {
		if err := att.up.write(tunnel.CloseFrame(tunnel.CloseGoingAway, true)); err != nil {
			return err
		}
	}
	return att.up.endRequest()
}

// OnDestroy ends every attempt and waits for the router's goroutines.
func (r *routerFilter) OnDestroy() {
	r.mu.Lock()
	r.finished = true
	if r.timer != nil {
		r.timer.Stop()
	}
	att := r.att
	stop := r.stopCtx
	r.stopCtx = nil
	r.cond.Broadcast()
	r.mu.Unlock()
	if att != nil {
		att.abort("stream_end")
	}
	if stop != nil {
		stop()
	}
	r.wg.Wait()
	if r.handedOff.Load() || r.upPumped.Load() {
		r.cl.EndRequest() // the tunnel's request lasted until now, not until run returned
	}
	r.mu.Lock()
	r.queue, r.retained = nil, nil
	r.account()
	r.mu.Unlock()
}

// armTimeout starts the route timeout once. Called with r.mu held.
func (r *routerFilter) armTimeout() {
	if r.timer != nil || r.action.Timeout <= 0 {
		return
	}
	r.timer = time.AfterFunc(r.action.Timeout, func() {
		r.mu.Lock()
		if r.finished || r.established {
			r.mu.Unlock()
			return
		}
		r.finished = true
		att := r.att
		r.cond.Broadcast()
		r.mu.Unlock()
		r.cl.Stats.UpstreamRqTimeout.Inc()
		if att != nil {
			att.abort("global_timeout")
		}
		r.cb.SendLocalReply(504, bodyTimeout, "upstream_response_timeout")
	})
}

// requestHeaders builds the headers sent upstream: rewrites, header mutations (route table, then
// virtual host, then route, so the most specific wins) and Envoy's expected-timeout header.
func (r *routerFilter) requestHeaders(h *headers.Map, route *config.Route) *headers.Map {
	up := h.Clone()
	a := route.Action
	if a.HasPrefixRewrite {
		path := up.Get(headers.Path)
		if len(path) >= len(route.Match.Prefix) {
			if !r.suppressEnvoyHeaders {
				up.Set("x-envoy-original-path", path)
			}
			up.Set(headers.Path, a.PrefixRewrite+path[len(route.Match.Prefix):])
		}
	}
	if a.HostRewrite != "" {
		up.Set(headers.Authority, a.HostRewrite)
	}
	vh, rt := r.info.VirtualHost(), r.info.RouteTable()
	if rt != nil {
		mutate(up, rt.RequestHeadersToAdd, rt.RequestHeadersToRemove)
		r.respRT = rt
	}
	if vh != nil {
		mutate(up, vh.RequestHeadersToAdd, vh.RequestHeadersToRemove)
		r.respVH = vh
	}
	mutate(up, route.RequestHeadersToAdd, route.RequestHeadersToRemove)
	r.respRoute = route
	if a.Timeout > 0 && !r.suppressEnvoyHeaders {
		up.Set("x-envoy-expected-rq-timeout-ms", strconv.FormatInt(a.Timeout.Milliseconds(), 10))
	}
	if r.chunked {
		up.Del("content-length")
		up.Set("transfer-encoding", "chunked")
	}
	return up
}

func (r *routerFilter) responseHeaders(h *headers.Map) {
	if rt := r.respRT; rt != nil {
		mutate(h, rt.ResponseHeadersToAdd, rt.ResponseHeadersToRemove)
	}
	if vh := r.respVH; vh != nil {
		mutate(h, vh.ResponseHeadersToAdd, vh.ResponseHeadersToRemove)
	}
	if route := r.respRoute; route != nil {
		mutate(h, route.ResponseHeadersToAdd, route.ResponseHeadersToRemove)
	}
}

func mutate(h *headers.Map, add []config.HeaderToAdd, del []string) {
	for _, d := range del {
		if !strings.HasPrefix(d, ":") && d != "host" {
			h.Del(d)
		}
	}
	for _, a := range add {
		if a.Append {
			h.Add(a.Name, a.Value)
		} else {
			h.Set(a.Name, a.Value)
		}
	}
}

func (r *routerFilter) directResponse(route *config.Route) {
	d := route.DirectResponse
	h := headers.New(headers.Status, strconv.Itoa(d.Status))
	r.info = nil
	if d.Body != "" {
		h.Add("content-type", "text/plain")
	}
	h.Add("content-length", strconv.Itoa(len(d.Body)))
	for _, m := range [][]config.HeaderToAdd{route.ResponseHeadersToAdd} {
		mutate(h, m, route.ResponseHeadersToRemove)
	}
	r.cb.EncodeHeaders(h, d.Body == "")
	if d.Body != "" {
		r.cb.EncodeData(buffer.Wrap([]byte(d.Body)), true)
	}
}

func pickWeighted(ws []config.WeightedCluster, total uint32) string {
	if total == 0 {
		return ws[0].Name
	}
	n := rand.Uint32N(total)
	for _, w := range ws {
		if n < w.Weight {
			return w.Name
		}
		n -= w.Weight
	}
	return ws[len(ws)-1].Name
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
