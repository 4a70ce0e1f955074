// Package buffer holds the byte buffers that carry bodies and upgrade payload through filters, and
// the pool of read slabs the pumps borrow only while bytes are moving, so an idle stream or tunnel
// holds no copy buffer.
package buffer

import "sync"

// SlabSize is the size of a pooled read slab: large enough for a full TLS record or a typical
// WebSocket burst, small enough that a few thousand active tunnels stay cheap.
const SlabSize = 16 << 10

var slabs = sync.Pool{New: func() any { b := make([]byte, SlabSize); return &b }}

// GetSlab borrows a SlabSize byte slice; give it back with PutSlab as soon as the bytes are written.
func GetSlab() *[]byte { return slabs.Get().(*[]byte) }

// PutSlab returns a slab (or a big slab) to its pool.
func PutSlab(b *[]byte) {
	switch {
	case b == nil:
	case cap(*b) == SlabSize:
		*b = (*b)[:SlabSize]
		slabs.Put(b)
	case cap(*b) == BigSlabSize:
		*b = (*b)[:BigSlabSize]
		bigSlabs.Put(b)
	}
}

// BigSlabSize is the read slab of a pump moving bulk data (its last read filled a slab, or more
// than a slab is waiting): a 64 KiB message in one read and one write instead of four each. Held,
// like a slab, only while the bytes move.
const BigSlabSize = 64 << 10

var bigSlabs = sync.Pool{New: func() any { b := make([]byte, BigSlabSize); return &b }}

// GetBigSlab borrows a BigSlabSize byte slice; give it back with PutSlab.
func GetBigSlab() *[]byte { return bigSlabs.Get().(*[]byte) }

// Buffer is a growable byte buffer handed to filters as DecodeData/EncodeData payload. A filter
// may read, replace or drain it; whatever is left in it after the filter returns Continue is passed
// on. The zero value is empty and ready to use.
type Buffer struct {
	b []byte
}

// Wrap returns a buffer that uses p as its contents without copying. The caller must not reuse p
// until the buffer has been passed on.
func Wrap(p []byte) *Buffer { return &Buffer{b: p} }

// SetBytes makes p the buffer's contents without copying, as Wrap does: a pump reuses one Buffer
// for every message instead of allocating one each (whoever keeps bytes past the call copies them).
func (b *Buffer) SetBytes(p []byte) { b.b = p }

// Len is the number of bytes held.
func (b *Buffer) Len() int {
	if b == nil {
		return 0
	}
	return len(b.b)
}

// Bytes returns the bytes held; valid until the next change.
func (b *Buffer) Bytes() []byte {
	if b == nil {
		return nil
	}
	return b.b
}

// Write appends p, copying it.
func (b *Buffer) Write(p []byte) (int, error) {
	b.b = append(b.b, p...)
	return len(p), nil
}

// Append moves the contents of other to the end of b and empties other.
func (b *Buffer) Append(other *Buffer) {
	if other == nil || len(other.b) == 0 {
		return
	}
	if len(b.b) == 0 {
		b.b = append([]byte(nil), other.b...)
	} else {
		b.b = append(b.b, other.b...)
	}
	other.b = nil
}

// Drain removes the first n bytes.
func (b *Buffer) Drain(n int) {
	if n >= len(b.b) {
		b.b = b.b[:0]
		return
	}
	b.b = b.b[n:]
}

// Reset empties the buffer and lets go of its memory.
func (b *Buffer) Reset() { b.b = nil }

// Own makes sure the buffer's bytes are its own copy, so a Wrap'ed slab can be returned to the pool.
func (b *Buffer) Own() {
	if len(b.b) > 0 {
		b.b = append([]byte(nil), b.b...)
	}
}
