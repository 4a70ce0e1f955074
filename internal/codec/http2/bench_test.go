package http2

import (
	"io"
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
	go func() { // the window updates and the answer
		rc.fr.SetReuseFrames()
		for {
			if _, err := rc.fr.ReadFrame(); err != nil {
				return
			}
		}
	}()
	rc.writeHeaders(1, false, request("POST", "/")...)
	p := make([]byte, 16<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if err := rc.fr.WriteData(1, false, p); err != nil {
			b.Fatal(err)
		}
	}
	_ = rc.fr.WriteData(1, true, nil)
	if n := <-got; n != int64(b.N)*int64(len(p)) {
		b.Fatalf("handler read %d bytes", n)
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
	rc.handshake(h2.Setting{ID: h2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = rc.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	go func() {
		rc.fr.SetReuseFrames()
		for {
			if _, err := rc.fr.ReadFrame(); err != nil {
				return
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
