package rtmetrics

import (
	"runtime"
	"testing"
)

// TestBytes: the values come in the order asked, a live allocation shows in the heap's objects,
// and a name Go does not have reads 0 rather than failing.
func TestBytes(t *testing.T) {
	runtime.GC()
	before := Bytes("/memory/classes/heap/objects:bytes", "/no/such/metric:bytes")
	keep := make([]byte, 32<<20)
	after := Bytes("/no/such/metric:bytes", "/memory/classes/heap/objects:bytes")
	runtime.KeepAlive(keep)
	if before[1] != 0 || after[0] != 0 {
		t.Fatalf("an unknown name read %d and %d, want 0", before[1], after[0])
	}
	if after[1] < before[0]+32<<20 {
		t.Fatalf("heap objects %d → %d bytes with 32 MiB held, want at least 32 MiB more", before[0], after[1])
	}
}
