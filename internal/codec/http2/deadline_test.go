package http2

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestWriteDeadlineFailsAStalledWrite: a peer that stops reading makes a write fail within
// Timeout (and not before Timeout/2), even though the deadline is not moved before every write.
func TestWriteDeadlineFailsAStalledWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := ln.Accept() // never reads
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()

	d := &WriteDeadline{Timeout: 400 * time.Millisecond}
	chunk := make([]byte, 64<<10)
	start := time.Now()
	for {
		if err := d.Extend(c); err != nil {
			t.Fatal(err)
		}
		if _, err = c.Write(chunk); err != nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("writes to a peer that does not read never failed")
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write error %v, want a deadline", err)
	}
	// The stall began once the socket buffers were full, after the first deadline was set.
	if took := time.Since(start); took < d.Timeout/2 {
		t.Errorf("the stalled write failed after %v, before Timeout/2", took)
	}
}
