package tunnel

import (
	"crypto/rand"
	"encoding/binary"
)

// CloseGoingAway is the WebSocket close code a proxy sends when it shuts down (RFC 6455 §7.4.1).
const CloseGoingAway = 1001

// FrameTracker follows RFC 6455 frame boundaries in one direction of a WebSocket tunnel from the
// frame headers alone — payload bytes are counted, never copied — so the proxy can add a Close
// frame without cutting a frame in two. The zero value is at a boundary. It is owned by whoever
// writes that direction.
type FrameTracker struct {
	remaining uint64   // payload bytes of the current frame still to pass
	hdr       [14]byte // a header split across writes
	n         uint8    // bytes of hdr filled (uint8: an idle tunnel's record stays small)
}

// Feed accounts for p, the next bytes of the stream.
func (t *FrameTracker) Feed(p []byte) {
	for len(p) > 0 {
		if t.remaining > 0 {
			k := min(t.remaining, uint64(len(p)))
			t.remaining -= k
			p = p[k:]
			continue
		}
		// A header, perhaps split across writes: its length is known after two bytes.
		want := 2
		if t.n >= 2 {
			want = headerLen(t.hdr[:t.n])
		}
		k := copy(t.hdr[t.n:want], p)
		t.n += uint8(k)
		p = p[k:]
		if t.n >= 2 && int(t.n) == headerLen(t.hdr[:t.n]) {
			t.remaining = payloadLen(t.hdr[:t.n])
			t.n = 0
		}
	}
}

// PayloadLeft is how many payload bytes of the current frame are still to come once its header
// has passed: the bytes a pump may move without looking at them (splice) and stay in step.
func (t *FrameTracker) PayloadLeft() uint64 {
	if t.n != 0 {
		return 0
	}
	return t.remaining
}

// Skip accounts for n payload bytes moved without being seen; n must not exceed PayloadLeft.
func (t *FrameTracker) Skip(n uint64) { t.remaining -= n }

// AtBoundary reports whether the bytes fed so far end exactly at the end of a frame.
func (t *FrameTracker) AtBoundary() bool { return t.remaining == 0 && t.n == 0 }

// headerLen is the length of the frame header that starts with h, or 0 if h is too short to say.
func headerLen(h []byte) int {
	if len(h) < 2 {
		return 0
	}
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h[1]&0x80 != 0 {
		n += 4 // masking key
	}
	return n
}

func payloadLen(h []byte) uint64 {
	switch l := h[1] & 0x7f; l {
	case 126:
		return uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		return binary.BigEndian.Uint64(h[2:10])
	default:
		return uint64(l)
	}
}

// CloseFrame returns a Close frame with code and no reason. Frames toward a server must be masked
// (RFC 6455 §5.3); frames toward a client must not be.
func CloseFrame(code uint16, masked bool) []byte {
	payload := []byte{byte(code >> 8), byte(code)}
	if !masked {
		return append([]byte{0x88, byte(len(payload))}, payload...)
	}
	var key [4]byte
	rand.Read(key[:])
	f := append([]byte{0x88, 0x80 | byte(len(payload))}, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}
