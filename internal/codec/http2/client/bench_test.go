package client

import (
	"io"
	"sync"
	"testing"

	"github.com/switchyard-proxy/switchyard/headers"
)

// BenchmarkDataPath sends 16 KiB of request DATA and reads the 16 KiB echoed back, per
// iteration, through a loopback peer: the tunnel's steady state.
func BenchmarkDataPath(b *testing.B) {
	cn, sn := tcpPair(b)
	var wg sync.WaitGroup
	wg.Add(1)
	go echoPeer(sn, &wg)
	cc, err := NewClientConn(cn, Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer wg.Wait()
	defer cc.Close()
	s, err := cc.NewStream(ctxT(b), headers.New(":method", "POST", ":path", "/", ":authority", "a"), false)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Response(ctxT(b)); err != nil {
		b.Fatal(err)
	}
	out := make([]byte, 16<<10)
	in := make([]byte, 16<<10)
	b.SetBytes(int64(len(out)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := s.Write(out, false); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(s, in); err != nil {
			b.Fatal(err)
		}
	}
}
