package admin

import (
	"encoding/json"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// memoryFigures reads /memory as a client would: Envoy's six fields, uint64 as decimal strings.
func memoryFigures(t *testing.T, s *Server) map[string]uint64 {
	t.Helper()
	r := do(t, s, "GET", "/memory")
	if r.code != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("/memory = %d %q: %s", r.code, r.header.Get("Content-Type"), r.body)
	}
	var raw map[string]string
	if err := json.Unmarshal([]byte(r.body), &raw); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	got := map[string]uint64{}
	for _, k := range []string{"allocated", "heap_size", "pageheap_unmapped", "pageheap_free", "total_thread_cache", "total_physical_bytes"} {
		v, ok := raw[k]
		if !ok {
			t.Fatalf("/memory lacks %q: %s", k, r.body)
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("/memory %s = %q, want a uint64 as proto JSON writes it", k, v)
		}
		got[k] = n
	}
	return got
}

// TestMemory: /memory and the server.memory_* gauges say what the heap holds — allocating 64 MiB
// that stays live shows in allocated, heap_size and the physical size — and the figures are
// consistent with each other.
func TestMemory(t *testing.T) {
	s := start(t, Options{})
	runtime.GC()
	before := memoryFigures(t, s)
	held := make([][]byte, 64)
	for i := range held {
		held[i] = make([]byte, 1<<20)
		held[i][0] = 1
	}
	after := memoryFigures(t, s)
	for _, k := range []string{"allocated", "heap_size", "total_physical_bytes"} {
		if after[k] < before[k]+60<<20 {
			t.Errorf("%s %d -> %d with 64 MiB more held", k, before[k], after[k])
		}
	}
	if m := after; m["allocated"] > m["heap_size"] || m["pageheap_free"]+m["pageheap_unmapped"] > m["heap_size"] {
		t.Errorf("inconsistent: %v", m)
	}
	st := do(t, s, "GET", "/stats?filter=server.memory").body
	for _, name := range []string{"server.memory_allocated: ", "server.memory_heap_size: ", "server.memory_physical_size: "} {
		i := strings.Index(st, name)
		if i < 0 {
			t.Fatalf("/stats lacks %s:\n%s", name, st)
		}
		v, _ := strconv.ParseUint(strings.Fields(st[i+len(name):])[0], 10, 64)
		if v < 64<<20 {
			t.Errorf("%s%d, want at least the 64 MiB held", name, v)
		}
	}
	runtime.KeepAlive(held)
}
