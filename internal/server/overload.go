package server

import (
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/memacct"
	"github.com/switchyard-proxy/switchyard/internal/rtmetrics"
	"github.com/switchyard-proxy/switchyard/internal/stats"
)

// overloadManager runs the bootstrap overload_manager the way Envoy's OverloadManagerImpl does:
// every refresh_interval it reads each resource monitor's pressure (a fraction of its limit),
// feeds it through the triggers, and sets each action's state in [0, 1] (1 = saturated). The
// global connection limit is Envoy's "proactive" monitor: it is checked at every accept rather
// than polled. Stats, with Envoy's names: overload.<monitor>.pressure (percent),
// overload.<monitor>.failed_updates and skipped_updates, overload.<action>.active (1 when
// saturated) and overload.<action>.scale_percent.
//
// envoy.overload_actions.reset_high_memory_stream works on the streams' buffer accounts (package
// memacct): as in Envoy's WorkerImpl, each time the action's state changes it resets the streams
// holding the most (Tracker.Reset), counted in envoy.overload_actions.reset_high_memory_stream.count.
//
// envoy.overload_actions.shrink_heap, as Envoy's HeapShrinker: every 10 s while the action is
// saturated, the heap's free pages go back to the system (debug.FreeOSMemory: a collection, then
// every page the heap does not use), counted in overload.envoy.overload_actions.shrink_heap.
// shrink_count. Go's runtime otherwise keeps pages up to the collector's goal (about twice the
// live heap), and gives a quiet process none of them back.
//
// envoy.resource_monitors.fixed_heap reads the heap in use, which in Go holds garbage too: the
// collector lets the heap grow to twice the live data before it runs (GOGC=100), where Envoy's
// tcmalloc frees at once. Left alone, a proxy whose live data is half of max_heap_size_bytes would
// reach a 0.9 threshold before every collection and shed requests or reset streams it has room
// for. So while a trigger watches the heap, the collector is steered (steerCollector): Go's soft
// memory limit is set, every refresh, so the heap in use stays under 85% of the lowest threshold
// that would fire an action — unless the live heap itself is above that, when it only keeps the
// garbage to a tenth of the live heap. A GOMEMLIMIT set lower wins, as does the lowest limit when
// several servers in one process steer (tests); the limit from before comes back when the last
// one stops.
//
// A nil *overloadManager (no overload_manager in the bootstrap) limits nothing.
type overloadManager struct {
	interval time.Duration
	log      *slog.Logger

	maxConns      int64        // global_downstream_max_connections; 0: no global limit
	conns         atomic.Int64 // downstream connections open on all listeners, admin included unless it opts out
	connsPressure *stats.Gauge // nil without the connections monitor

	heaps        []*heapMonitor
	actions      []*overloadAction
	stopRequests *overloadAction // nil unless envoy.overload_actions.stop_accepting_requests is configured

	resetStreams *overloadAction  // nil unless envoy.overload_actions.reset_high_memory_stream is configured
	memory       *memacct.Tracker // the streams' buffer accounts; nil without resetStreams
	resetCount   *stats.Counter   // envoy.overload_actions.reset_high_memory_stream.count

	shrinkHeap   *overloadAction // nil unless envoy.overload_actions.shrink_heap is configured
	shrinkEvery  time.Duration   // Envoy's HeapShrinker interval, 10 s
	shrinkCount  *stats.Counter  // overload.envoy.overload_actions.shrink_heap.shrink_count
	releaseFreed func()          // debug.FreeOSMemory; a test's counter

	heapTarget float64                 // the heap in use the collector aims under, as a fraction of the monitor's max; 0: not steered
	steered    *heapMonitor            // the monitor the steering keeps under heapTarget
	setGCLimit func(int64) int64       // debug.SetMemoryLimit; a test's recorder
	readMemory func() collectorReading // runtimeMemory; a test's figures
	ownLimit   int64                   // the limit this manager asks for; 0: none
}

// shrinkInterval is how often a saturated shrink_heap releases free memory (Envoy: 10 s).
const shrinkInterval = 10 * time.Second

