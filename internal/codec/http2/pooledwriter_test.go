package http2

import (
	"bytes"
	"errors"
	"testing"
)

// failingWriter fails every write after the first ok bytes.
type failingWriter struct {
	out bytes.Buffer
	ok  int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.out.Len()+len(p) > w.ok {
		return 0, errors.New("broken pipe")
	}
	return w.out.Write(p)
}

// Bytes arrive whole and in order across flushes that each give the buffer back; a flush of
// nothing writes nothing.
func TestPooledWriterFlushes(t *testing.T) {
	var out bytes.Buffer
	w := NewPooledWriter(&out)
	if err := w.Flush(); err != nil || out.Len() != 0 {
		t.Fatalf("empty flush: %v, %d bytes written", err, out.Len())
	}
	var want bytes.Buffer
	for i := range 5 {
		chunk := bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1))
		w.Write(chunk)
		w.WriteString("|")
		want.Write(chunk)
		want.WriteString("|")
		if w.Buffered() != len(chunk)+1 {
			t.Fatalf("Buffered = %d after writing %d", w.Buffered(), len(chunk)+1)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if w.Buffered() != 0 || w.bw != nil {
			t.Fatalf("after a flush that emptied it the writer still holds a buffer (%d bytes)", w.Buffered())
		}
	}
	if !bytes.Equal(out.Bytes(), want.Bytes()) {
		t.Fatalf("wrote %d bytes, not the %d written to it in order", out.Len(), want.Len())
	}
	// More than the buffer holds goes through in one piece too.
	big := bytes.Repeat([]byte("z"), 3*writeBufSize+7)
	out.Reset()
	w.Write(big)
	w.Flush()
	if !bytes.Equal(out.Bytes(), big) {
		t.Fatalf("a %d-byte write came out as %d bytes", len(big), out.Len())
	}
}

// A failed flush reports the error and keeps the bytes it could not write.
func TestPooledWriterFailedFlushKeepsBytes(t *testing.T) {
	dst := &failingWriter{ok: 0}
	w := NewPooledWriter(dst)
	w.WriteString("hello")
	if err := w.Flush(); err == nil {
		t.Fatal("flush to a failing writer succeeded")
	}
	if w.Buffered() != 5 {
		t.Fatalf("Buffered = %d after the failed flush, want the 5 bytes kept", w.Buffered())
	}
}
