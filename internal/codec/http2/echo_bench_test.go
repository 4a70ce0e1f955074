package http2

import (
	"testing"
	"time"

	h2 "golang.org/x/net/http2"
)

// BenchmarkEchoRoundTrip is one DATA frame to a handler that echoes it and the echo read back: the
// per-message cost of a tunnelled stream (an RFC 8441 WebSocket) on a ServerConn, both directions,
// flow control included. The client honours the server's windows and returns its own rarely.
func BenchmarkEchoRoundTrip(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		b.Run(map[int]string{64: "64B", 1024: "1KiB", 16 << 10: "16KiB"}[size], func(b *testing.B) {
			ts := startServer(b, ServerConfig{}, echoHandler)
			rc := dialRaw(b, ts.addr())
			const recvWindow = 1 << 30
			rc.handshake(h2.Setting{ID: h2.SettingInitialWindowSize, Val: recvWindow})
			if err := rc.fr.WriteWindowUpdate(0, recvWindow-65535); err != nil {
				b.Fatal(err)
			}
			rc.writeHeaders(1, false, request("POST", "/")...)
			_ = rc.nc.SetReadDeadline(time.Now().Add(time.Minute))
			rc.fr.SetReuseFrames()

			connWin, streamWin := int64(65535), int64(65535)
			if v, ok := rc.settings[h2.SettingInitialWindowSize]; ok {
				streamWin = int64(v)
			}
			var unacked int64
			// readOne handles one frame and returns the DATA bytes it carried on stream 1.
			readOne := func() int {
				f, err := rc.fr.ReadFrame()
				if err != nil {
					b.Fatal(err)
				}
				switch f := f.(type) {
				case *h2.WindowUpdateFrame:
					if f.StreamID == 0 {
						connWin += int64(f.Increment)
					} else {
						streamWin += int64(f.Increment)
					}
				case *h2.DataFrame:
					if unacked += int64(f.Length); unacked >= recvWindow/2 {
						_ = rc.fr.WriteWindowUpdate(0, uint32(unacked))
						_ = rc.fr.WriteWindowUpdate(1, uint32(unacked))
						unacked = 0
					}
					return len(f.Data())
				case *h2.RSTStreamFrame, *h2.GoAwayFrame:
					b.Fatalf("server ended the stream: %v", f)
				}
				return 0
			}
			p := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				for connWin < int64(size) || streamWin < int64(size) {
					readOne()
				}
				if err := rc.fr.WriteData(1, false, p); err != nil {
					b.Fatal(err)
				}
				connWin -= int64(size)
				streamWin -= int64(size)
				for got := 0; got < size; {
					got += readOne()
				}
			}
		})
	}
}
