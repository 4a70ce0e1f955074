package config

import (
	"time"

	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	connlimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	downstreamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
)

// Names of the connection limits and overload manager parts switchyard implements, as Envoy
// spells them.
const (
	ConnectionLimitFilter    = "envoy.filters.network.connection_limit"
	FixedHeapMonitor         = "envoy.resource_monitors.fixed_heap"
	GlobalConnectionsMonitor = "envoy.resource_monitors.global_downstream_max_connections"
	StopAcceptingRequests    = "envoy.overload_actions.stop_accepting_requests"
	ResetHighMemoryStream    = "envoy.overload_actions.reset_high_memory_stream"
	ShrinkHeap               = "envoy.overload_actions.shrink_heap"
)

// DefaultOverloadRefresh is Envoy's default overload_manager.refresh_interval.
const DefaultOverloadRefresh = time.Second

// ConnectionLimit is a compiled envoy.filters.network.connection_limit: the listener closes
// connections beyond MaxConnections open at once, after Delay. Its stats live under
// connection_limit.<StatPrefix>.
type ConnectionLimit struct {
	StatPrefix     string
	MaxConnections int64         // at least 1
	Delay          time.Duration // how long a refused connection is held before it is closed; 0: at once
}

// Overload is a compiled bootstrap overload_manager.
type Overload struct {
	RefreshInterval time.Duration      // how often the monitors are read; default 1 s
	MaxConnections  int64              // global_downstream_max_connections across all listeners; 0: no limit
	Monitors        []*ResourceMonitor // in config order, the connections monitor included
	Actions         []*OverloadAction  // in config order
	// MinimumAccountToTrackPowerOfTwo is buffer_factory_config.minimum_account_to_track_power_of_two
	// (10 to 56): streams' buffered bytes are accounted so that ResetHighMemoryStream can reset the
	// largest. 0: no buffer_factory_config, no accounting.
	MinimumAccountToTrackPowerOfTwo uint32
}

// ResourceMonitor is one resource_monitors entry.
type ResourceMonitor struct {
	Name             string // FixedHeapMonitor or GlobalConnectionsMonitor
	MaxHeapSizeBytes uint64 // FixedHeapMonitor: pressure is the heap in use over this
	MaxConnections   int64  // GlobalConnectionsMonitor: pressure is open connections over this
}

// OverloadAction is one actions entry: its state is the highest of its triggers'.
type OverloadAction struct {
	Name     string // StopAcceptingRequests, ResetHighMemoryStream or ShrinkHeap
	Triggers []*OverloadTrigger
}

// OverloadTrigger turns one monitor's pressure into an action state in [0, 1].
type OverloadTrigger struct {
	Resource            string  // the monitor's name
	Scaled              bool    // a scaled trigger; otherwise a threshold trigger
	Threshold           float64 // threshold.value: saturated (1) at or above it, else 0
	ScalingThreshold    float64 // scaled: 0 at or below it
	SaturationThreshold float64 // scaled: 1 at or above it, linear in between
}

// connectionLimit compiles the connection_limit network filter.
func (c *compiler) connectionLimit(cl *connlimitv3.ConnectionLimit, p path) *ConnectionLimit {
	return &ConnectionLimit{
		StatPrefix:     cl.GetStatPrefix(),
		MaxConnections: int64(cl.GetMaxConnections().GetValue()),
		Delay:          c.duration(cl.GetDelay(), 0, p.field("delay")),
	}
}

