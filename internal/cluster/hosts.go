package cluster

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/config"
)

// Host is one upstream endpoint with its own pool of idle connections. A host survives DNS
// refreshes that still return its address, so its pool and counts carry over.
type Host struct {
	// Address is host:port. For STRICT_DNS and STATIC it is the IP; for LOGICAL_DNS it is the
	// configured name, and connections go to the name's current first address.
	Address string
	Weight  uint32 // load_balancing_weight, at least 1

	cluster  *Cluster
	dialAddr atomic.Pointer[string] // LOGICAL_DNS: the current resolved IP:port; nil: Address
	rqActive atomic.Int64           // leases out (a hijacked one until its conn is closed)
	cxActive atomic.Int64           // live or dialing connections
	pool     pool
	h2       h2pool
}

func newHost(c *Cluster, addr string, weight uint32) *Host {
	h := &Host{Address: addr, Weight: max(weight, 1), cluster: c}
	h.pool.host = h
	return h
}

// ActiveRequests returns the number of requests in flight on this host (LEAST_REQUEST's input).
func (h *Host) ActiveRequests() int64 { return h.rqActive.Load() }

// ActiveConnections returns the number of open (or opening) connections to this host, idle or not.
func (h *Host) ActiveConnections() int64 { return h.cxActive.Load() }

// DialAddress returns where new connections to this host go: Address, or for a LOGICAL_DNS host
// the IP:port its name resolved to last.
func (h *Host) DialAddress() string {
	if a := h.dialAddr.Load(); a != nil {
		return *a
	}
	return h.Address
}

// hostSet is one immutable list of hosts plus the load balancer's state for it.
type hostSet struct {
	hosts []*Host
	total uint64 // sum of weights

	mu      sync.Mutex
	current []int64 // smooth weighted round robin: current weight per host, index-aligned
}

func newHostSet(hosts []*Host) *hostSet {
	s := &hostSet{hosts: hosts, current: make([]int64, len(hosts))}
	for _, h := range hosts {
		s.total += uint64(h.Weight)
	}
	return s
}

// pick chooses a host by policy, or returns nil when there is none.
func (s *hostSet) pick(p config.LBPolicy) *Host {
	switch {
	case len(s.hosts) == 0:
		return nil
	case len(s.hosts) == 1:
		return s.hosts[0]
	case p == config.Random:
		n := rand.Uint64N(s.total)
		for _, h := range s.hosts {
			if n < uint64(h.Weight) {
				return h
			}
			n -= uint64(h.Weight)
		}
		return s.hosts[len(s.hosts)-1]
	case p == config.LeastRequest:
		// Power of two choices over distinct hosts; weights are not used.
		i := rand.IntN(len(s.hosts))
		j := rand.IntN(len(s.hosts) - 1)
		if j >= i {
			j++
		}
		a, b := s.hosts[i], s.hosts[j]
		if b.ActiveRequests() < a.ActiveRequests() {
			return b
		}
		return a
	default:
		// Smooth weighted round robin (nginx): every pick adds each weight to its host's current
		// value, takes the largest and subtracts the total from it. Weights 5,1,1 give a,a,b,a,c,a,a.
		s.mu.Lock()
		defer s.mu.Unlock()
		best := 0
		for i, h := range s.hosts {
			s.current[i] += int64(h.Weight)
			if s.current[i] > s.current[best] {
				best = i
			}
		}
		s.current[best] -= int64(s.total)
		return s.hosts[best]
	}
}

// staticHosts builds the hosts of a STATIC cluster; endpoints that are not IPs are skipped
// (config validation should have refused them).
func (c *Cluster) staticHosts() []*Host {
	var hosts []*Host
	for _, ep := range c.Config.Endpoints {
		ip, err := netip.ParseAddr(ep.Host)
		if err != nil {
			c.log.Error("STATIC endpoint address is not an IP; skipped", "address", ep.Host)
			continue
		}
		hosts = append(hosts, newHost(c, netip.AddrPortFrom(ip, uint16(ep.Port)).String(), ep.Weight))
	}
	return hosts
}

