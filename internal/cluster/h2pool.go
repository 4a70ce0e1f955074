package cluster

import (
	"context"
	"crypto/tls"
	"sync"

	"github.com/switchyard-proxy/switchyard/internal/codec/http2"
	"github.com/switchyard-proxy/switchyard/internal/codec/http2/client"
	"github.com/switchyard-proxy/switchyard/internal/config"
)

// h2pool is one host's multiplexed HTTP/2 connections. A connection stays in the pool until it
// closes or goes away; requests share it up to the peer's SETTINGS_MAX_CONCURRENT_STREAMS.
type h2pool struct {
	mu    sync.Mutex
	conns []*client.ClientConn
	wg    sync.WaitGroup // one watcher per connection, ended when it closes
}

// H2Conn is a multiplexed connection to one host. Streams on it need no release: the connection
// stays pooled while it is usable.
type H2Conn struct {
	*client.ClientConn
	Host *Host
}

// AcquireH2 returns an HTTP/2 connection to a host with room for one more stream: a pooled one,
// or a new one counted against max_connections. A host is picked by lb_policy. Errors are those
// of Acquire.
func (c *Cluster) AcquireH2(ctx context.Context) (*H2Conn, error) {
	if err := c.WaitReady(ctx); err != nil {
		return nil, err
	}
	h := c.hostSet().pick(c.Config.LBPolicy)
	if h == nil {
		c.Stats.UpstreamCxNoneHealthy.Inc()
		return nil, ErrNoHealthyUpstream
	}
	p := &h.h2
	p.mu.Lock()
	for _, cc := range p.conns {
		if c.hasRoom(cc) {
			p.mu.Unlock()
			return &H2Conn{ClientConn: cc, Host: h}, nil
		}
	}
	p.mu.Unlock()
	select {
	case c.cx <- struct{}{}:
	default:
		c.Stats.UpstreamCxOverflow.Inc()
		c.Stats.UpstreamRqPendingOverflow.Inc()
		return nil, ErrOverflow
	}
	pc, err := c.dial(ctx, h)
	if err != nil {
		return nil, err
	}
	return c.adoptH2(h, pc)
}

// adoptH2 starts the HTTP/2 client on a freshly dialed connection and pools it.
func (c *Cluster) adoptH2(h *Host, pc *pconn) (*H2Conn, error) {
	p := &h.h2
	pc.r, pc.w = nil, nil // the HTTP/2 codec has its own buffers
	cc, err := client.NewClientConn(pc.conn, h2ClientConfig(c.Config.HTTP2, c.h2stats))
	if err != nil {
		pc.close()
		return nil, &ConnectError{Host: h.Address, Err: err}
	}
	p.mu.Lock()
	p.conns = append(p.conns, cc)
	p.wg.Add(1)
	p.mu.Unlock()
	c.Stats.UpstreamCxHTTP2Total.Inc()
	c.Stats.UpstreamCxHTTP2Active.Inc()
	go func() {
		defer p.wg.Done()
		defer c.Stats.UpstreamCxHTTP2Active.Dec()
		<-cc.Done()
		p.mu.Lock()
		for i, x := range p.conns {
			if x == cc {
				p.conns = append(p.conns[:i], p.conns[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		pc.close()
	}()
	return &H2Conn{ClientConn: cc, Host: h}, nil
}

// AcquireAuto serves auto_config clusters: the protocol is whatever TLS ALPN chose when the
// connection was made. It returns a pooled HTTP/2 connection with room, or an idle HTTP/1.1
// one, or dials and lets ALPN decide. Exactly one of the results is non-nil on success.
func (c *Cluster) AcquireAuto(ctx context.Context) (*Lease, *H2Conn, error) {
	if err := c.WaitReady(ctx); err != nil {
		return nil, nil, err
	}
	h := c.hostSet().pick(c.Config.LBPolicy)
	if h == nil {
		c.Stats.UpstreamCxNoneHealthy.Inc()
		return nil, nil, ErrNoHealthyUpstream
	}
	h.h2.mu.Lock()
	for _, cc := range h.h2.conns {
		if c.hasRoom(cc) {
			h.h2.mu.Unlock()
			return nil, &H2Conn{ClientConn: cc, Host: h}, nil
		}
	}
	h.h2.mu.Unlock()
	if pc := h.pool.take(); pc != nil {
		h.rqActive.Add(1)
		return &Lease{Conn: pc.conn, Reader: pc.r, Writer: pc.w, Host: h, Reused: true, pc: pc}, nil, nil
	}
	select {
	case c.cx <- struct{}{}:
	default:
		c.Stats.UpstreamCxOverflow.Inc()
		c.Stats.UpstreamRqPendingOverflow.Inc()
		return nil, nil, ErrOverflow
	}
	pc, err := c.dial(ctx, h)
	if err != nil {
		return nil, nil, err
	}
	if tc, ok := pc.conn.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
		h2c, err := c.adoptH2(h, pc)
		return nil, h2c, err
	}
	h.rqActive.Add(1)
	return &Lease{Conn: pc.conn, Reader: pc.r, Writer: pc.w, Host: h, pc: pc}, nil, nil
}

// hasRoom reports whether cc can take one more stream: under the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS and under the cluster's own http2_protocol_options
// max_concurrent_streams.
func (c *Cluster) hasRoom(cc *client.ClientConn) bool {
	if o := c.Config.HTTP2; o != nil && o.MaxConcurrentStreams > 0 && cc.ActiveStreams() >= int(o.MaxConcurrentStreams) {
		return false
	}
	return cc.Available()
}

// close closes every connection and waits for their watchers.
func (p *h2pool) close() {
	p.mu.Lock()
	conns := append([]*client.ClientConn(nil), p.conns...)
	p.mu.Unlock()
	for _, cc := range conns {
		cc.Close()
	}
	p.wg.Wait()
}

func h2ClientConfig(o *config.HTTP2Options, st *http2.Stats) client.Config {
	cfg := client.Config{Stats: st}
	if o != nil {
		cfg.InitialStreamWindowSize = o.InitialStreamWindowSize
		cfg.InitialConnectionWindowSize = o.InitialConnectionWindowSize
		cfg.Keepalive = http2.KeepaliveConfig{
			Interval: o.KeepaliveInterval, Timeout: o.KeepaliveTimeout, IntervalJitter: o.KeepaliveIntervalJitter,
			ConnectionIdleInterval: o.KeepaliveConnectionIdleInterval,
		}
	}
	return cfg
}
