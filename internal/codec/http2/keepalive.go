package http2

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// ErrKeepaliveTimeout is why a connection closed when a keepalive PING went unanswered for
// KeepaliveConfig.Timeout (Envoy's http2.keepalive_timeout): the peer or the path to it is dead,
// so its streams fail like those of any lost connection.
var ErrKeepaliveTimeout = errors.New("http2: keepalive PING not acknowledged within the timeout")

// KeepaliveConfig is Envoy's http2_protocol_options.connection_keepalive (KeepaliveSettings),
// shared by the server and client codecs so that a dead peer (a host gone without a FIN, a
// middlebox that dropped the flow) is found and its streams reset instead of hanging. The zero
// value (Timeout 0) turns keepalive off.
type KeepaliveConfig struct {
	// Interval between a PING's ACK and the next PING. 0: no interval PINGs (only idle ones).
	Interval time.Duration
	// Timeout is how long to wait for the ACK before the connection is closed (counted in
	// keepalive_timeout). Any other frame received meanwhile extends it by another Timeout, as in
	// Envoy, so a PING ACK queued behind a large transfer does not kill a healthy connection.
	// 0 disables keepalive altogether.
	Timeout time.Duration
	// IntervalJitter is the percentage of Interval added at random to each interval, so the
	// PINGs of many connections do not line up. 0: no jitter. Envoy's default (15) is filled in
	// by the config compiler, not here.
	IntervalJitter float64
	// ConnectionIdleInterval: before a new stream is opened on a connection that has received
	// nothing for this long, a PING is sent ahead of the stream's HEADERS (unless one is already
	// outstanding); the stream does not wait for the ACK, but if none comes within Timeout the
	// connection closes and the stream fails with it. Client codec only, as in Envoy; 0: off.
	ConnectionIdleInterval time.Duration
}

// keepalivePingData is the payload of our keepalive PINGs. Any PING ACK counts as the answer,
// as in Envoy: whatever the peer acknowledges proves it alive.
var keepalivePingData = [8]byte{'k', 'e', 'e', 'p', 'a', 'l', 'v', 'e'}

// Keepalive runs KeepaliveConfig for one connection. The codec reports what it receives
// (Received for every frame, Acked for every PING ACK) and, on the client, BeforeNewStream; the
// Keepalive sends PINGs through send and declares the connection dead through expire, both
// called from a timer goroutine without any Keepalive lock held, so they may take the codec's
// own locks (the codec may call Keepalive methods while holding them). A nil *Keepalive is
// valid and does nothing, so codecs call it unconditionally.
type Keepalive struct {
	cfg      KeepaliveConfig
	send     func(data [8]byte)
	expire   func()
	start    time.Time    // monotonic base of the offsets below
	last     atomic.Int64 // offset of the last frame received, when tracked
	awaiting atomic.Bool  // a PING is out and its ACK not yet back
	trackAll bool         // ConnectionIdleInterval > 0: every frame's time is recorded

	mu       sync.Mutex
	sentAt   time.Duration // offset at which the outstanding PING was sent
	interval *time.Timer   // nil when Interval is 0
	timeout  *time.Timer   // created by the first PING
	stopped  bool
}

// StartKeepalive starts keepalive on a new connection: the first interval PING is due after
// Interval plus jitter. It returns nil when cfg.Timeout is 0 (keepalive off). send must queue a
// PING (not an ACK) with data; expire must count keepalive_timeout and close the connection.
func StartKeepalive(cfg KeepaliveConfig, send func(data [8]byte), expire func()) *Keepalive {
	if cfg.Timeout <= 0 {
		return nil
	}
	k := &Keepalive{cfg: cfg, send: send, expire: expire, start: time.Now(), trackAll: cfg.ConnectionIdleInterval > 0}
	if cfg.Interval > 0 {
		k.interval = time.AfterFunc(k.nextInterval(), k.ping)
	}
	return k
}

func (k *Keepalive) now() time.Duration { return time.Since(k.start) }

// nextInterval is Interval plus a random jitter below IntervalJitter percent of it (Envoy's
// ConnectionImpl::onKeepaliveResponse).
func (k *Keepalive) nextInterval() time.Duration {
	d := k.cfg.Interval
	if j := time.Duration(float64(d) * k.cfg.IntervalJitter / 100); j > 0 {
		d += rand.N(j)
	}
	return d
}

// Received notes that a frame arrived: it extends an outstanding PING's timeout and marks the
// connection as not idle. Called by the codec's reader for every frame; cheap when neither
// applies.
func (k *Keepalive) Received() {
	if k != nil && (k.trackAll || k.awaiting.Load()) {
		k.last.Store(int64(k.now()))
	}
}

// Acked handles a PING ACK: the outstanding PING is answered and the next interval starts.
func (k *Keepalive) Acked() {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped {
		return
	}
	k.awaiting.Store(false)
	if k.timeout != nil {
		k.timeout.Stop()
	}
	if k.interval != nil {
		k.interval.Reset(k.nextInterval())
	}
}

// BeforeNewStream sends a PING ahead of a new stream when the connection has received nothing
// for ConnectionIdleInterval. Call it before queueing the stream's HEADERS.
func (k *Keepalive) BeforeNewStream() {
	if k == nil || !k.trackAll {
		return
	}
	if k.now()-time.Duration(k.last.Load()) >= k.cfg.ConnectionIdleInterval {
		k.ping()
	}
}

// ping sends a keepalive PING unless one is outstanding, and arms its timeout first, so that a
// send blocked behind a stuck writer still times out.
func (k *Keepalive) ping() {
	k.mu.Lock()
	if k.stopped || k.awaiting.Load() {
		k.mu.Unlock()
		return
	}
	k.awaiting.Store(true)
	k.sentAt = k.now()
	if k.timeout == nil {
		k.timeout = time.AfterFunc(k.cfg.Timeout, k.onTimeout)
	} else {
		k.timeout.Reset(k.cfg.Timeout)
	}
	k.mu.Unlock()
	k.send(keepalivePingData)
}

// onTimeout fires Timeout after the PING or the last frame received since, whichever is later;
// a frame that arrived meanwhile pushes the deadline out instead.
func (k *Keepalive) onTimeout() {
	k.mu.Lock()
	if k.stopped || !k.awaiting.Load() {
		k.mu.Unlock()
		return
	}
	deadline := max(k.sentAt, time.Duration(k.last.Load())) + k.cfg.Timeout
	if left := deadline - k.now(); left > 0 {
		k.timeout.Reset(left)
		k.mu.Unlock()
		return
	}
	k.stopped = true
	k.mu.Unlock()
	k.expire()
}

// Stop ends keepalive when the connection closes: no send or expire begins after it returns (one
// already under way may still finish, so both must cope with a closed connection).
func (k *Keepalive) Stop() {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	if k.interval != nil {
		k.interval.Stop()
	}
	if k.timeout != nil {
		k.timeout.Stop()
	}
}
