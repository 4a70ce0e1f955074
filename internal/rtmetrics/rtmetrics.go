// Package rtmetrics reads byte counts from Go's runtime/metrics for the parts of the proxy that
// report or steer memory (the admin's /memory and server.memory_* gauges, the overload manager's
// heap monitor, the quiet release), so that each names the figures it needs and none repeats the
// sampling.
package rtmetrics

import "runtime/metrics"

// Bytes returns the values of the named runtime/metrics samples, in order: byte counts, 0 for a
// name this Go does not have. It reads them all at one instant (metrics.Read), so figures that
// are summed or subtracted agree with each other.
func Bytes(names ...string) []uint64 {
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	metrics.Read(s)
	out := make([]uint64, len(s))
	for i := range s {
		if s[i].Value.Kind() == metrics.KindUint64 {
			out[i] = s[i].Value.Uint64()
		}
	}
	return out
}
