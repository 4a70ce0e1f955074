// Package tunnel has the pieces of the byte pump shared by both sides of a stream: reading only
// when a socket is ready so an idle tunnel holds no copy buffer, and half-closing a connection.
package tunnel

import (
	"errors"
	"io"
	"net"
	"runtime"
	"syscall"

	"github.com/switchyard-proxy/switchyard/buffer"
)

// WaitReadable blocks until c has bytes (or EOF, or an error) to read, without taking any buffer:
// it peeks one byte with MSG_PEEK into the stack. Connections that are not plain sockets return at
// once. Wrappers that expose NetConn() (like *tls.Conn) are looked through: for TLS this only
// says that a record has started to arrive. It returns the socket error, if any, so a reset is seen here.
func WaitReadable(c net.Conn) error {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var peekErr error
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if e == syscall.EAGAIN || e == syscall.EWOULDBLOCK {
			return false // not ready: park in the poller
		}
		if e == syscall.EINTR {
			return false
		}
		if e != nil {
			peekErr = e
		}
		return true
	})
	if err != nil {
		return err
	}
	return peekErr
}

// ReadSlab waits for c to be readable, then reads into a pooled slab. The caller owns the slab and
// must return it with buffer.PutSlab once the n bytes are written out. On error the slab is
// already returned.
func ReadSlab(c net.Conn) (*[]byte, int, error) {
	if err := WaitReadable(c); err != nil {
		return nil, 0, err
	}
	return ReadSlabFrom(c)
}

// ReadSlabFrom reads from r (a body reader, an HTTP/2 stream) into a pooled slab, with ReadSlab's
// contract: n > 0 with a nil error, or no slab and an error (io.EOF at the end).
func ReadSlabFrom(r io.Reader) (*[]byte, int, error) {
	if w, ok := r.(interface{ WaitReadable() }); ok {
		w.WaitReadable() // an HTTP/2 stream: no slab while it is idle
	}
	// A pump whose peer always has bytes ready never parks, and Go preempts a running goroutine
	// only after 10 ms: with the CPU saturated, a hundred busy tunnels made a quiet tunnel and the
	// admin endpoint wait seconds. Yielding once per slab bounds the wait to one slab per pump.
	runtime.Gosched()
	slab := buffer.GetSlab()
	n, err := r.Read(*slab)
	if n == 0 {
		buffer.PutSlab(slab)
		if err == nil {
			err = io.ErrNoProgress
		}
		return nil, 0, err
	}
	return slab, n, nil
}

// CloseWrite half-closes c when it can (TCP FIN), so the peer sees end of stream while the other
// direction keeps flowing. It reports whether it could.
func CloseWrite(c net.Conn) bool {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite() == nil
	}
	return false
}

// IsReset reports whether err means the peer reset or the connection was torn down, as opposed to
// a clean end of stream.
func IsReset(err error) bool {
	return err != nil && !errors.Is(err, io.EOF)
}