// overload compiles the bootstrap overload_manager with Envoy's checks (OverloadManagerImpl):
// known monitors and actions only, no duplicates, triggers naming configured monitors, and
// reset_high_memory_stream only with a buffer_factory_config.
func (c *compiler) overload(om *overloadv3.OverloadManager, p path) *Overload {
	if om == nil {
		return nil
	}
	out := &Overload{RefreshInterval: c.duration(om.GetRefreshInterval(), DefaultOverloadRefresh, p.field("refresh_interval")),
		// ValidateAll has kept it within [10, 56] when buffer_factory_config is present.
		MinimumAccountToTrackPowerOfTwo: om.GetBufferFactoryConfig().GetMinimumAccountToTrackPowerOfTwo()}
	if out.RefreshInterval == 0 {
		c.fail(p.field("refresh_interval"), "refresh_interval must be greater than 0")
	}
	monitors := map[string]bool{}
	for i, rm := range om.GetResourceMonitors() {
		mp := p.field("resource_monitors").index(i)
		name := rm.GetName()
		if monitors[name] {
			c.fail(mp.field("name"), "Duplicate resource monitor %s", name)
		}
		monitors[name] = true
		m := &ResourceMonitor{Name: name}
		tp := mp.field("typed_config")
		cfg := c.unpack(rm.GetTypedConfig(), tp)
		switch name {
		case FixedHeapMonitor:
			fh, ok := cfg.(*fixedheapv3.FixedHeapConfig)
			if !ok {
				c.fail(tp, "%s needs a typed_config of type envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig", name)
				break
			}
			if m.MaxHeapSizeBytes = fh.GetMaxHeapSizeBytes(); m.MaxHeapSizeBytes == 0 {
				c.fail(tp.field("max_heap_size_bytes"), "max_heap_size_bytes must be greater than 0")
			}
		case GlobalConnectionsMonitor:
			dc, ok := cfg.(*downstreamv3.DownstreamConnectionsConfig)
			if !ok {
				c.fail(tp, "%s needs a typed_config of type envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig", name)
				break
			}
			m.MaxConnections = dc.GetMaxActiveDownstreamConnections()
			out.MaxConnections = m.MaxConnections
		default:
			c.fail(mp.field("name"), "resource monitor %q is not supported by switchyard; the monitors are %s and %s",
				name, FixedHeapMonitor, GlobalConnectionsMonitor)
		}
		out.Monitors = append(out.Monitors, m)
	}
	actions := map[string]bool{}
	for i, a := range om.GetActions() {
		ap := p.field("actions").index(i)
		name := a.GetName()
		switch name {
		case StopAcceptingRequests, ShrinkHeap:
		case ResetHighMemoryStream:
			if om.GetBufferFactoryConfig() == nil {
				// Envoy's words: the action has no accounts to act on without it.
				c.fail(ap.field("name"), "Overload action %q requires buffer_factory_config.", name)
			}
		default:
			c.fail(ap.field("name"), "overload action %q is not supported by switchyard; the actions are %s, %s and %s",
				name, StopAcceptingRequests, ResetHighMemoryStream, ShrinkHeap)
		}
		if actions[name] {
			c.fail(ap.field("name"), "Duplicate overload action %s", name)
		}
		actions[name] = true
		act := &OverloadAction{Name: name}
		resources := map[string]bool{}
		for j, t := range a.GetTriggers() {
			tp := ap.field("triggers").index(j)
			if !monitors[t.GetName()] {
				c.fail(tp.field("name"), "Unknown trigger resource %s for overload action %s", t.GetName(), name)
			}
			if resources[t.GetName()] {
				c.fail(tp.field("name"), "Duplicate trigger resource for overload action %s", name)
			}
			resources[t.GetName()] = true
			tr := &OverloadTrigger{Resource: t.GetName()}
			switch k := t.GetTriggerOneof().(type) {
			case *overloadv3.Trigger_Threshold:
				tr.Threshold = k.Threshold.GetValue()
			case *overloadv3.Trigger_Scaled:
				tr.Scaled = true
				tr.ScalingThreshold = k.Scaled.GetScalingThreshold()
				tr.SaturationThreshold = k.Scaled.GetSaturationThreshold()
				if tr.ScalingThreshold >= tr.SaturationThreshold {
					c.fail(tp.field("scaled"), "scaling_threshold must be less than saturation_threshold")
				}
			}
			act.Triggers = append(act.Triggers, tr)
		}
		out.Actions = append(out.Actions, act)
	}
	if om.GetBufferFactoryConfig() != nil && !actions[ResetHighMemoryStream] {
		c.warn(p.field("buffer_factory_config"), "buffer accounting has no effect without the %s action", ResetHighMemoryStream)
	}
	return out
}