// heapMonitor is envoy.resource_monitors.fixed_heap: the Go heap in use (live and not yet swept
// objects plus the unused space of their spans — tcmalloc's "heap size minus free and unmapped
// pages" in Envoy) over max_heap_size_bytes.
type heapMonitor struct {
	name     string
	max      uint64
	pressure *stats.Gauge
}

// overloadAction is one configured action and its current state.
type overloadAction struct {
	cfg          *config.OverloadAction
	state        atomic.Uint64 // math.Float64bits of the state; written by the refresh loop only
	active       *stats.Gauge
	scalePercent *stats.Gauge
}

func newOverloadManager(cfg *config.Overload, st *stats.Store, log *slog.Logger) *overloadManager {
	if cfg == nil {
		return nil
	}
	o := &overloadManager{interval: cfg.RefreshInterval, log: log, maxConns: cfg.MaxConnections,
		shrinkEvery: shrinkInterval, releaseFreed: debug.FreeOSMemory,
		setGCLimit: debug.SetMemoryLimit, readMemory: runtimeMemory}
	for _, m := range cfg.Monitors {
		sc := st.Scope("overload." + m.Name)
		// Envoy creates these for every monitor; nothing here fails or overlaps, so they stay 0.
		sc.Counter("failed_updates")
		sc.Counter("skipped_updates")
		switch m.Name {
		case config.FixedHeapMonitor:
			o.heaps = append(o.heaps, &heapMonitor{name: m.Name, max: m.MaxHeapSizeBytes, pressure: sc.Gauge("pressure")})
		case config.GlobalConnectionsMonitor:
			o.connsPressure = sc.Gauge("pressure")
		}
	}
	for _, a := range cfg.Actions {
		sc := st.Scope("overload." + a.Name)
		act := &overloadAction{cfg: a, active: sc.Gauge("active"), scalePercent: sc.Gauge("scale_percent")}
		act.active.Set(0)
		act.scalePercent.Set(0)
		o.actions = append(o.actions, act)
		switch a.Name {
		case config.StopAcceptingRequests:
			o.stopRequests = act
		case config.ResetHighMemoryStream:
			o.resetStreams = act
			o.memory = memacct.NewTracker(cfg.MinimumAccountToTrackPowerOfTwo)
			// Envoy's OverloadActionStatsNames::ResetStreamsCount, in the root scope (no
			// "overload." prefix).
			o.resetCount = st.Counter(config.ResetHighMemoryStream + ".count")
		case config.ShrinkHeap:
			o.shrinkHeap = act
			o.shrinkCount = sc.Counter("shrink_count")
		}
		for _, t := range a.Triggers {
			if t.Resource != config.FixedHeapMonitor {
				continue
			}
			fires := t.Threshold // where the trigger's state leaves 0
			if t.Scaled {
				fires = t.ScalingThreshold
			}
			if o.heapTarget == 0 || steerBelow*fires < o.heapTarget {
				o.heapTarget = steerBelow * fires
			}
		}
	}
	if o.heapTarget > 0 && len(o.heaps) > 0 {
		o.steered = o.heaps[0] // fixed_heap, the one heap monitor there is
	}
	return o
}

// steerBelow is how far under the lowest threshold on the heap the collector keeps the heap in
// use: the heap grows past the collector's goal while it marks (0.81 aimed at peaked at 0.87 with
// 3,000 tunnels open and 50 handshakes at a time).
const steerBelow = 0.85

// liveHeapSlack is the garbage the collector may leave when the live heap alone is above the
// steering target: a tenth of the live heap (GOGC=10), collecting often without running nonstop.
const liveHeapSlack = 1.1

// collectorReading is what steering needs from the runtime.
type collectorReading struct {
	live    uint64 // the heap live after the last collection
	inUse   uint64 // what fixed_heap reads: objects (live and not yet swept) and the free space of their spans
	nonHeap uint64 // what Go's memory limit counts besides the heap in use (stacks, metadata, free pages)
}

