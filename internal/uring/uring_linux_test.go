//go:build linux

package uring

import (
	"bytes"
	"net"
	"syscall"
	"testing"
	"unsafe"
)

// tcpPairs opens n loopback TCP connections and returns both ends' descriptors, non-blocking.
func tcpPairs(tb testing.TB, n int) (a, b []int) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			tb.Fatal(err)
		}
		a = append(a, rawFD(tb, c))
		b = append(b, rawFD(tb, s))
	}
	tb.Cleanup(func() {
		for i := range a {
			syscall.Close(a[i])
			syscall.Close(b[i])
		}
	})
	return a, b
}

// rawFD takes a duplicate of c's descriptor out of Go's poller (closing c).
func rawFD(tb testing.TB, c net.Conn) int {
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		tb.Fatal(err)
	}
	c.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		tb.Fatal(err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		tb.Fatal(err)
	}
	return fd
}

func newRing(tb testing.TB, n int) *Ring {
	tb.Helper()
	r, err := New(n)
	if err != nil {
		tb.Skipf("io_uring is not available here: %v", err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

func TestSendRecvBatch(t *testing.T) {
	const n = 8
	a, b := tcpPairs(t, n)
	r := newRing(t, 16)
	msgs := make([][]byte, n)
	for i := range n {
		msgs[i] = bytes.Repeat([]byte{byte('a' + i)}, 100+i)
		if err := r.Send(a[i], msgs[i], uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	sent := make([]int32, n)
	if err := r.Submit(sent); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if sent[i] != int32(len(msgs[i])) {
			t.Fatalf("send %d: result %d, want %d", i, sent[uint64(i)], len(msgs[i]))
		}
	}
	bufs := make([][]byte, n)
	for i := range n {
		bufs[i] = make([]byte, 512)
		r.Recv(b[i], bufs[i], uint64(n+i))
	}
	got := make([]int32, 2*n)
	if err := r.Submit(got); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		res := got[n+i]
		if res != int32(len(msgs[i])) || !bytes.Equal(bufs[i][:res], msgs[i]) {
			t.Fatalf("recv %d: %d bytes %q, want %q", i, res, bufs[i][:max(res, 0)], msgs[i])
		}
	}
}

// An empty socket answers EAGAIN at once: no operation stays in the kernel holding a buffer.
func TestRecvEmptyIsEAGAIN(t *testing.T) {
	_, b := tcpPairs(t, 1)
	r := newRing(t, 4)
	buf := make([]byte, 64)
	r.Recv(b[0], buf, 7)
	res := make([]int32, 8)
	if err := r.Submit(res); err != nil {
		t.Fatal(err)
	}
	if res[7] != -int32(syscall.EAGAIN) {
		t.Fatalf("result %d, want -EAGAIN (%d)", res[7], -int32(syscall.EAGAIN))
	}
}

// A full socket takes what fits and says so; the next send says EAGAIN.
func TestSendFullIsShortThenEAGAIN(t *testing.T) {
	a, _ := tcpPairs(t, 1)
	r := newRing(t, 4)
	big := make([]byte, 64<<20)
	res := make([]int32, 3)
	for i := range 3 {
		r.Send(a[0], big, uint64(i))
		if err := r.Submit(res); err != nil {
			t.Fatal(err)
		}
	}
	if res[0] <= 0 || res[0] >= int32(len(big)) {
		t.Fatalf("first send into a fresh socket: %d, want a short count", res[0])
	}
	if res[2] != -int32(syscall.EAGAIN) {
		t.Fatalf("send into a full socket: %d, want -EAGAIN", res[2])
	}
}

func TestBatchFull(t *testing.T) {
	r := newRing(t, 2)
	buf := make([]byte, 1)
	for i := range r.Size() {
		if err := r.Recv(0, buf, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Recv(0, buf, 9); err != ErrFull {
		t.Fatalf("queue past the ring's size: %v, want ErrFull", err)
	}
	res := make([]int32, r.Size())
	for i := range res {
		res[i] = 1
	}
	if err := r.Submit(res); err != nil {
		t.Fatal(err)
	}
	for i, v := range res {
		if v != -int32(syscall.EBADF) && v != -int32(syscall.ENOTSOCK) {
			t.Fatalf("recv %d from stdin: %d, want an error", i, v)
		}
	}
}

// BenchmarkRelay moves one 1 KiB message over each of 64 connections per op: sent on one end,
// received on the other, by single system calls or by two ring batches.
func BenchmarkRelay(b *testing.B) {
	const conns = 64
	msg := make([]byte, 1024)
	bufs := make([][]byte, conns)
	for i := range bufs {
		bufs[i] = make([]byte, 16<<10)
	}
	b.Run("syscalls", func(b *testing.B) {
		a, z := tcpPairs(b, conns)
		for b.Loop() {
			for i := range conns {
				if n, err := syscall.Write(a[i], msg); n != len(msg) {
					b.Fatal(n, err)
				}
			}
			for i := range conns {
				if n, err := syscall.Read(z[i], bufs[i]); n != len(msg) {
					b.Fatal(n, err)
				}
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		a, z := tcpPairs(b, conns)
		for b.Loop() {
			for i := range conns {
				if n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(a[i]), uintptr(unsafe.Pointer(&msg[0])), uintptr(len(msg))); int(n) != len(msg) {
					b.Fatal(n, e)
				}
			}
			for i := range conns {
				if n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(z[i]), uintptr(unsafe.Pointer(&bufs[i][0])), uintptr(len(bufs[i]))); int(n) != len(msg) {
					b.Fatal(n, e)
				}
			}
		}
	})
	b.Run("uring", func(b *testing.B) {
		a, z := tcpPairs(b, conns)
		r := newRing(b, conns)
		res := make([]int32, conns)
		check := func() {
			for _, v := range res {
				if v != int32(len(msg)) {
					b.Fatal(v)
				}
			}
		}
		for b.Loop() {
			for i := range conns {
				r.Send(a[i], msg, uint64(i))
			}
			r.Submit(res)
			check()
			for i := range conns {
				r.Recv(z[i], bufs[i], uint64(i))
			}
			r.Submit(res)
			check()
		}
	})
}
