//go:build linux

package tunnel

import (
	"io"
	"testing"
)

// BenchmarkEngineEcho is one round trip through an engine tunnel: the client writes a message,
// the server reads it and writes it back, the client reads it. The engine's share should be
// 0 allocs/op: the loop reads into its own buffer and writes without blocking.
func BenchmarkEngineEcho(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		b.Run(sizeName(size), func(b *testing.B) {
			client, a := loopbackPair(b)
			bConn, server := loopbackPair(b)
			done := make(chan error, 1)
			tun, err := NewEngine(1).Start(Options{A: a, B: bConn, Moved: func(bool, int) {}, Done: func(why error) { done <- why }})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { tun.Abort(io.EOF); <-done })
			msg, got := make([]byte, size), make([]byte, size)
			b.SetBytes(int64(2 * size))
			b.ReportAllocs()
			for b.Loop() {
				client.Write(msg)
				if _, err := io.ReadFull(server, got); err != nil {
					b.Fatal(err)
				}
				server.Write(got)
				if _, err := io.ReadFull(client, got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
