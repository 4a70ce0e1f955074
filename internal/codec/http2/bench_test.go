package http2

import (
	"io"
	"sync"
	"testing"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/headers"
)

// BenchmarkUpload sends 16 KiB DATA frames on one stream to a handler that reads them: the
// receive path (frame read, stream buffer, window updates). Allocations are per frame.
func BenchmarkUpload(b *testing.B) {
	got := make(chan int64, 1)
	ts := startServer(b, ServerConfig{}, func(s *ServerStream) {
		n, _ := io.Copy(io.Discard, s)
		got <- n
		okHandler(s)
	})
	rc := dialRaw(b, ts.addr())
	rc.handshake()
	// The client keeps to the server's windows, as a real one does.
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	connWin, streamWin := int64(8<<20), int64(1<<20)
	go func() {
		rc.fr.SetReuseFrames()
		for {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				return
			}
			if wu, ok := f.(*h2.WindowUpdateFrame); ok {
				mu.Lock()
				if wu.StreamID == 0 {
					connWin += int64(wu.Increment)
				} else {
					streamWin += int64(wu.Increment)
				}
				cond.Signal()
				mu.Unlock()
			}
		}
	}()
	rc.writeHeaders(1, false, request("POST", "/")...)
	p := make([]byte, 16<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	var sent int64
	for b.Loop() {
		mu.Lock()
		for connWin < int64(len(p)) || streamWin < int64(len(p)) {
			cond.Wait()
		}
		connWin -= int64(len(p))
		streamWin -= int64(len(p))
		mu.Unlock()
		if err := rc.fr.WriteData(1, false, p); err != nil {
			b.Fatal(err)
		}
		sent += int64(len(p))
	}
	_ = rc.fr.WriteData(1, true, nil)
	if n := <-got; n != sent {
		b.Fatalf("handler read %d of %d bytes", n, sent)
	}
}

// BenchmarkDownload has the handler write 16 KiB per WriteData call: the send path (flow
// control, write queue, framing).
func BenchmarkDownload(b *testing.B) {
	start := make(chan *ServerStream, 1)
	done := make(chan struct{})
	ts := startServer(b, ServerConfig{}, func(s *ServerStream) {
		_ = s.WriteHeaders(headers.New(":status", "200"), false)
		start <- s
		<-done
		_ = s.WriteData(nil, true)
	})
	rc := dialRaw(b, ts.addr())
	rc.handshake(h2.Setting{ID: h2.SettingInitialWindowSize, Val: 1 << 30})
	_ = rc.fr.WriteWindowUpdate(0, 1<<30)
	go func() { // a client that returns every DATA byte to both windows at once
		rc.fr.SetReuseFrames()
		for {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				return
			}
			if d, ok := f.(*h2.DataFrame); ok && len(d.Data()) > 0 {
				_ = rc.fr.WriteWindowUpdate(0, uint32(len(d.Data())))
				_ = rc.fr.WriteWindowUpdate(1, uint32(len(d.Data())))
			}
		}
	}()
	rc.writeHeaders(1, true, request("GET", "/")...)
	s := <-start
	p := make([]byte, 16<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.WriteData(p, false); err != nil {
			b.Fatal(err)
		}
	}
	close(done)
}
