package http2

import (
	"bytes"
	"syscall"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/headers"
)

// The tunnel engine's send, as BeginData and EndData frame it: the handler stands in for the
// engine, sending the frame itself on the descriptor BeginData gives. A whole send, a send the
// socket took in part (the codec sends the rest before anything else) and a send that found the
// socket full (nothing taken: the windows are given back and WriteData sends the bytes instead)
// all reach the client as whole DATA frames, in order.
func TestBeginEndData(t *testing.T) {
	payloads := [][]byte{[]byte("whole frame"), []byte("a frame sent in two parts"), []byte("refused, then written")}
	results := make(chan []bool, 1)
	headed := make(chan struct{})
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		if s.WriteHeaders(headers.New(":status", "200"), false) != nil {
			return
		}
		<-headed // the HEADERS are out: nothing is queued
		var taken []bool
		for i, p := range payloads {
			frame := make([]byte, 9+len(p))
			fd, ok := soon(func() (int, bool) { return s.BeginData(len(p), frame[:9]) })
			if !ok {
				t.Errorf("payload %d: BeginData refused", i)
				return
			}
			copy(frame[9:], p)
			var res int32
			switch i {
			case 0:
				n, _ := syscall.Write(fd, frame)
				res = int32(n)
			case 1:
				n, _ := syscall.Write(fd, frame[:5])
				res = int32(n)
			case 2:
				res = -int32(syscall.EAGAIN) // as a full socket would answer
			}
			ok = s.EndData(frame, res)
			taken = append(taken, ok)
			if !ok && s.WriteData(p, false) != nil {
				return
			}
		}
		s.WriteData(nil, true)
		results <- taken
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	rc.writeHeaders(1, true, request("GET", "/")...)
	awaitHeaders(rc)
	close(headed)
	var frames [][]byte
	for {
		f := rc.read()
		if d, ok := f.(*h2.DataFrame); ok {
			if len(d.Data()) > 0 {
				frames = append(frames, bytes.Clone(d.Data()))
			}
			if d.StreamEnded() {
				break
			}
		}
	}
	if len(frames) != len(payloads) {
		t.Fatalf("%d DATA frames with payload, want %d: %q", len(frames), len(payloads), frames)
	}
	for i := range payloads {
		if !bytes.Equal(frames[i], payloads[i]) {
			t.Fatalf("frame %d carried %q, want %q", i, frames[i], payloads[i])
		}
	}
	if got := <-results; !got[0] || !got[1] || got[2] {
		t.Fatalf("EndData reported taken %v, want [true true false]", got)
	}
}

// BeginData refuses what would need a wait, holding nothing: a payload beyond the peer's frame
// size or the window, and a second send while the first holds the socket.
func TestBeginDataRefuses(t *testing.T) {
	done := make(chan struct{})
	headed := make(chan struct{})
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		defer close(done)
		if s.WriteHeaders(headers.New(":status", "200"), false) != nil {
			return
		}
		<-headed
		hdr := make([]byte, 9)
		if _, ok := s.BeginData(16385, hdr); ok {
			t.Error("BeginData took a payload over the 16 KiB frame size")
		}
		if _, ok := soon(func() (int, bool) { return s.BeginData(10, hdr) }); !ok {
			t.Error("BeginData refused a small payload")
			return
		}
		if _, ok := s.BeginData(10, hdr); ok {
			t.Error("BeginData took a second send while the first held the socket")
		}
		if s.TryWriteData([]byte("x")) {
			t.Error("TryWriteData wrote while a send held the socket")
		}
		s.EndData(append(hdr, make([]byte, 10)...), -int32(syscall.EAGAIN))
		if _, ok := soon(func() (int, bool) { return 0, s.TryWriteData([]byte("x")) }); !ok {
			t.Error("TryWriteData refused once the send was settled")
		}
		s.WriteData(nil, true)
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	rc.writeHeaders(1, true, request("GET", "/")...)
	awaitHeaders(rc)
	close(headed)
	<-done
}

// soon retries try for up to a second: the connection's own writes (the writer flushing what it
// queued, the rest of a cut send) hold the socket for a moment, and a try meanwhile is refused.
func soon(try func() (int, bool)) (int, bool) {
	for range 1000 {
		if fd, ok := try(); ok {
			return fd, true
		}
		time.Sleep(time.Millisecond)
	}
	return -1, false
}

// awaitHeaders reads frames until the response's HEADERS.
func awaitHeaders(rc *rawClient) {
	for {
		if _, ok := rc.read().(*h2.HeadersFrame); ok {
			return
		}
	}
}
