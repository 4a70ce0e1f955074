// Package stats holds the proxy's counters and gauges under Envoy's names
// ("http.<stat_prefix>.downstream_cx_upgrades_total", "cluster.<name>.upstream_rq_101", ...).
// Stats are API: tests and users read them, so names and meanings follow Envoy's.
package stats

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Counter only goes up.
type Counter struct {
	name string
	v    atomic.Uint64
}

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value returns the current count.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Name returns the full stat name.
func (c *Counter) Name() string { return c.name }

// Gauge goes up and down.
type Gauge struct {
	name string
	v    atomic.Int64
}

// Inc adds one.
func (g *Gauge) Inc() { g.v.Add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.v.Add(-1) }

// Add adds n, which may be negative.
func (g *Gauge) Add(n int64) { g.v.Add(n) }

// Set replaces the value.
func (g *Gauge) Set(n int64) { g.v.Store(n) }

// Value returns the current value.
func (g *Gauge) Value() int64 { return g.v.Load() }

// Name returns the full stat name.
func (g *Gauge) Name() string { return g.name }

// Store owns every stat of one process. Asking twice for the same name returns the same stat, so
// components created on a reload keep counting where the old ones stopped.
type Store struct {
	mu       sync.Mutex
	counters map[string]*Counter
	gauges   map[string]*Gauge
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{counters: map[string]*Counter{}, gauges: map[string]*Gauge{}}
}

// Counter returns the counter called name, creating it at zero.
func (s *Store) Counter(name string) *Counter {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.counters[name]
	if !ok {
		c = &Counter{name: name}
		s.counters[name] = c
	}
	return c
}

// Gauge returns the gauge called name, creating it at zero.
func (s *Store) Gauge(name string) *Gauge {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.gauges[name]
	if !ok {
		g = &Gauge{name: name}
		s.gauges[name] = g
	}
	return g
}

// Scope returns a view of the store whose names all start with prefix + ".".
func (s *Store) Scope(prefix string) *Scope {
	return &Scope{store: s, prefix: strings.TrimSuffix(prefix, ".") + "."}
}

// Kind says whether a Sample is a counter or a gauge.
type Kind int

// Stat kinds.
const (
	KindCounter Kind = iota
	KindGauge
)

// Sample is one stat's value at the time of a Snapshot.
type Sample struct {
	Name  string
	Kind  Kind
	Value int64
}

// Snapshot returns every stat, sorted by name.
func (s *Store) Snapshot() []Sample {
	s.mu.Lock()
	out := make([]Sample, 0, len(s.counters)+len(s.gauges))
	for n, c := range s.counters {
		out = append(out, Sample{Name: n, Kind: KindCounter, Value: int64(c.Value())})
	}
	for n, g := range s.gauges {
		out = append(out, Sample{Name: n, Kind: KindGauge, Value: g.Value()})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Scope prefixes names, the way Envoy scopes stats per listener, connection manager and cluster.
type Scope struct {
	store  *Store
	prefix string
}

// Counter returns the counter prefix.name.
func (s *Scope) Counter(name string) *Counter { return s.store.Counter(s.prefix + name) }

// Gauge returns the gauge prefix.name.
func (s *Scope) Gauge(name string) *Gauge { return s.store.Gauge(s.prefix + name) }

// Scope returns a nested scope.
func (s *Scope) Scope(name string) *Scope {
	return &Scope{store: s.store, prefix: s.prefix + strings.TrimSuffix(name, ".") + "."}
}