// steerCollector sets Go's soft memory limit so the heap in use stays under heapTarget of the
// steered monitor's max (see overloadManager).
func (o *overloadManager) steerCollector(m collectorReading) {
	if o.steered == nil {
		return
	}
	target := max(o.heapTarget*float64(o.steered.max), liveHeapSlack*float64(m.live))
	limit := int64(min(target+float64(m.nonHeap), math.MaxInt64/2))
	if d := limit - o.ownLimit; o.ownLimit != 0 && max(d, -d) < limit/64 {
		return // no change worth a call
	}
	o.ownLimit = limit
	o.applyLimit(limit)
}

// stopSteering withdraws this manager's limit.
func (o *overloadManager) stopSteering() {
	if o.ownLimit != 0 {
		o.ownLimit = 0
		o.applyLimit(0)
	}
}

// collectorLimits is the soft memory limit as every steering manager in the process wants it:
// there is one collector, so the lowest wins, and the limit from before (GOMEMLIMIT, or none)
// comes back when the last one stops.
var collectorLimits struct {
	mu    sync.Mutex
	outer int64
	want  map[*overloadManager]int64
}

// applyLimit records the limit o asks for (0: none any more) and sets the lowest of all.
func (o *overloadManager) applyLimit(limit int64) {
	c := &collectorLimits
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.want) == 0 {
		if limit == 0 {
			return
		}
		c.outer = o.setGCLimit(-1)
		c.want = make(map[*overloadManager]int64)
	}
	if limit == 0 {
		delete(c.want, o)
	} else {
		c.want[o] = limit
	}
	effective := c.outer
	for _, v := range c.want {
		effective = min(effective, v)
	}
	o.setGCLimit(effective)
}

// runtimeMemory reads the monitor's and the collector's figures from runtime/metrics.
func runtimeMemory() collectorReading {
	v := rtmetrics.Bytes("/gc/heap/live:bytes", "/memory/classes/total:bytes",
		"/memory/classes/heap/released:bytes", "/memory/classes/heap/objects:bytes",
		"/memory/classes/heap/unused:bytes")
	inUse := v[3] + v[4]
	mapped := v[1] - v[2] // what Go's memory limit counts
	return collectorReading{live: v[0], inUse: inUse, nonHeap: mapped - min(mapped, inUse)}
}

// memoryTracker returns the tracker the connection managers open stream accounts with; nil when
// reset_high_memory_stream is not configured.
func (o *overloadManager) memoryTracker() *memacct.Tracker {
	if o == nil {
		return nil
	}
	return o.memory
}

// start runs the refresh loop until ctx ends; wg tracks it.
func (o *overloadManager) start(ctx context.Context, wg *sync.WaitGroup) {
	if o == nil || (len(o.heaps) == 0 && o.connsPressure == nil) {
		return
	}
	wg.Add(1)
	go o.refreshLoop(ctx, wg)
}

// refreshLoop re-reads the monitors every refresh_interval; as in Envoy, the first reading comes
// one interval after start.
func (o *overloadManager) refreshLoop(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	t := time.NewTicker(o.interval)
	defer t.Stop()
	defer o.stopSteering()
	o.steerCollector(o.readMemory()) // from the start: a burst at start-up makes garbage too
	var shrink <-chan time.Time
	if o.shrinkHeap != nil {
		st := time.NewTicker(o.shrinkEvery)
		defer st.Stop()
		shrink = st.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m := o.readMemory()
			o.refresh(m.inUse)
			o.steerCollector(m)
		case <-shrink:
			o.maybeShrinkHeap()
		}
	}
}

// maybeShrinkHeap gives the heap's free pages back to the system if shrink_heap is saturated.
func (o *overloadManager) maybeShrinkHeap() {
	if math.Float64frombits(o.shrinkHeap.state.Load()) < 1 {
		return
	}
	o.releaseFreed()
	o.shrinkCount.Inc()
}

