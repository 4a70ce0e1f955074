package server

import (
	"context"
	"io"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/stats"
)

func TestTriggerState(t *testing.T) {
	threshold := &config.OverloadTrigger{Threshold: 0.5}
	scaled := &config.OverloadTrigger{Scaled: true, ScalingThreshold: 0.5, SaturationThreshold: 0.9}
	tests := []struct {
		name     string
		trigger  *config.OverloadTrigger
		pressure float64
		want     float64
	}{
		{"threshold below", threshold, 0.49, 0},
		{"threshold at", threshold, 0.5, 1},
		{"threshold far above", threshold, 1e6, 1},
		{"scaled at scaling threshold", scaled, 0.5, 0},
		{"scaled halfway", scaled, 0.7, 0.5},
		{"scaled at saturation", scaled, 0.9, 1},
		{"scaled above saturation", scaled, 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := triggerState(tt.trigger, tt.pressure); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("triggerState(%v) = %v, want %v", tt.pressure, got, tt.want)
			}
		})
	}
}

// TestOverloadRefresh: the pressure gauges are percents, an action takes its highest trigger,
// and active / scale_percent follow it.
func TestOverloadRefresh(t *testing.T) {
	cfg := &config.Overload{MaxConnections: 4,
		Monitors: []*config.ResourceMonitor{{Name: config.FixedHeapMonitor, MaxHeapSizeBytes: 1000}, {Name: config.GlobalConnectionsMonitor, MaxConnections: 4}},
		Actions: []*config.OverloadAction{{Name: config.StopAcceptingRequests, Triggers: []*config.OverloadTrigger{
			{Resource: config.FixedHeapMonitor, Scaled: true, ScalingThreshold: 0.5, SaturationThreshold: 0.9},
			{Resource: config.GlobalConnectionsMonitor, Threshold: 0.75},
		}}}}
	tests := []struct {
		name                    string
		heap                    uint64
		conns                   int
		heapPct, connsPct       int64
		active, scale           int64
		shedsAlways, shedsNever bool
	}{
		{"idle", 100, 0, 10, 0, 0, 0, false, true},
		{"heap scaling", 800, 1, 80, 25, 0, 75, false, false},
		{"connections saturate", 700, 3, 70, 75, 1, 100, true, false},
		{"heap over its limit", 2500, 0, 250, 0, 1, 100, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := stats.NewStore()
			o := newOverloadManager(cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
			for range tt.conns {
				if !o.tryAllocateConn() {
					t.Fatal("tryAllocateConn refused below the limit")
				}
			}
			o.refresh(tt.heap)
			checks := map[string]int64{
				"overload.envoy.resource_monitors.fixed_heap.pressure":                        tt.heapPct,
				"overload.envoy.resource_monitors.global_downstream_max_connections.pressure": tt.connsPct,
				"overload.envoy.overload_actions.stop_accepting_requests.active":              tt.active,
				"overload.envoy.overload_actions.stop_accepting_requests.scale_percent":       tt.scale,
			}
			for name, want := range checks {
				if got := st.Gauge(name).Value(); got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
			sheds := 0
			for range 200 {
				if o.shedRequest() {
					sheds++
				}
			}
			if tt.shedsAlways && sheds != 200 || tt.shedsNever && sheds != 0 {
				t.Errorf("shed %d of 200 requests", sheds)
			}
			if !tt.shedsAlways && !tt.shedsNever && (sheds == 0 || sheds == 200) {
				t.Errorf("a half-scaled action shed %d of 200 requests", sheds)
			}
		})
	}
}

func TestGlobalConnectionLimit(t *testing.T) {
	o := newOverloadManager(&config.Overload{MaxConnections: 2}, stats.NewStore(), slog.Default())
	got := []bool{o.tryAllocateConn(), o.tryAllocateConn(), o.tryAllocateConn()}
	if got[0] != true || got[1] != true || got[2] != false {
		t.Fatalf("allocations with max 2: %v", got)
	}
	o.releaseConn()
	if !o.tryAllocateConn() {
		t.Error("a released connection was not given back")
	}
	var none *overloadManager
	if !none.tryAllocateConn() {
		t.Error("no overload manager must not limit connections")
	}
	none.releaseConn()
}

func TestConnLimit(t *testing.T) {
	st := stats.NewStore()
	l := newConnLimit(&config.ConnectionLimit{StatPrefix: "cl", MaxConnections: 2}, st)
	got := []bool{l.tryAcquire(), l.tryAcquire(), l.tryAcquire(), l.tryAcquire()}
	if got[0] != true || got[1] != true || got[2] != false || got[3] != false {
		t.Fatalf("acquisitions with max 2: %v", got)
	}
	if a, n := st.Gauge("connection_limit.cl.active_connections").Value(), st.Counter("connection_limit.cl.limited_connections").Value(); a != 2 || n != 2 {
		t.Errorf("active_connections %d limited_connections %d, want 2 and 2", a, n)
	}
	l.release()
	if !l.tryAcquire() {
		t.Error("a released connection was not given back")
	}
	if newConnLimit(nil, st) != nil {
		t.Error("no connection_limit filter must give a nil limit")
	}
}

// TestResetHighMemoryStreamAction: as in Envoy, the action resets streams when its state changes
// (not on every refresh at the same state), the larger the state the more classes, never at 0;
// resets are counted in envoy.overload_actions.reset_high_memory_stream.count.
func TestResetHighMemoryStreamAction(t *testing.T) {
	cfg := &config.Overload{MinimumAccountToTrackPowerOfTwo: 10, // tracked from 512 B; class 7 from 64 KiB
		Monitors: []*config.ResourceMonitor{{Name: config.FixedHeapMonitor, MaxHeapSizeBytes: 1000}},
		Actions: []*config.OverloadAction{{Name: config.ResetHighMemoryStream, Triggers: []*config.OverloadTrigger{
			{Resource: config.FixedHeapMonitor, Scaled: true, ScalingThreshold: 0.5, SaturationThreshold: 0.9},
		}}}}
	st := stats.NewStore()
	o := newOverloadManager(cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	tr := o.memoryTracker()
	if tr == nil {
		t.Fatal("no memory tracker with reset_high_memory_stream configured")
	}
	reset := map[string]bool{}
	open := func(name string, bytes int) {
		tr.NewAccount(func() { reset[name] = true }).Charge(bytes)
	}
	open("big", 1<<20)   // class 7
	open("mid", 8<<10)   // class 4
	open("small", 1<<10) // class 1
	steps := []struct {
		name   string
		before func()
		heap   uint64
		reset  []string // all streams reset so far
		count  uint64
	}{
		{"below the scaling threshold", nil, 400, nil, 0},
		{"scaling: 3 classes", nil, 600, []string{"big"}, 1},
		{"same state again", func() { open("big2", 1<<20) }, 600, []string{"big"}, 1},
		{"higher: 5 classes", nil, 720, []string{"big", "big2", "mid"}, 3},
		{"back to 0", nil, 100, []string{"big", "big2", "mid"}, 3},
		{"saturated: every class", nil, 2000, []string{"big", "big2", "mid", "small"}, 4},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		o.refresh(s.heap)
		var got []string
		for name := range reset {
			got = append(got, name)
		}
		slices.Sort(got)
		if !slices.Equal(got, s.reset) {
			t.Errorf("%s: streams reset %v, want %v", s.name, got, s.reset)
		}
		if c := st.Counter("envoy.overload_actions.reset_high_memory_stream.count").Value(); c != s.count {
			t.Errorf("%s: envoy.overload_actions.reset_high_memory_stream.count = %d, want %d", s.name, c, s.count)
		}
	}
	if o := newOverloadManager(&config.Overload{Monitors: cfg.Monitors}, st, slog.Default()); o.memoryTracker() != nil {
		t.Error("a tracker without reset_high_memory_stream")
	}
}

// shrink_heap gives free memory back only while saturated, once per interval, and counts it under
// Envoy's name.
func TestShrinkHeapAction(t *testing.T) {
	cfg := &config.Overload{RefreshInterval: time.Hour,
		Monitors: []*config.ResourceMonitor{{Name: config.FixedHeapMonitor, MaxHeapSizeBytes: 1000}},
		Actions: []*config.OverloadAction{{Name: config.ShrinkHeap, Triggers: []*config.OverloadTrigger{
			{Resource: config.FixedHeapMonitor, Threshold: 0.9}}}}}
	st := stats.NewStore()
	o := newOverloadManager(cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var released atomic.Int64
	o.releaseFreed = func() { released.Add(1) }
	count := st.Counter("overload.envoy.overload_actions.shrink_heap.shrink_count")

	o.refresh(500) // 50%: not saturated
	o.maybeShrinkHeap()
	if released.Load() != 0 || count.Value() != 0 {
		t.Fatalf("below the threshold: released %d times, shrink_count %d; want 0", released.Load(), count.Value())
	}
	o.refresh(950)
	o.maybeShrinkHeap()
	o.maybeShrinkHeap()
	if released.Load() != 2 || count.Value() != 2 {
		t.Fatalf("saturated: released %d times, shrink_count %d; want 2", released.Load(), count.Value())
	}
	if got := st.Gauge("overload.envoy.overload_actions.shrink_heap.active").Value(); got != 1 {
		t.Errorf("shrink_heap.active = %d, want 1", got)
	}

	// The refresh loop runs it on its own ticker.
	o.refresh(500)
	o.shrinkEvery = 5 * time.Millisecond
	o.refresh(990)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	o.start(ctx, &wg)
	deadline := time.Now().Add(5 * time.Second)
	for count.Value() < 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if count.Value() < 4 {
		t.Fatalf("shrink_count %d after the loop ran, want it counting", count.Value())
	}
}

// The real release returns the heap's free pages: after a burst of garbage, the runtime holds
// fewer idle pages that it has not given back.
func TestShrinkHeapReleases(t *testing.T) {
	for range 64 {
		garbage = append(garbage, make([]byte, 1<<20))
	}
	garbage = nil
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	newOverloadManager(&config.Overload{}, stats.NewStore(), slog.New(slog.NewTextHandler(io.Discard, nil))).releaseFreed()
	runtime.ReadMemStats(&after)
	kept := func(m runtime.MemStats) uint64 { return m.HeapIdle - m.HeapReleased }
	if kept(after) >= kept(before) || kept(after) > 8<<20 {
		t.Fatalf("idle heap not returned: %d -> %d bytes kept", kept(before), kept(after))
	}
}

// garbage holds TestShrinkHeapReleases's burst until it lets go of it.
var garbage [][]byte

// steeredConfig watches a 1000-byte heap with a threshold at 0.9 and a scaled trigger from 0.8.
func steeredConfig() *config.Overload {
	return &config.Overload{
		Monitors: []*config.ResourceMonitor{{Name: config.FixedHeapMonitor, MaxHeapSizeBytes: 1000}},
		Actions: []*config.OverloadAction{
			{Name: config.StopAcceptingRequests, Triggers: []*config.OverloadTrigger{{Resource: config.FixedHeapMonitor, Threshold: 0.9}}},
			{Name: config.ResetHighMemoryStream, Triggers: []*config.OverloadTrigger{
				{Resource: config.FixedHeapMonitor, Scaled: true, ScalingThreshold: 0.8, SaturationThreshold: 0.95}}},
		}}
}

// TestSteerCollector: the limit aims the heap in use under 85% of the lowest point where a heap
// trigger fires (here the scaled trigger's 0.8: 680 of 1000 bytes) plus what the limit counts
// besides the heap; above that, a tenth over the live heap; never above a limit set before
// (GOMEMLIMIT); and the limit from before comes back when steering stops.
func TestSteerCollector(t *testing.T) {
	var calls []int64
	outer := int64(math.MaxInt64)
	o := newOverloadManager(steeredConfig(), stats.NewStore(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	o.setGCLimit = func(v int64) int64 {
		if v < 0 {
			return outer
		}
		calls = append(calls, v)
		return 0
	}
	steps := []struct {
		name  string
		m     collectorReading
		calls []int64
	}{
		{"live well under", collectorReading{live: 100, nonHeap: 50}, []int64{730}},
		{"a small change is not worth a call", collectorReading{live: 200, nonHeap: 55}, []int64{730}},
		{"live above the target", collectorReading{live: 800, nonHeap: 50}, []int64{730, 930}},
	}
	for _, s := range steps {
		o.steerCollector(s.m)
		if !slices.Equal(calls, s.calls) {
			t.Fatalf("%s: limits set %v, want %v", s.name, calls, s.calls)
		}
	}
	o.stopSteering()
	if want := []int64{730, 930, math.MaxInt64}; !slices.Equal(calls, want) {
		t.Fatalf("after stop: limits set %v, want %v", calls, want)
	}

	calls, outer = nil, 500
	o.steerCollector(collectorReading{live: 100, nonHeap: 50})
	if !slices.Equal(calls, []int64{500}) {
		t.Fatalf("under GOMEMLIMIT=500: limits set %v, want [500]", calls)
	}
	o.stopSteering()

	// Two servers in one process: the lower limit holds until its server stops.
	calls, outer = nil, math.MaxInt64
	o2 := newOverloadManager(steeredConfig(), stats.NewStore(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	o2.setGCLimit = o.setGCLimit
	o.steerCollector(collectorReading{live: 100, nonHeap: 50})
	o2.steerCollector(collectorReading{live: 100, nonHeap: 900})
	o.stopSteering()
	o2.stopSteering()
	if want := []int64{730, 730, 1580, math.MaxInt64}; !slices.Equal(calls, want) {
		t.Fatalf("two servers: limits set %v, want %v", calls, want)
	}

	noHeapTrigger := &config.Overload{MaxConnections: 4,
		Monitors: []*config.ResourceMonitor{{Name: config.FixedHeapMonitor, MaxHeapSizeBytes: 1000}, {Name: config.GlobalConnectionsMonitor, MaxConnections: 4}},
		Actions: []*config.OverloadAction{{Name: config.StopAcceptingRequests, Triggers: []*config.OverloadTrigger{
			{Resource: config.GlobalConnectionsMonitor, Threshold: 0.9}}}}}
	o = newOverloadManager(noHeapTrigger, stats.NewStore(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	o.setGCLimit = func(v int64) int64 { t.Errorf("SetMemoryLimit(%d) with no trigger on the heap", v); return 0 }
	o.steerCollector(collectorReading{live: 900, nonHeap: 50})
}

// TestSteeredHeapStaysUnderThreshold is the bug steering fixes, with Go's real collector: live data
// at half of max_heap_size_bytes and a steady stream of garbage. Unsteered, the heap in use grows
// to about twice the live heap (the whole limit) before each collection, so a 0.9 threshold would
// fire with room to spare; steered, it stays under the threshold.
func TestSteeredHeapStaysUnderThreshold(t *testing.T) {
	runtime.GC()
	base := runtimeMemory().live
	const limit = 256 << 20
	cfg := steeredConfig()
	cfg.Monitors[0].MaxHeapSizeBytes = limit
	cfg.Actions = cfg.Actions[:1] // the 0.9 threshold alone
	o := newOverloadManager(cfg, stats.NewStore(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer o.stopSteering()

	ballast = nil
	for uint64(len(ballast))<<20 < limit/2-base {
		ballast = append(ballast, make([]byte, 1<<20))
	}
	runtime.GC()
	o.steerCollector(runtimeMemory())
	var peak uint64
	for i := range 4000 {
		sink = make([]byte, 64<<10) // 250 MiB of garbage in all: unsteered, one collection at least
		if i%16 == 0 {
			m := runtimeMemory()
			peak = max(peak, m.inUse)
			if i%256 == 0 {
				o.steerCollector(m) // as each refresh does
			}
		}
	}
	ballast = nil
	if peak >= 9*limit/10 {
		t.Fatalf("the heap in use peaked at %.2f of max_heap_size_bytes, want under the 0.9 threshold", float64(peak)/limit)
	}
	t.Logf("peak heap in use %.2f of max_heap_size_bytes (live 0.50)", float64(peak)/limit)
}

// ballast is TestSteeredHeapStaysUnderThreshold's live data; sink keeps its garbage from being
// optimized away.
var (
	ballast [][]byte
	sink    []byte
)
