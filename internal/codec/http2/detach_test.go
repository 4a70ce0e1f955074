package http2

import (
	"testing"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/headers"
)

// A detached stream outlives its handler: after the handler has returned it still carries DATA
// both ways and counts as active, and its finish does what the handler's return would have done
// — here, with the response not ended, RST_STREAM(INTERNAL_ERROR) — after which it no longer
// counts.
func TestDetachedStreamOutlivesItsHandler(t *testing.T) {
	returned := make(chan struct{})
	ts := startServer(t, ServerConfig{}, func(s *ServerStream) {
		defer close(returned)
		if s.WriteHeaders(headers.New(":status", "200"), false) != nil {
			return
		}
		finish := s.Detach()
		go func() {
			<-returned
			buf := make([]byte, 64)
			n, err := s.Read(buf)
			if err == nil {
				err = s.WriteData(buf[:n], false)
			}
			if err != nil {
				t.Errorf("after the handler returned: %v", err)
			}
			finish()
		}()
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	rc.writeHeaders(1, false, request("POST", "/")...)
	for {
		if _, ok := rc.read().(*h2.HeadersFrame); ok {
			break
		}
	}
	<-returned
	if n := ts.stat("streams_active"); n != 1 {
		t.Errorf("streams_active = %d with the handler returned and finish not called, want 1", n)
	}
	rc.writeData(1, false, []byte("echo me"))
	for {
		f := rc.read()
		if d, ok := f.(*h2.DataFrame); ok {
			if string(d.Data()) != "echo me" {
				t.Fatalf("DATA %q, want the echo", d.Data())
			}
			break
		}
	}
	if o := rc.waitError(1); !o.isRST || o.rst != h2.ErrCodeInternal {
		t.Errorf("after finish: %+v, want RST_STREAM INTERNAL_ERROR (the response never ended)", o)
	}
	ts.waitStat("streams_active", 0)
}
