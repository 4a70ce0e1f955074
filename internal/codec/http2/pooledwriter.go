package http2

import (
	"bufio"
	"io"
	"sync"
)

// writeBufSize is the buffered writer's size: a full DATA frame and its header, and the small
// frames written with it, go out in one write.
const writeBufSize = 16 << 10

var writeBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufSize) }}

// PooledWriter is a connection's buffered socket writer that holds a buffer only between a write
// and the flush that empties it, so an idle connection holds none (a 16 KiB buffer per connection
// was a third of what an idle WebSocket over HTTP/2 cost). Owned by whoever holds the connection's
// write side, like the bufio.Writer it stands for.
type PooledWriter struct {
	dst io.Writer
	bw  *bufio.Writer // nil while nothing is buffered
}

// NewPooledWriter returns a writer to dst that takes its buffer on the first write.
func NewPooledWriter(dst io.Writer) *PooledWriter { return &PooledWriter{dst: dst} }

func (w *PooledWriter) Write(p []byte) (int, error) {
	if w.bw == nil {
		w.bw = writeBufs.Get().(*bufio.Writer)
		w.bw.Reset(w.dst)
	}
	return w.bw.Write(p)
}

// WriteString is Write for a string, as bufio.Writer has it.
func (w *PooledWriter) WriteString(s string) (int, error) {
	if w.bw == nil {
		w.bw = writeBufs.Get().(*bufio.Writer)
		w.bw.Reset(w.dst)
	}
	return w.bw.WriteString(s)
}

// Flush writes what is buffered; once nothing is left the buffer goes back to the pool. After an
// error the bytes stay buffered, as in bufio.Writer (the connection is failing anyway).
func (w *PooledWriter) Flush() error {
	if w.bw == nil {
		return nil
	}
	err := w.bw.Flush()
	if w.bw.Buffered() == 0 {
		w.bw.Reset(nil)
		writeBufs.Put(w.bw)
		w.bw = nil
	}
	return err
}

// Buffered is the number of bytes written and not yet flushed.
func (w *PooledWriter) Buffered() int {
	if w.bw == nil {
		return 0
	}
	return w.bw.Buffered()
}
