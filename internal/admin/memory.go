package admin

import (
	"bytes"
	"encoding/json"
	"net/http"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/switchyard-proxy/switchyard/internal/rtmetrics"
)

// Envoy reports its allocator's figures in /memory and in the server.memory_* gauges; these are
// Go's runtime figures under the same names, so the dashboards and alerts written for Envoy read
// Switchyard's memory as they read Envoy's:
//
//   - allocated (server.memory_allocated): bytes in heap objects, live ones and the garbage the
//     collector has not swept yet (Go frees only when it collects; tcmalloc at once).
//   - heap_size (server.memory_heap_size): every byte of heap the runtime has reserved.
//   - pageheap_free: heap pages free and still mapped; pageheap_unmapped: those given back to the
//     system.
//   - total_thread_cache: 0; Go's per-processor caches are not measured apart.
//   - total_physical_bytes (server.memory_physical_size): all memory the runtime has mapped and
//     not given back — heap, stacks and the runtime's own — the figure Go's memory limit counts.
var memorySamples = [...]string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/total:bytes",
}

// readMemory returns Envoy's Memory message filled from runtime/metrics.
func readMemory() *adminv3.Memory {
	v := rtmetrics.Bytes(memorySamples[:]...)
	objects, unused, free, released, total := v[0], v[1], v[2], v[3], v[4]
	return &adminv3.Memory{
		Allocated:          objects,
		HeapSize:           objects + unused + free + released,
		PageheapFree:       free,
		PageheapUnmapped:   released,
		TotalPhysicalBytes: total - min(total, released),
	}
}

// updateMemory sets the server.memory_* gauges.
func (s *Server) updateMemory() {
	m := readMemory()
	s.memAllocated.Set(int64(m.Allocated))
	s.memHeapSize.Set(int64(m.HeapSize))
	s.memPhysical.Set(int64(m.TotalPhysicalBytes))
}

// handleMemory is Envoy's /memory: the Memory message as proto JSON (uint64 as strings).
func (s *Server) handleMemory(w http.ResponseWriter, _ *http.Request) {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(readMemory())
	var out bytes.Buffer
	if err == nil {
		err = json.Indent(&out, b, "", "  ") // protojson varies its spacing on purpose; this does not
	}
	if err != nil {
		reply(w, http.StatusInternalServerError, contentText, err.Error()+"\n")
		return
	}
	reply(w, http.StatusOK, contentJSON, out.String()+"\n")
}
