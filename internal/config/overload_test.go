package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// withConnectionLimit puts a connection_limit filter (fields in flow style) before the HCM.
func withConnectionLimit(t *testing.T, fields string) string {
	return conf(t, "- filters:\n      - name: envoy.filters.network.http_connection_manager",
		"- filters:\n      - name: envoy.filters.network.connection_limit\n        typed_config: {\"@type\": "+connLimitURL+", "+fields+"}\n"+
			"      - name: envoy.filters.network.http_connection_manager")
}

const (
	connLimitURL = "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit"
	fixedHeapURL = "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"
	dsConnsURL   = "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
	chainPath    = "static_resources.listeners[0].filter_chains[0].filters"
)

// overloadDoc is base with an overload_manager block (YAML indented at two spaces).
func overloadDoc(block string) string { return base + "overload_manager:\n" + block }

// heapMonitor and connsMonitor are resource_monitors entries.
const (
	heapMonitor  = "  - name: envoy.resource_monitors.fixed_heap\n    typed_config: {\"@type\": " + fixedHeapURL + ", max_heap_size_bytes: 1000}\n"
	connsMonitor = "  - name: envoy.resource_monitors.global_downstream_max_connections\n    typed_config: {\"@type\": " + dsConnsURL + ", max_active_downstream_connections: 2}\n"
)

func TestConnectionLimitCompiles(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want *ConnectionLimit
	}{
		{"absent", base, nil},
		{"no delay", withConnectionLimit(t, "stat_prefix: cl, max_connections: 2"), &ConnectionLimit{StatPrefix: "cl", MaxConnections: 2}},
		{"delay", withConnectionLimit(t, "stat_prefix: cl, max_connections: 7, delay: 1.5s"),
			&ConnectionLimit{StatPrefix: "cl", MaxConnections: 7, Delay: 1500 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := parse(t, tt.doc).Listeners[0]
			if !reflect.DeepEqual(l.ConnectionLimit, tt.want) {
				t.Errorf("ConnectionLimit = %+v, want %+v", l.ConnectionLimit, tt.want)
			}
			if l.HCM == nil || l.HCM.StatPrefix != "ingress" {
				t.Errorf("the HCM after the connection_limit was not compiled: %+v", l.HCM)
			}
		})
	}
}

