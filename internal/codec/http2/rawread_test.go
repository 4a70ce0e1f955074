package http2

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"
)

// TestHeaderBlockAcrossReads: the reader of a plain socket processes only what it has whole, so
// a header block whose CONTINUATION frames arrive one TCP write at a time, apart, and that is
// larger than the reader's buffer, is still decoded as one request, and the frames after it too.
func TestHeaderBlockAcrossReads(t *testing.T) {
	ts := startServer(t, ServerConfig{}, okHandler)
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	// About 48 KiB of fields (under the 60 KiB list limit), more than the 32 KiB read buffer.
	var pairs []string
	for i := range 12 {
		pairs = append(pairs, "x-big-"+string(rune('a'+i)), strings.Repeat(string(rune('a'+i)), 4000))
	}
	block := rc.encode(append(request("GET", "/"), pairs...)...)
	const frag = 5000
	if err := rc.fr.WriteHeaders(h2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:frag], EndStream: true}); err != nil {
		t.Fatal(err)
	}
	for off := frag; off < len(block); off += frag {
		time.Sleep(20 * time.Millisecond) // each CONTINUATION in a read of its own
		end := min(off+frag, len(block))
		// Split the frame itself across two writes as well.
		var b []byte
		w := &sliceWriter{b: &b}
		fr := h2.NewFramer(w, nil)
		if err := fr.WriteContinuation(1, end == len(block), block[off:end]); err != nil {
			t.Fatal(err)
		}
		for _, part := range [][]byte{b[:4], b[4:]} {
			if _, err := rc.nc.Write(part); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	rc.writeHeaders(3, true, request("GET", "/second")...)
	statuses := map[uint32]string{}
	for len(statuses) < 2 {
		switch f := rc.read().(type) {
		case *h2.HeadersFrame:
			statuses[f.StreamID] = rc.decode(f).Get(":status")
		case *h2.GoAwayFrame:
			t.Fatalf("GOAWAY %v: %s", f.ErrCode, f.DebugData())
		case *h2.RSTStreamFrame:
			t.Fatalf("RST_STREAM %v on stream %d", f.ErrCode, f.StreamID)
		}
	}
	if statuses[1] != "200" || statuses[3] != "200" {
		t.Fatalf("statuses %v, want 200 for streams 1 and 3", statuses)
	}
}

type sliceWriter struct{ b *[]byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	*w.b = append(*w.b, p...)
	return len(p), nil
}

// TestFINWithLastFrames: a client whose last frames and FIN arrive together is seen to end. The
// poller says nothing new about a FIN that was queued before the read that took the last bytes,
// so a reader that waits after a read merely because it came back short waited forever here
// (until some timeout); the reader waits only when the kernel says nothing is left.
func TestFINWithLastFrames(t *testing.T) {
	ts := startServer(t, ServerConfig{}, okHandler)
	for i := range 5 {
		rc := dialRaw(t, ts.addr())
		rc.handshake()
		time.Sleep(50 * time.Millisecond) // the server has read everything and waits
		var b []byte
		fr := h2.NewFramer(&sliceWriter{b: &b}, nil)
		if err := fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := rc.nc.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := rc.nc.(*net.TCPConn).CloseWrite(); err != nil { // the FIN right behind the PING
			t.Fatal(err)
		}
		select {
		case err := <-ts.errs:
			if err != nil && !errors.Is(err, io.EOF) {
				t.Logf("connection %d ended with %v", i, err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("connection %d: the server did not see the client's FIN that came with its last frame", i)
		}
	}
}
