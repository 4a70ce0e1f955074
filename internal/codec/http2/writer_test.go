package http2

import (
	"bytes"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/headers"
)

// TestLargeDataFrames: a stream writing a large chunk while the connection is idle frames it
// itself in one vectored write: the client sees frames within its MAX_FRAME_SIZE, every byte in
// order, and END_STREAM on the last frame only.
func TestLargeDataFrames(t *testing.T) {
	body := make([]byte, 3*16384+5000)
	for i := range body {
		body[i] = byte(i * 7)
	}
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		if err := s.WriteHeaders(headers.New(":status", "200"), false); err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond) // the HEADERS are out: the DATA goes out directly
		_ = s.WriteData(body[:len(body)-1000], false)
		_ = s.WriteData(body[len(body)-1000:], true)
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake(h2.Setting{ID: h2.SettingInitialWindowSize, Val: 1 << 20})
	if err := rc.fr.WriteWindowUpdate(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	rc.writeHeaders(1, true, request("GET", "/")...)
	var got []byte
	var sizes []int
	for ended := false; !ended; {
		switch f := rc.read().(type) {
		case *h2.DataFrame:
			if len(f.Data()) > 16384 {
				t.Fatalf("DATA frame of %d bytes, over the default MAX_FRAME_SIZE", len(f.Data()))
			}
			got = append(got, f.Data()...)
			sizes = append(sizes, len(f.Data()))
			ended = f.StreamEnded()
			if ended && len(got) != len(body) {
				t.Fatalf("END_STREAM after %d of %d bytes (frames %v)", len(got), len(body), sizes)
			}
		case *h2.GoAwayFrame, *h2.RSTStreamFrame:
			t.Fatalf("got %v", f)
		}
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("body differs (frames %v)", sizes)
	}
	want := []int{16384, 16384, 16384, 4000, 1000}
	if len(sizes) != len(want) {
		t.Fatalf("frame sizes %v, want %v", sizes, want)
	}
	for i := range want {
		if sizes[i] != want[i] {
			t.Fatalf("frame sizes %v, want %v", sizes, want)
		}
	}
}