func TestOverloadCompiles(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want *Overload
	}{
		{"absent", base, nil},
		{"global connections only, default refresh", overloadDoc("  resource_monitors:\n" + connsMonitor),
			&Overload{RefreshInterval: time.Second, MaxConnections: 2,
				Monitors: []*ResourceMonitor{{Name: GlobalConnectionsMonitor, MaxConnections: 2}}}},
		{"heap with both trigger kinds", overloadDoc("  refresh_interval: 0.25s\n  resource_monitors:\n" + heapMonitor + connsMonitor +
			"  actions:\n  - name: envoy.overload_actions.stop_accepting_requests\n    triggers:\n" +
			"    - name: envoy.resource_monitors.fixed_heap\n      threshold: {value: 0.5}\n" +
			"    - name: envoy.resource_monitors.global_downstream_max_connections\n      scaled: {scaling_threshold: 0.8, saturation_threshold: 0.9}\n"),
			&Overload{RefreshInterval: 250 * time.Millisecond, MaxConnections: 2,
				Monitors: []*ResourceMonitor{{Name: FixedHeapMonitor, MaxHeapSizeBytes: 1000}, {Name: GlobalConnectionsMonitor, MaxConnections: 2}},
				Actions: []*OverloadAction{{Name: StopAcceptingRequests, Triggers: []*OverloadTrigger{
					{Resource: FixedHeapMonitor, Threshold: 0.5},
					{Resource: GlobalConnectionsMonitor, Scaled: true, ScalingThreshold: 0.8, SaturationThreshold: 0.9},
				}}}}},
		{"reset_high_memory_stream with buffer accounting", overloadDoc("  buffer_factory_config: {minimum_account_to_track_power_of_two: 12}\n" +
			"  resource_monitors:\n" + heapMonitor + "  actions:\n  - name: envoy.overload_actions.reset_high_memory_stream\n    triggers:\n" +
			"    - name: envoy.resource_monitors.fixed_heap\n      scaled: {scaling_threshold: 0.85, saturation_threshold: 0.95}\n"),
			&Overload{RefreshInterval: time.Second, MinimumAccountToTrackPowerOfTwo: 12,
				Monitors: []*ResourceMonitor{{Name: FixedHeapMonitor, MaxHeapSizeBytes: 1000}},
				Actions: []*OverloadAction{{Name: ResetHighMemoryStream, Triggers: []*OverloadTrigger{
					{Resource: FixedHeapMonitor, Scaled: true, ScalingThreshold: 0.85, SaturationThreshold: 0.95},
				}}}}},
		{"both actions, the largest power", overloadDoc("  buffer_factory_config: {minimum_account_to_track_power_of_two: 56}\n" +
			"  resource_monitors:\n" + heapMonitor + "  actions:\n" +
			"  - name: envoy.overload_actions.stop_accepting_requests\n    triggers:\n    - name: envoy.resource_monitors.fixed_heap\n      threshold: {value: 0.99}\n" +
			"  - name: envoy.overload_actions.reset_high_memory_stream\n    triggers:\n    - name: envoy.resource_monitors.fixed_heap\n      threshold: {value: 0.9}\n"),
			&Overload{RefreshInterval: time.Second, MinimumAccountToTrackPowerOfTwo: 56,
				Monitors: []*ResourceMonitor{{Name: FixedHeapMonitor, MaxHeapSizeBytes: 1000}},
				Actions: []*OverloadAction{
					{Name: StopAcceptingRequests, Triggers: []*OverloadTrigger{{Resource: FixedHeapMonitor, Threshold: 0.99}}},
					{Name: ResetHighMemoryStream, Triggers: []*OverloadTrigger{{Resource: FixedHeapMonitor, Threshold: 0.9}}},
				}}},
		{"shrink_heap", overloadDoc("  resource_monitors:\n" + heapMonitor + "  actions:\n" +
			"  - name: envoy.overload_actions.shrink_heap\n    triggers:\n    - name: envoy.resource_monitors.fixed_heap\n      threshold: {value: 0.9}\n"),
			&Overload{RefreshInterval: time.Second,
				Monitors: []*ResourceMonitor{{Name: FixedHeapMonitor, MaxHeapSizeBytes: 1000}},
				Actions:  []*OverloadAction{{Name: ShrinkHeap, Triggers: []*OverloadTrigger{{Resource: FixedHeapMonitor, Threshold: 0.9}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := parse(t, tt.doc)
			if got := s.Overload; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Overload = %s, want %s", dump(got), dump(tt.want))
			}
			if len(s.Warnings) != 0 {
				t.Errorf("warnings %q, want none", s.Warnings)
			}
		})
	}
}

// TestBufferFactoryWithoutAction: accounting without the action that uses it loads, as in Envoy,
// with a warning naming the field.
func TestBufferFactoryWithoutAction(t *testing.T) {
	doc := overloadDoc("  resource_monitors:\n" + heapMonitor + "  buffer_factory_config: {minimum_account_to_track_power_of_two: 20}\n")
	s := parse(t, doc)
	if s.Overload.MinimumAccountToTrackPowerOfTwo != 20 {
		t.Errorf("MinimumAccountToTrackPowerOfTwo = %d, want 20", s.Overload.MinimumAccountToTrackPowerOfTwo)
	}
	want := fmt.Sprintf("test.yaml:%d: overload_manager.buffer_factory_config: buffer accounting has no effect without the envoy.overload_actions.reset_high_memory_stream action",
		lineOf(t, doc, "buffer_factory_config"))
	if len(s.Warnings) != 1 || !strings.HasPrefix(s.Warnings[0], want) {
		t.Errorf("warnings %q, want one starting %q", s.Warnings, want)
	}
}

// dump prints an Overload with its pointers followed.
func dump(o *Overload) string {
	if o == nil {
		return "nil"
	}
	s := fmt.Sprintf("{refresh %v max %d power %d monitors", o.RefreshInterval, o.MaxConnections, o.MinimumAccountToTrackPowerOfTwo)
	for _, m := range o.Monitors {
		s += fmt.Sprintf(" %+v", *m)
	}
	for _, a := range o.Actions {
		s += " action " + a.Name
		for _, tr := range a.Triggers {
			s += fmt.Sprintf(" %+v", *tr)
		}
	}
	return s + "}"
}

func TestConnectionLimitAndOverloadErrors(t *testing.T) {
	hcm := "      - name: envoy.filters.network.http_connection_manager"
	cl := "      - name: envoy.filters.network.connection_limit\n        typed_config: {\"@type\": " + connLimitURL + ", stat_prefix: cl, max_connections: 2}\n"
	action := func(name, triggers string) string {
		return "  resource_monitors:\n" + heapMonitor + connsMonitor + "  actions:\n  - name: " + name + "\n    triggers:\n" + triggers
	}
	heapTrigger := "    - name: envoy.resource_monitors.fixed_heap\n      threshold: {value: 0.5}\n"
	actPath := "overload_manager.actions[0]"
	runParseErrors(t, []parseErrorCase{
		{
			name: "connection_limit after the HCM",
			doc:  conf(t, "#CHAIN", "- name: envoy.filters.network.connection_limit\n  typed_config: {\"@type\": "+connLimitURL+", stat_prefix: cl, max_connections: 2}"),
			path: chainPath, msg: `the network filters must be the http_connection_manager, optionally preceded by envoy.filters.network.connection_limit; got ["envoy.filters.network.http_connection_manager" "envoy.filters.network.connection_limit"]`,
			lineAt: "- filters:",
		},
		{
			name: "two connection_limits",
			doc:  conf(t, hcm, cl+cl+hcm),
			path: chainPath, msg: "the network filters must be the http_connection_manager, optionally preceded by", lineAt: "- filters:",
		},
		{
			name: "connection_limit alone",
			doc: `static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
` + cl,
			path: chainPath, msg: `got ["envoy.filters.network.connection_limit"]`, lineAt: "- filters:",
		},
		{
			name: "max_connections 0",
			doc:  withConnectionLimit(t, "stat_prefix: cl, max_connections: 0"),
			path: chainPath + "[0].typed_config.max_connections", msg: "greater than or equal to 1", lineAt: "connection_limit.v3",
		},
		{
			name: "connection_limit runtime_enabled",
			doc:  withConnectionLimit(t, "stat_prefix: cl, max_connections: 1, runtime_enabled: {default_value: true, runtime_key: k}"),
			path: chainPath + "[0].typed_config.runtime_enabled", msg: `field "runtime_enabled" is not supported by switchyard; runtime is not supported`,
		},
		{
			name: "unknown resource monitor",
			doc:  overloadDoc("  resource_monitors:\n  - name: envoy.resource_monitors.injected_resource\n    typed_config: {\"@type\": " + fixedHeapURL + ", max_heap_size_bytes: 1}\n"),
			path: "overload_manager.resource_monitors[0].name", msg: `resource monitor "envoy.resource_monitors.injected_resource" is not supported`,
			lineAt: "injected_resource",
		},
		{
			name: "fixed_heap with the connections config",
			doc:  overloadDoc("  resource_monitors:\n  - name: envoy.resource_monitors.fixed_heap\n    typed_config: {\"@type\": " + dsConnsURL + ", max_active_downstream_connections: 2}\n"),
			path: "overload_manager.resource_monitors[0].typed_config", msg: "needs a typed_config of type envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
		},
		{
			name: "fixed_heap without a size",
			doc:  overloadDoc("  resource_monitors:\n  - name: envoy.resource_monitors.fixed_heap\n    typed_config: {\"@type\": " + fixedHeapURL + "}\n"),
			path: "overload_manager.resource_monitors[0].typed_config.max_heap_size_bytes", msg: "must be greater than 0",
		},
		{
			name: "duplicate monitor",
			doc:  overloadDoc("  resource_monitors:\n" + heapMonitor + heapMonitor),
			path: "overload_manager.resource_monitors[1].name", msg: "Duplicate resource monitor envoy.resource_monitors.fixed_heap",
		},
		{
			name: "reset_high_memory_stream without buffer_factory_config",
			doc:  overloadDoc(action("envoy.overload_actions.reset_high_memory_stream", heapTrigger)),
			path: actPath + ".name", msg: `Overload action "envoy.overload_actions.reset_high_memory_stream" requires buffer_factory_config.`,
			lineAt: "reset_high_memory_stream",
		},
		{
			name: "buffer_factory_config without a power of two",
			doc:  overloadDoc(action(ResetHighMemoryStream, heapTrigger) + "  buffer_factory_config: {}\n"),
			path: "overload_manager.buffer_factory_config.minimum_account_to_track_power_of_two", msg: "value must be inside range [10, 56]",
		},
		{
			name: "minimum_account_to_track_power_of_two below 10",
			doc:  overloadDoc(action(ResetHighMemoryStream, heapTrigger) + "  buffer_factory_config: {minimum_account_to_track_power_of_two: 9}\n"),
			path: "overload_manager.buffer_factory_config.minimum_account_to_track_power_of_two", msg: "value must be inside range [10, 56]",
			lineAt: "minimum_account_to_track_power_of_two",
		},
		{
			name: "minimum_account_to_track_power_of_two above 56",
			doc:  overloadDoc(action(ResetHighMemoryStream, heapTrigger) + "  buffer_factory_config: {minimum_account_to_track_power_of_two: 57}\n"),
			path: "overload_manager.buffer_factory_config.minimum_account_to_track_power_of_two", msg: "value must be inside range [10, 56]",
		},
		{
			name: "reset_high_memory_stream typed_config",
			doc: overloadDoc(action(ResetHighMemoryStream, heapTrigger) + "    typed_config: {\"@type\": type.googleapis.com/envoy.config.overload.v3.ShrinkHeapConfig}\n" +
				"  buffer_factory_config: {minimum_account_to_track_power_of_two: 20}\n"),
			path: actPath + ".typed_config", msg: "stop_accepting_requests, reset_high_memory_stream and shrink_heap take no typed_config",
		},
		{
			name: "unsupported action",
			doc:  overloadDoc(action("envoy.overload_actions.disable_http_keepalive", heapTrigger)),
			path: actPath + ".name", msg: `overload action "envoy.overload_actions.disable_http_keepalive" is not supported by switchyard`,
		},
		{
			name: "duplicate action",
			doc:  overloadDoc(action(StopAcceptingRequests, heapTrigger) + "  - name: " + StopAcceptingRequests + "\n    triggers:\n" + heapTrigger),
			path: "overload_manager.actions[1].name", msg: "Duplicate overload action " + StopAcceptingRequests,
		},
		{
			name: "trigger on an unconfigured monitor",
			doc:  overloadDoc(action(StopAcceptingRequests, "    - name: envoy.resource_monitors.cpu_utilization\n      threshold: {value: 0.5}\n")),
			path: actPath + ".triggers[0].name", msg: "Unknown trigger resource envoy.resource_monitors.cpu_utilization for overload action " + StopAcceptingRequests,
		},
		{
			name: "duplicate trigger",
			doc:  overloadDoc(action(StopAcceptingRequests, heapTrigger+heapTrigger)),
			path: actPath + ".triggers[1].name", msg: "Duplicate trigger resource for overload action",
		},
		{
			name: "scaled thresholds reversed",
			doc:  overloadDoc(action(StopAcceptingRequests, "    - name: envoy.resource_monitors.fixed_heap\n      scaled: {scaling_threshold: 0.9, saturation_threshold: 0.9}\n")),
			path: actPath + ".triggers[0].scaled", msg: "scaling_threshold must be less than saturation_threshold", lineAt: "scaled:",
		},
		{
			name: "trigger without a kind",
			doc:  overloadDoc(action(StopAcceptingRequests, "    - name: envoy.resource_monitors.fixed_heap\n")),
			path: actPath + ".triggers[0].trigger_oneof", msg: "value is required",
		},
		{
			name: "action typed_config",
			doc:  overloadDoc(action(StopAcceptingRequests, heapTrigger) + "    typed_config: {\"@type\": type.googleapis.com/envoy.config.overload.v3.ShrinkHeapConfig}\n"),
			path: actPath + ".typed_config", msg: `field "typed_config" is not supported`,
		},
		{
			name: "loadshed_points",
			doc:  overloadDoc("  resource_monitors:\n" + heapMonitor + "  loadshed_points:\n  - name: envoy.load_shed_points.tcp_listener_accept\n    triggers:\n" + heapTrigger),
			path: "overload_manager.loadshed_points", msg: "load shed points are not supported yet",
		},
		{
			name: "zero refresh interval",
			doc:  overloadDoc("  resource_monitors:\n" + heapMonitor + "  refresh_interval: 0s\n"),
			path: "overload_manager.refresh_interval", msg: "refresh_interval must be greater than 0", lineAt: "refresh_interval",
		},
		{
			name: "listener ignore_global_conn_limit",
			doc:  conf(t, "    filter_chains:", "    ignore_global_conn_limit: true\n    filter_chains:"),
			path: "static_resources.listeners[0].ignore_global_conn_limit", msg: "every listener counts toward global_downstream_max_connections",
		},
	})
}
