// Package cluster holds the upstream clusters built from a compiled config.Cluster: host discovery
// (STATIC, STRICT_DNS, LOGICAL_DNS), load balancing (ROUND_ROBIN, RANDOM, LEAST_REQUEST), Envoy's
// circuit breakers and a per-host pool of idle HTTP/1.1 connections.
//
// A request goes: StartRequest (max_requests) → Acquire (pick a host, take an idle connection or
// dial one under max_connections / max_pending_requests) → use the Lease → Release → EndRequest.
// Stats live under cluster.<name>. with Envoy's names.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/cancelctx"
	"github.com/switchyard-proxy/switchyard/internal/codec/http2"
	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/rawsys"
	"github.com/switchyard-proxy/switchyard/internal/stats"
)

// Sizes and timeouts of pooled connections.
const (
	// IdleTimeout is how long a released connection may wait in a host's pool before it is closed.
	IdleTimeout = 60 * time.Second
	// ReaderSize is the size of the bufio.Reader kept with every upstream connection.
	ReaderSize = 16 << 10
	// WriterSize is the size of the bufio.Writer kept with every upstream connection.
	WriterSize = 4 << 10
	// dnsTimeout bounds one resolution of one endpoint name.
	dnsTimeout = 5 * time.Second
)

// ErrNoHealthyUpstream is returned by Acquire when the cluster has no host (for example DNS gave
// nothing); the router answers 503 "no healthy upstream".
var ErrNoHealthyUpstream = errors.New("no healthy upstream")

// ErrOverflow is returned when a circuit breaker is open: max_requests (StartRequest), or
// max_connections reached with max_pending_requests waiters already queued (Acquire). The router
// answers 503 with the UO flag.
var ErrOverflow = errors.New("upstream overflow")

// ConnectError is returned by Acquire when dialing the chosen host failed, so the router can tell
// a connect failure (retry_on connect-failure, 503 UF) from everything else with errors.As.
type ConnectError struct {
	Host    string // the host's address, host:port
	Err     error
	Timeout bool // connect_timeout expired
}

// Error implements error.
func (e *ConnectError) Error() string {
	if e.Timeout {
		return fmt.Sprintf("connect to %s: timeout: %v", e.Host, e.Err)
	}
	return fmt.Sprintf("connect to %s: %v", e.Host, e.Err)
}

// Unwrap returns the dial error.
func (e *ConnectError) Unwrap() error { return e.Err }

// lookupFunc resolves a DNS name; tests replace net.DefaultResolver with it.
type lookupFunc func(ctx context.Context, host string) ([]string, error)

// options are the knobs tests turn; NewManager uses the defaults.
type options struct {
	lookup      lookupFunc
	idleTimeout time.Duration
}

// Manager owns every cluster of one configuration and the goroutines that keep their host sets
// fresh. Close it to stop them and close idle connections.
type Manager struct {
	clusters []*Cluster
	byName   map[string]*Cluster
	cancel   context.CancelFunc
	wg       sync.WaitGroup // DNS refresh loops
	once     sync.Once
}

// NewManager builds the clusters and starts one DNS refresh goroutine per STRICT_DNS or
// LOGICAL_DNS cluster. Stats go to st under cluster.<name>.; log may be nil.
func NewManager(clusters []*config.Cluster, st *stats.Store, log *slog.Logger) *Manager {
	return newManager(clusters, st, log, options{
		lookup:      net.DefaultResolver.LookupHost,
		idleTimeout: IdleTimeout,
	})
}

func newManager(clusters []*config.Cluster, st *stats.Store, log *slog.Logger, o options) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{byName: make(map[string]*Cluster, len(clusters)), cancel: cancel}
	for _, cfg := range clusters {
		c := newCluster(cfg, st, log.With("cluster", cfg.Name), o)
		m.clusters = append(m.clusters, c)
		m.byName[cfg.Name] = c
		if cfg.Type == config.Static {
			c.setHosts(c.staticHosts())
			close(c.ready)
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			c.refreshDNS(ctx)
		}()
	}
	return m
}

// Get returns the cluster called name, or nil.
func (m *Manager) Get(name string) *Cluster { return m.byName[name] }

// All returns every cluster in config order, for the admin /clusters page.
func (m *Manager) All() []*Cluster { return append([]*Cluster(nil), m.clusters...) }

