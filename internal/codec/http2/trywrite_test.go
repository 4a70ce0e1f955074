package http2

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/headers"
)

// tryThenWrite sends payload in chunks as a caller that must not block would: TryWriteData first,
// WriteData for what it refuses. It reports how many chunks each way carried.
func tryThenWrite(s *ServerStream, payload []byte, chunk int) (tried, written int) {
	if s.WriteHeaders(headers.New(":status", "200"), false) != nil {
		return
	}
	for p := payload; len(p) > 0; {
		n := min(len(p), chunk)
		if s.TryWriteData(p[:n]) {
			tried++
		} else {
			if s.WriteData(p[:n], false) != nil {
				return
			}
			written++
		}
		p = p[n:]
	}
	_ = s.WriteData(nil, true)
	return
}

// readBody reads the stream's DATA to END_STREAM, returning the window each frame used as it
// goes (it opens the windows by what it read when grant is set), and checks frame sizes.
func readBody(t *testing.T, rc *rawClient, id uint32, maxFrame int, grant bool) []byte {
	t.Helper()
	var got []byte
	for {
		f := rc.read()
		d, ok := f.(*h2.DataFrame)
		if !ok {
			continue
		}
		if d.StreamID != id {
			t.Fatalf("DATA on stream %d", d.StreamID)
		}
		if len(d.Data()) > maxFrame {
			t.Fatalf("a DATA frame of %d bytes, over the peer's max frame size %d", len(d.Data()), maxFrame)
		}
		got = append(got, d.Data()...)
		if grant && len(d.Data()) > 0 {
			rc.fr.WriteWindowUpdate(0, uint32(len(d.Data())))
			rc.fr.WriteWindowUpdate(id, uint32(len(d.Data())))
		}
		if d.StreamEnded() {
			return got
		}
	}
}

// TryWriteData refuses what the windows do not hold and sends nothing then: a client that opens
// its windows only as it reads gets every byte in order, in frames no larger than it allows, the
// ones TryWriteData took and the ones WriteData sent after a refusal alike.
func TestTryWriteDataHonoursWindows(t *testing.T) {
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	counts := make(chan [2]int, 1)
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		tried, written := tryThenWrite(s, payload, 10_000)
		counts <- [2]int{tried, written}
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake() // the default 64 KiB windows and 16 KiB frames
	rc.writeHeaders(1, true, request("GET", "/")...)
	got := readBody(t, rc, 1, 16384, true)
	if !bytes.Equal(got, payload) {
		t.Fatalf("read %d bytes, not the %d sent in order", len(got), len(payload))
	}
	c := <-counts
	if c[0] == 0 || c[1] == 0 {
		t.Fatalf("TryWriteData took %d chunks, WriteData %d: with 64 KiB windows for 1 MiB both must have", c[0], c[1])
	}
}

// A socket too full for the frames TryWriteData lays out takes part of them; the rest follows
// before anything else, so a client that stops reading and then reads on sees whole frames and
// every byte in order.
func TestTryWriteDataOnAFullSocket(t *testing.T) {
	payload := make([]byte, 32<<20) // more than loopback's socket buffers hold
	rand.Read(payload)
	counts := make(chan [2]int, 1)
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		tried, written := tryThenWrite(s, payload, 32<<10)
		counts <- [2]int{tried, written}
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake(h2.Setting{ID: h2.SettingInitialWindowSize, Val: 1<<31 - 1}, h2.Setting{ID: h2.SettingMaxFrameSize, Val: 1 << 20})
	rc.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	rc.writeHeaders(1, true, request("GET", "/")...)
	time.Sleep(300 * time.Millisecond) // not reading: the socket fills up
	got := readBody(t, rc, 1, 1<<20, false)
	if !bytes.Equal(got, payload) {
		t.Fatalf("read %d bytes, not the %d sent in order", len(got), len(payload))
	}
	if c := <-counts; c[0] == 0 {
		t.Fatalf("TryWriteData took nothing (WriteData %d chunks)", c[1])
	}
}
