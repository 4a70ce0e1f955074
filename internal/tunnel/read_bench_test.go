package tunnel

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/switchyard-proxy/switchyard/buffer"
)

// benchPair is a loopback TCP pair closed at the end of the benchmark.
func benchPair(b *testing.B) (client, server net.Conn) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// BenchmarkReadSlab is the steady-state read path of a tunnel direction: bytes arrive, the pump
// waits for readability, borrows a slab, reads, and returns the slab. "ready" writes the bytes
// before reading (no parking); "parked" has another goroutine write them, so the read usually
// parks in the poller first, as an idle tunnel does. allocs/op should be 0 for both.
func BenchmarkReadSlab(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		b.Run(sizeName(size)+"/ready", func(b *testing.B) {
			client, server := benchPair(b)
			p := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.Write(p); err != nil {
					b.Fatal(err)
				}
				readAll(b, server, size, ReadSlab)
			}
		})
		b.Run(sizeName(size)+"/parked", func(b *testing.B) {
			client, server := benchPair(b)
			p := make([]byte, size)
			next := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range next {
					if _, err := client.Write(p); err != nil {
						return
					}
				}
			}()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				next <- struct{}{}
				readAll(b, server, size, ReadSlab)
			}
			close(next)
			<-done
		})
	}
}

// BenchmarkReadSlabFrom is the plain read into a pooled slab, without the readability wait.
// BenchmarkSlabReader is the pumps' steady state: a reader kept per tunnel side.
func BenchmarkSlabReader(b *testing.B) {
	client, server := benchPair(b)
	r := NewSlabReader(server)
	p := make([]byte, 1024)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Write(p); err != nil {
			b.Fatal(err)
		}
		readAll(b, server, len(p), func(net.Conn) (*[]byte, int, error) { return r.Read() })
	}
}

func BenchmarkReadSlabFrom(b *testing.B) {
	client, server := benchPair(b)
	p := make([]byte, 1024)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Write(p); err != nil {
			b.Fatal(err)
		}
		readAll(b, server, len(p), func(c net.Conn) (*[]byte, int, error) { return ReadSlabFrom(c) })
	}
}

// readAll reads n bytes with read, returning each slab at once.
func readAll(b *testing.B, c net.Conn, n int, read func(net.Conn) (*[]byte, int, error)) {
	for n > 0 {
		slab, m, err := read(c)
		if err != nil {
			if err == io.EOF {
				b.Fatal("unexpected EOF")
			}
			b.Fatal(err)
		}
		buffer.PutSlab(slab)
		n -= m
	}
}

func sizeName(n int) string {
	if n >= 1024 {
		return itoa(n>>10) + "KiB"
	}
	return itoa(n) + "B"
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// BenchmarkSlabReaderStream is the router's upstream pump: one Stream for the whole tunnel, a
// 1 KiB message per iteration, written by another goroutine after the last one was handled (so
// the pump waits for the poller each time, as in request/response traffic). allocs/op is 0: the
// reader's state is allocated once per Stream, not per message.
func BenchmarkSlabReaderStream(b *testing.B) {
	client, server := benchPair(b)
	r := NewSlabReader(server)
	p := make([]byte, 1024)
	got := make(chan struct{}, 1)
	var stop atomic.Bool
	seen := 0
	done := make(chan error, 1)
	go func() {
		done <- r.Stream(&stop, func(q []byte) bool {
			seen += len(q)
			if seen >= len(p) {
				seen -= len(p)
				got <- struct{}{}
			}
			return true
		})
	}()
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Write(p); err != nil {
			b.Fatal(err)
		}
		<-got
	}
	stop.Store(true)
	client.Close()
	if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
		b.Fatal(err)
	}
}
