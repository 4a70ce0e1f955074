package tunnel

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// frame builds a WebSocket frame header plus payload of n bytes.
func frame(n int, masked bool) []byte {
	var b []byte
	switch {
	case n < 126:
		b = []byte{0x82, byte(n)}
	case n < 1<<16:
		b = []byte{0x82, 126, 0, 0}
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = make([]byte, 10)
		b[0], b[1] = 0x82, 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	if masked {
		b[1] |= 0x80
		b = append(b, 1, 2, 3, 4)
	}
	return append(b, make([]byte, n)...)
}

func TestFrameTrackerBoundaries(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		var stream []byte
		var ends []int // offsets where a frame ends
		for i := 0; i < 5; i++ {
			n := []int{0, 1, 125, 126, 127, 65535, 65536, 70000}[rng.IntN(8)]
			stream = append(stream, frame(n, rng.IntN(2) == 0)...)
			ends = append(ends, len(stream))
		}
		var tr FrameTracker
		pos := 0
		for pos < len(stream) {
			step := 1 + rng.IntN(9000)
			if rng.IntN(4) == 0 {
				step = 1 + rng.IntN(3) // split headers too
			}
			next := min(pos+step, len(stream))
			tr.Feed(stream[pos:next])
			pos = next
			want := false
			for _, e := range ends {
				if e == pos {
					want = true
				}
			}
			if tr.AtBoundary() != want {
				t.Fatalf("trial %d at %d/%d: AtBoundary = %v, want %v", trial, pos, len(stream), tr.AtBoundary(), want)
			}
		}
	}
}

// TestCloseFrameParses checks that the Close frames we inject are whole frames with the right bits;
// the drain e2e test has a real WebSocket client read one.
func TestCloseFrameParses(t *testing.T) {
	for _, masked := range []bool{false, true} {
		f := CloseFrame(CloseGoingAway, masked)
		var tr FrameTracker
		tr.Feed(f)
		if !tr.AtBoundary() {
			t.Errorf("masked=%v: the close frame is not one whole frame", masked)
		}
		if masked != (f[1]&0x80 != 0) {
			t.Errorf("mask bit wrong")
		}
		if !masked && !bytes.Equal(f, []byte{0x88, 2, 0x03, 0xe9}) {
			t.Errorf("close frame = %x", f)
		}
	}
}