// Close stops the DNS refresh goroutines, waits for them, and closes every idle connection.
// Leases still out keep working; their connections are closed when released. Close is idempotent.
func (m *Manager) Close() {
	m.once.Do(func() {
		m.cancel()
		m.wg.Wait()
		for _, c := range m.clusters {
			for _, h := range c.hostSet().hosts {
				h.pool.close()
				h.h2.close()
			}
		}
	})
}

// Cluster is one upstream cluster: its current hosts, load balancer, circuit breakers and pools.
type Cluster struct {
	Config *config.Cluster // immutable
	Stats  *Stats

	log   *slog.Logger
	opts  options
	hosts atomic.Pointer[hostSet] // replaced whole by the DNS refresh loop
	ready chan struct{}           // closed once the first host set is known

	cx        chan struct{} // max_connections semaphore: one token per live (or dialing) connection
	pending   atomic.Int64  // Acquire calls waiting for a connection, checked against MaxPending
	rqActive  atomic.Int64  // StartRequest minus EndRequest, checked against MaxRequests
	wakeMu    sync.Mutex
	wakeWaits chan struct{} // closed and replaced when a connection is released or closed
	h2stats   *http2.Stats  // cluster.<name>.http2.*
	tls       *tls.Config   // nil for cleartext
}

func newCluster(cfg *config.Cluster, st *stats.Store, log *slog.Logger, o options) *Cluster {
	c := &Cluster{
		Config:    cfg,
		Stats:     NewStats(st.Scope("cluster." + cfg.Name)),
		h2stats:   http2.NewStats(st.Scope("cluster." + cfg.Name + ".http2")),
		log:       log,
		opts:      o,
		ready:     make(chan struct{}),
		cx:        make(chan struct{}, max(cfg.MaxConnections, 0)),
		wakeWaits: make(chan struct{}),
	}
	c.hosts.Store(&hostSet{})
	if cfg.TLS != nil {
		c.tls = clientTLS(cfg)
	}
	return c
}

// Hosts returns the current hosts (a copy), for the admin page and tests.
func (c *Cluster) Hosts() []*Host { return append([]*Host(nil), c.hostSet().hosts...) }

func (c *Cluster) hostSet() *hostSet { return c.hosts.Load() }

// WaitReady blocks until the first host set is known (immediately for STATIC clusters; after the
// first resolution attempt for DNS clusters), so startup can wait for clusters the way Envoy's
// init manager does.
func (c *Cluster) WaitReady(ctx context.Context) error {
	if err := cancelctx.Wait(ctx, c.ready); err != nil {
		return fmt.Errorf("cluster %s: waiting for the first DNS resolution: %w", c.Config.Name, err)
	}
	return nil
}

// StartRequest counts one upstream request against max_requests and upstream_rq_active. It
// returns ErrOverflow (and counts upstream_rq_pending_overflow, as Envoy does) when the breaker is
// open. Every nil return must be paired with one EndRequest.
func (c *Cluster) StartRequest() error {
	if c.rqActive.Add(1) > int64(c.Config.MaxRequests) {
		c.rqActive.Add(-1)
		c.Stats.UpstreamRqPendingOverflow.Inc()
		return ErrOverflow
	}
	c.Stats.UpstreamRqActive.Inc()
	return nil
}

// EndRequest ends a request started by StartRequest.
func (c *Cluster) EndRequest() {
	c.rqActive.Add(-1)
	c.Stats.UpstreamRqActive.Dec()
}

// Acquire picks a host by the cluster's lb_policy and returns a connection to it: the most
// recently released idle one that is still open, or a new one. At max_connections it waits for a
// released connection until ctx ends, counted as pending; it fails at once with ErrOverflow when
// max_pending_requests waiters are already queued. Errors: ErrNoHealthyUpstream, *ConnectError,
// ErrOverflow, or ctx's error.
func (c *Cluster) Acquire(ctx context.Context) (*Lease, error) {
	if err := c.WaitReady(ctx); err != nil {
		return nil, err
	}
	h := c.hostSet().pick(c.Config.LBPolicy)
	if h == nil {
		c.Stats.UpstreamCxNoneHealthy.Inc()
		return nil, ErrNoHealthyUpstream
	}
	pc, reused, err := c.conn(ctx, h)
	if err != nil {
		return nil, err
	}
	h.rqActive.Add(1)
	return &Lease{Conn: pc.conn, Reader: pc.r, Writer: pc.w, Host: h, Reused: reused, pc: pc}, nil
}

