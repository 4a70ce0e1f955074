package bench

import "testing"

// BenchmarkClientEcho is one round trip against the in-process echo server: the client's framing
// (mask, write, read, compare) allocates nothing per message. The allocations reported for h2 are
// the echo server's (net/http's HTTP/2 frame cache), which runs in the same process.
func BenchmarkClientEcho(b *testing.B) {
	e, err := NewEchoServer("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go e.Serve()
	defer e.Close()
	tgt, err := parseTarget("ws://" + e.Addr() + "/")
	if err != nil {
		b.Fatal(err)
	}
	for _, proto := range []string{"h1", "h2"} {
		b.Run(proto, func(b *testing.B) {
			c, err := newDialer(tgt, proto == "h2", false, 1024).dial()
			if err != nil {
				b.Fatal(err)
			}
			defer c.s.Close()
			msg := make([]byte, 1024)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.echo(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