// setHosts installs a new host set, closes the pools of hosts that left it and updates the
// membership gauges.
func (c *Cluster) setHosts(hosts []*Host) {
	old := c.hosts.Swap(newHostSet(hosts))
	for _, h := range old.hosts {
		if !slices.Contains(hosts, h) {
			h.pool.close()
		}
	}
	c.Stats.MembershipTotal.Set(int64(len(hosts)))
	c.Stats.MembershipHealthy.Set(int64(len(hosts))) // no health checking: every host is healthy
}

// refreshDNS resolves the endpoints now and then every DNSRefreshRate until ctx ends. It is the
// only writer of the host set of a DNS cluster.
func (c *Cluster) refreshDNS(ctx context.Context) {
	rate := c.Config.DNSRefreshRate
	if rate <= 0 {
		rate = 5 * time.Second
	}
	// The hosts each endpoint resolved to last, kept when a resolution fails.
	byEndpoint := make([][]*Host, len(c.Config.Endpoints))
	t := time.NewTimer(0)
	defer t.Stop()
	for first := true; ; first = false {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if c.Config.Type == config.LogicalDNS {
			c.resolveLogical(ctx, byEndpoint)
		} else {
			c.resolveStrict(ctx, byEndpoint)
		}
		if ctx.Err() != nil {
			return
		}
		if first {
			close(c.ready)
		}
		t.Reset(rate)
	}
}

// resolveStrict implements STRICT_DNS: every address of every endpoint is a host.
func (c *Cluster) resolveStrict(ctx context.Context, byEndpoint [][]*Host) {
	known := map[string]*Host{}
	for _, h := range c.hostSet().hosts {
		known[h.Address] = h
	}
	var all []*Host
	for i, ep := range c.Config.Endpoints {
		if addrs, ok := c.resolve(ctx, ep.Host); ok {
			byEndpoint[i] = byEndpoint[i][:0:0]
			for _, ip := range addrs {
				addr := net.JoinHostPort(ip, strconv.Itoa(ep.Port))
				h := known[addr]
				if h == nil {
					h = newHost(c, addr, ep.Weight)
					known[addr] = h
				}
				byEndpoint[i] = append(byEndpoint[i], h)
			}
		}
		all = append(all, byEndpoint[i]...)
	}
	c.setHosts(all)
}

// resolveLogical implements LOGICAL_DNS: one host named after the first endpoint, whose
// connections go to the first address the name resolves to.
func (c *Cluster) resolveLogical(ctx context.Context, byEndpoint [][]*Host) {
	if len(c.Config.Endpoints) == 0 {
		return
	}
	ep := c.Config.Endpoints[0]
	addrs, ok := c.resolve(ctx, ep.Host)
	if !ok || len(addrs) == 0 {
		return
	}
	dial := net.JoinHostPort(addrs[0], strconv.Itoa(ep.Port))
	if byEndpoint[0] == nil {
		byEndpoint[0] = []*Host{newHost(c, net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port)), ep.Weight)}
		byEndpoint[0][0].dialAddr.Store(&dial)
		c.setHosts(byEndpoint[0])
		return
	}
	byEndpoint[0][0].dialAddr.Store(&dial)
}

// resolve looks name up and keeps the IPv4 addresses when there are any, else the IPv6 ones
// (Envoy's V4_PREFERRED), so "localhost" does not become a ::1 host nobody listens on. ok is
// false when the lookup failed; the caller then keeps what it had.
func (c *Cluster) resolve(ctx context.Context, name string) (addrs []string, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	all, err := c.opts.lookup(ctx, name)
	if err != nil {
		if !errors.Is(ctx.Err(), context.Canceled) { // canceled: the manager is closing
			c.log.Warn("DNS resolution failed; keeping the previous hosts", "name", name, "err", err)
		}
		return nil, false
	}
	var v4, v6 []string
	for _, a := range all {
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil:
		case ip.Unmap().Is4():
			v4 = append(v4, ip.Unmap().String())
		default:
			v6 = append(v6, ip.String())
		}
	}
	if len(v4) > 0 {
		return v4, true
	}
	return v6, true
}