// conn returns an idle connection of h or a new one, waiting at max_connections.
func (c *Cluster) conn(ctx context.Context, h *Host) (pc *pconn, reused bool, err error) {
	waiting := false
	defer func() {
		if waiting {
			c.pending.Add(-1)
			c.Stats.UpstreamRqPendingActive.Dec()
		}
	}()
	for {
		// Taken before trying, so a release between the try and the wait is not missed.
		var wake <-chan struct{}
		if waiting {
			c.wakeMu.Lock()
			wake = c.wakeWaits
			c.wakeMu.Unlock()
		}
		if pc := h.pool.take(); pc != nil {
			return pc, true, nil
		}
		select {
		case c.cx <- struct{}{}:
			pc, err := c.dial(ctx, h)
			return pc, false, err
		default:
		}
		// An idle connection of another host holds a token this request needs: close it.
		if c.evictIdle(h) {
			continue
		}
		if !waiting {
			c.Stats.UpstreamCxOverflow.Inc()
			if c.pending.Add(1) > int64(c.Config.MaxPending) {
				c.pending.Add(-1)
				c.Stats.UpstreamRqPendingOverflow.Inc()
				return nil, false, ErrOverflow
			}
			waiting = true
			c.Stats.UpstreamRqPendingTotal.Inc()
			c.Stats.UpstreamRqPendingActive.Inc()
			continue // try again now that releasers can see us
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// wake tells waiting Acquire calls that a connection was released or a token freed. Releasers
// free first and then look at pending; waiters count themselves in pending first and then try, so
// one of the two always sees the other.
func (c *Cluster) wake() {
	if c.pending.Load() == 0 {
		return
	}
	c.wakeMu.Lock()
	close(c.wakeWaits)
	c.wakeWaits = make(chan struct{})
	c.wakeMu.Unlock()
}

// evictIdle closes one idle connection of a host other than except, freeing a max_connections
// token. It reports whether it closed one.
func (c *Cluster) evictIdle(except *Host) bool {
	for _, h := range c.hostSet().hosts {
		if h == except {
			continue
		}
		if pc := h.pool.takeOldest(); pc != nil {
			pc.close()
			return true
		}
	}
	return false
}

// dial opens a connection to h; the caller holds a max_connections token, which is returned if
// the dial fails.
func (c *Cluster) dial(ctx context.Context, h *Host) (*pconn, error) {
	c.Stats.UpstreamCxTotal.Inc()
	c.Stats.UpstreamCxActive.Inc()
	h.cxActive.Add(1)
	// No TCP keepalive, as in Envoy without upstream_connection_options (Go's dialer would turn
	// it on with four setsockopt calls per connection). StartConnect rules out a LocalAddr (a
	// source address, upstream_bind_config, would need the connect left to the dialer).
	d := net.Dialer{Timeout: c.Config.ConnectTimeout, KeepAlive: -1, Control: rawsys.StartConnect}
	// The dialer's and the handshake's timeout contexts must not make the stream's Done channel.
	dctx, release := cancelctx.Detach(ctx)
	conn, err := d.DialContext(dctx, "tcp", h.DialAddress())
	if err == nil && c.tls != nil {
		hctx, cancel := context.WithTimeout(dctx, c.Config.ConnectTimeout)
		conn, err = c.handshake(hctx, conn)
		cancel()
	}
	release()
	if err == nil {
		return newPconn(conn, h), nil
	}
	c.connClosed(h)
	if ctx.Err() != nil {
		// The request gave up (its own timeout or reset); that is not the host's fault.
		return nil, ctx.Err()
	}
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	c.Stats.UpstreamCxConnectFail.Inc() // Envoy counts timeouts as connect failures too
	if timeout {
		c.Stats.UpstreamCxConnectTimeout.Inc()
	}
	c.log.Debug("upstream connect failed", "host", h.Address, "err", err)
	return nil, &ConnectError{Host: h.Address, Err: err, Timeout: timeout}
}

// connClosed does the accounting of a connection that is gone (closed, or never connected).
func (c *Cluster) connClosed(h *Host) {
	h.cxActive.Add(-1)
	c.Stats.UpstreamCxActive.Dec()
	c.Stats.UpstreamCxDestroy.Inc()
	<-c.cx
	c.wake()
}