// refresh sets every pressure gauge and action state from a heap reading and the open
// connections.
func (o *overloadManager) refresh(heap uint64) {
	pressure := map[string]float64{}
	for _, h := range o.heaps {
		p := float64(heap) / float64(h.max)
		pressure[h.name] = p
		h.pressure.Set(int64(p * 100))
	}
	if o.connsPressure != nil {
		p := float64(o.conns.Load()) / float64(o.maxConns)
		pressure[config.GlobalConnectionsMonitor] = p
		o.connsPressure.Set(int64(p * 100))
	}
	for _, a := range o.actions {
		v := 0.0
		for _, t := range a.cfg.Triggers {
			v = max(v, triggerState(t, pressure[t.Resource]))
		}
		old := math.Float64frombits(a.state.Swap(math.Float64bits(v)))
		if (old >= 1) != (v >= 1) {
			word := "scaling"
			if v >= 1 {
				word = "saturated"
			}
			o.log.Info("overload action "+word, "action", a.cfg.Name, "state", v)
		}
		a.active.Set(boolInt(v >= 1))
		a.scalePercent.Set(int64(v * 100))
		if a == o.resetStreams && v != old {
			o.resetHighMemoryStreams(v)
		}
	}
}

// resetHighMemoryStreams is reset_high_memory_stream's callback, which Envoy runs when the
// action's state changes. At state 0 it does nothing: Envoy's code would still clear the largest
// class there, but its documentation says no stream is reset below the scaling threshold.
func (o *overloadManager) resetHighMemoryStreams(state float64) {
	if state <= 0 {
		return
	}
	if n := o.memory.Reset(state); n > 0 {
		o.resetCount.Add(uint64(n))
		o.log.Warn("overload: resetting the streams holding the most buffered bytes", "streams", n, "state", state)
	}
}

// triggerState is Envoy's ThresholdTriggerImpl and ScaledTriggerImpl: a threshold trigger is
// saturated at or above its value; a scaled one is 0 at or below scaling_threshold, 1 at or above
// saturation_threshold, and linear in between.
func triggerState(t *config.OverloadTrigger, pressure float64) float64 {
	if !t.Scaled {
		if pressure >= t.Threshold {
			return 1
		}
		return 0
	}
	switch {
	case pressure <= t.ScalingThreshold:
		return 0
	case pressure >= t.SaturationThreshold:
		return 1
	default:
		return (pressure - t.ScalingThreshold) / (t.SaturationThreshold - t.ScalingThreshold)
	}
}

// shedRequest is stop_accepting_requests as the HCM asks it for each new request: Envoy sheds a
// request with a probability equal to the action's state, so a saturated action sheds them all.
func (o *overloadManager) shedRequest() bool {
	v := math.Float64frombits(o.stopRequests.state.Load())
	switch {
	case v <= 0:
		return false
	case v >= 1:
		return true
	default:
		return rand.Float64() < v
	}
}

// tryAllocateConn takes one of the global connections, reporting false when all are taken.
func (o *overloadManager) tryAllocateConn() bool {
	if o == nil || o.maxConns <= 0 {
		return true
	}
	for {
		n := o.conns.Load()
		if n >= o.maxConns {
			return false
		}
		if o.conns.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// releaseConn gives back a connection taken by tryAllocateConn.
func (o *overloadManager) releaseConn() {
	if o == nil || o.maxConns <= 0 {
		return
	}
	o.conns.Add(-1)
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// connLimit is a listener's envoy.filters.network.connection_limit: at most max connections open
// at once; the next ones are accepted, held for delay without being read, and closed. Stats:
// connection_limit.<stat_prefix>.limited_connections and active_connections.
type connLimit struct {
	max     int64
	delay   time.Duration
	n       atomic.Int64
	active  *stats.Gauge
	limited *stats.Counter
}

func newConnLimit(cfg *config.ConnectionLimit, st *stats.Store) *connLimit {
	if cfg == nil {
		return nil
	}
	sc := st.Scope("connection_limit." + cfg.StatPrefix)
	return &connLimit{max: cfg.MaxConnections, delay: cfg.Delay, active: sc.Gauge("active_connections"),
		limited: sc.Counter("limited_connections")}
}

// tryAcquire counts a new connection in, or counts it limited and reports false.
func (l *connLimit) tryAcquire() bool {
	for {
		n := l.n.Load()
		if n >= l.max {
			l.limited.Inc()
			return false
		}
		if l.n.CompareAndSwap(n, n+1) {
			l.active.Inc()
			return true
		}
	}
}

// release counts a connection admitted by tryAcquire out.
func (l *connLimit) release() {
	l.n.Add(-1)
	l.active.Dec()
}
