package bench

import (
	"math"
	"math/bits"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of two, so a recorded
// latency is off by at most 1/32 (3%).
const subBits = 5

// histogram counts latencies in nanoseconds in log-linear buckets, like HdrHistogram: recording is
// an increment, so each worker keeps its own and they are merged at the end.
type histogram struct {
	counts [(64 - subBits + 1) << subBits]uint64
}

func bucketOf(v uint64) int {
	shift := max(0, bits.Len64(v)-subBits-1)
	return shift<<subBits + int(v>>shift)
}

// bucketMid is the middle of bucket i's value range.
func bucketMid(i int) float64 {
	if i < 2<<subBits {
		return float64(i)
	}
	shift := i>>subBits - 1
	low := uint64(i-shift<<subBits) << shift
	return float64(low) + float64(uint64(1)<<shift)/2
}

func (h *histogram) record(ns int64) { h.counts[bucketOf(uint64(max(ns, 0)))]++ }

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// quantile returns the value below which a fraction q of the samples fall, 0 when empty.
func (h *histogram) quantile(q float64) float64 {
	var total uint64
	for _, c := range h.counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total))) // nearest rank
	rank = min(max(rank, 1), total)
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			return bucketMid(i)
		}
	}
	return 0
}
