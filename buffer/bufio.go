package buffer

import (
	"bufio"
	"io"
	"sync"
)

// Connections read their HTTP/1.1 heads through a 16 KiB bufio.Reader and write through a 4 KiB
// bufio.Writer. An upgraded connection gives both up at the switch, so each WebSocket handshake
// would otherwise leave 20 KiB of garbage per side for the collector; pooling them keeps the
// handshake rate from driving the GC.
const (
	ReaderSize = 16 << 10
	WriterSize = 4 << 10
)

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, ReaderSize) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, WriterSize) }}
)

// GetReader returns a pooled ReaderSize reader of r.
func GetReader(r io.Reader) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// PutReader returns br to the pool; any bytes still buffered in it are dropped, so take them first.
// br must not be used afterwards.
func PutReader(br *bufio.Reader) {
	if br != nil && br.Size() == ReaderSize {
		br.Reset(nil)
		readers.Put(br)
	}
}

// GetWriter returns a pooled WriterSize writer to w.
func GetWriter(w io.Writer) *bufio.Writer {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

// PutWriter returns bw to the pool; unflushed bytes are dropped. bw must not be used afterwards.
func PutWriter(bw *bufio.Writer) {
	if bw != nil && bw.Size() == WriterSize {
		bw.Reset(nil)
		writers.Put(bw)
	}
}
