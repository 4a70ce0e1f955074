// Package tunnel has the pieces of the byte pump shared by both sides of a stream: reading only
// when a socket is ready so an idle tunnel holds no copy buffer, and half-closing a connection.
package tunnel

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/internal/rawsys"
)

// SlabReader is one pump's reader of a connection. It never parks holding a buffer, so an idle
// tunnel holds no copy buffer: on a plain socket it reads into a slab borrowed for the call and
// returned if nothing is there (see Read); otherwise it waits for readability with a one-byte
// MSG_PEEK and then reads into a pooled slab. It keeps its raw connection and poller callbacks, so
// a read allocates nothing. Wrappers that expose NetConn() (like *tls.Conn) are looked through:
// for TLS the peek only says a record has started to arrive. Owned by one goroutine.
type SlabReader struct {
	c       net.Conn
	rc      syscall.RawConn // nil: no socket to wait on
	peekErr error
	// poll is the poller callback, one for the three kinds of call (a closure stored per reader
	// costs an allocation, so there is one): op says which this call is.
	poll func(fd uintptr) bool
	op   pollOp

	// The fast path reads the socket directly, skipping the readability check while data streams
	// (that check was a fifth of the proxy's CPU in a profile): only when no TLS sits between c and
	// the socket. Bytes read so are reported to c's ReadCounter, if it has one.
	direct    bool
	counter   ReadCounter
	slab      *[]byte
	n         int
	readErr   error
	again     bool
	readFirst bool // the last read filled its slab: try reading before waiting
}

// pollOp is what a SlabReader's poller callback does this call.
type pollOp uint8

const (
	opPeek     pollOp = iota // peekOnce
	opRead                   // readOnce
	opWaitRead               // waitReadOnce
)

func (r *SlabReader) pollOnce(fd uintptr) bool {
	switch r.op {
	case opRead:
		return r.readOnce(fd)
	case opWaitRead:
		return r.waitReadOnce(fd)
	}
	return r.peekOnce(fd)
}

// ReadCounter is implemented by connection wrappers that count the bytes read through them, so
// a SlabReader that reads the socket underneath still counts.
type ReadCounter interface {
	CountRead(n int)
}

// NewSlabReader prepares reads of c.
func NewSlabReader(c net.Conn) *SlabReader {
	r := &SlabReader{c: c}
	inner := c
	transparent := true // every wrapper passes bytes through unchanged
	for {
		if _, ok := inner.(*tls.Conn); ok {
			transparent = false
		}
		u, ok := inner.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		inner = u.NetConn()
	}
	if sc, ok := inner.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			r.rc = rc
		}
	}
	r.poll = r.pollOnce
	r.direct = r.rc != nil && transparent
	r.counter, _ = c.(ReadCounter)
	return r
}

// readOnce is the fast path's poller callback: one non-blocking read into the slab, never parking
// (a parked read would hold the slab while the tunnel is idle).
func (r *SlabReader) readOnce(fd uintptr) bool {
	for {
		r.n, r.readErr = rawsys.Read(int(fd), *r.slab)
		if r.readErr != syscall.EINTR {
			break
		}
	}
	r.again = r.readErr == syscall.EAGAIN || r.readErr == syscall.EWOULDBLOCK
	return true
}

// waitReadOnce is the direct path's wait: a non-blocking read into a slab borrowed for the call.
// Nothing ready returns the slab and parks the goroutine, so a waiting pump holds no buffer. (A
// buffer on the stack would do the same without the pool, but it grew every connection goroutine's
// stack once — 3% of the CPU of a handshake, copying stacks.)
func (r *SlabReader) waitReadOnce(fd uintptr) bool {
	slab := buffer.GetSlab()
	for {
		n, err := rawsys.Read(int(fd), *slab)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			buffer.PutSlab(slab)
			return false
		case n > 0:
			r.slab = slab
		default:
			buffer.PutSlab(slab)
		}
		r.n, r.readErr, r.again = n, err, false
		return true
	}
}

// peekOnce is the poller callback: false parks the goroutine until the socket is readable.
func (r *SlabReader) peekOnce(fd uintptr) bool {
	var b [1]byte
	_, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case e == syscall.EAGAIN || e == syscall.EWOULDBLOCK || e == syscall.EINTR:
		return false
	case e != nil:
		r.peekErr = e
	}
	return true
}

// Wait blocks until the connection has bytes, EOF or an error to read. It returns the socket
// error, if any, so a reset is seen here.
func (r *SlabReader) Wait() error {
	if r.rc == nil {
		return nil
	}
	r.peekErr, r.op = nil, opPeek
	if err := r.rc.Read(r.poll); err != nil {
		return err
	}
	return r.peekErr
}

// Read waits for the connection to be readable, then reads into a pooled slab. The caller owns
// the slab and returns it with buffer.PutSlab once the n bytes are written out. On error there is
// no slab.
func (r *SlabReader) Read() (*[]byte, int, error) {
	if r.direct {
		// A read that filled the slab suggests more is waiting: read straight away next time, into
		// a big slab (one syscall per 64 KiB while bulk data streams). Otherwise — request/response
		// traffic, an idle tunnel — wait and read in one call, parking with no buffer if nothing
		// is there (a plain read would park holding one): one syscall per message instead of a
		// peek and a read.
		for {
			var err error
			if r.readFirst {
				r.slab = buffer.GetBigSlab()
				r.op = opRead
				err = r.rc.Read(r.poll)
			} else {
				r.slab = nil
				r.op = opWaitRead
				err = r.rc.Read(r.poll)
			}
			slab := r.slab
			r.slab = nil
			switch {
			case err != nil:
				buffer.PutSlab(slab)
				return nil, 0, err
			case r.again:
				buffer.PutSlab(slab)
				r.readFirst = false
				continue
			case r.readErr != nil:
				buffer.PutSlab(slab)
				return nil, 0, r.readErr
			case r.n <= 0:
				buffer.PutSlab(slab)
				return nil, 0, io.EOF
			}
			r.readFirst = r.n == len(*slab)
			if r.counter != nil {
				r.counter.CountRead(r.n)
			}
			runtime.Gosched() // fairness under saturation; see ReadSlabFrom
			return slab, r.n, nil
		}
	}
	if err := r.Wait(); err != nil {
		return nil, 0, err
	}
	return ReadSlabFrom(r.c)
}

// Stream reads the connection until EOF, an error, stop, or handle returning false, passing each
// read's bytes to handle (valid only during the call). Unlike a loop of Reads it stays inside one
// RawConn.Read, which keeps the poller's word on readiness between reads: when the kernel says a
// read left nothing (TCP_INQ, which also counts a FIN not yet read as EOF — a read that merely
// came back short cannot tell, and the poller says nothing new about a FIN already queued), it
// waits for the poller instead of asking the socket again and hearing EAGAIN (a Read starts by
// forgetting what the poller said, so it must ask). That empty read was a fifth of the system
// calls of an HTTP/2 tunnel's round trip. Without the hint it reads until EAGAIN.
//
// handle runs while the socket is held for reading: Close of the connection waits for it, so
// whoever may close the connection while Stream runs must set stop first and close from another
// goroutine (see the router's upstream). Stream returns nil at EOF, net.ErrClosed after stop, and
// false from handle ends it with nil too. Without a socket underneath it falls back to Read.
func (r *SlabReader) Stream(stop *atomic.Bool, handle func(p []byte) bool) error {
	if !r.direct {
		if err := PumpReads(r.Read, func() bool { return !stop.Load() }, handle); err != nil || !stop.Load() {
			return err
		}
		return net.ErrClosed
	}
	var why error
	drained := false // the last read left the socket empty: wait for the poller before the next
	full := false    // the last read filled its slab: read into a big one
	// The hint is turned on at the first bytes, not before: a tunnel the engine is about to take
	// over (most HTTP/1.1 ones) reads nothing here and should not pay a setsockopt for it.
	var q *rawsys.InqReader
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			if stop.Load() {
				why = net.ErrClosed
				return true
			}
			if drained {
				drained = false
				return false
			}
			var slab *[]byte
			if full {
				slab = buffer.GetBigSlab()
			} else {
				slab = buffer.GetSlab()
			}
			var n int
			var err error
			more := true
			if q != nil {
				n, more, err = q.Read(int(fd), *slab)
			} else {
				n, err = rawsys.Read(int(fd), *slab)
			}
			switch {
			case err == syscall.EINTR:
				buffer.PutSlab(slab)
				continue
			case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
				buffer.PutSlab(slab)
				full = false
				return false
			case err != nil:
				buffer.PutSlab(slab)
				why = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
				return true
			case n == 0:
				buffer.PutSlab(slab)
				return true // EOF
			}
			if q == nil {
				q = new(rawsys.InqReader)
				rawsys.EnableInq(int(fd))
			}
			full = n == len(*slab)
			drained = !more
			if r.counter != nil {
				r.counter.CountRead(n)
			}
			ok := handle((*slab)[:n])
			buffer.PutSlab(slab)
			if !ok {
				return true
			}
			if !drained {
				// Fairness under saturation (see ReadSlabFrom). A read that emptied the socket
				// needs none: the next step is a wait in the poller, which yields anyway.
				runtime.Gosched()
			}
		}
	})
	if why != nil {
		return why
	}
	return err
}

// PumpReads passes the slabs read returns to handle (returning each to the pool) while more
// says so, until read fails or handle returns false. It returns nil at io.EOF or when handle
// declined, and read's error otherwise, as Stream does.
func PumpReads(read func() (*[]byte, int, error), more func() bool, handle func(p []byte) bool) error {
	for more() {
		slab, n, err := read()
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		ok := handle((*slab)[:n])
		buffer.PutSlab(slab)
		if !ok {
			return nil
		}
	}
	return nil
}

// WaitReadable is a one-off SlabReader.Wait, for callers without a reader of their own.
func WaitReadable(c net.Conn) error { return NewSlabReader(c).Wait() }

// ReadSlab is a one-off SlabReader.Read. Pumps keep a SlabReader instead: it allocates nothing.
func ReadSlab(c net.Conn) (*[]byte, int, error) { return NewSlabReader(c).Read() }

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
	var slab *[]byte
	if b, ok := r.(interface{ Buffered() int }); ok && b.Buffered() > buffer.SlabSize {
		slab = buffer.GetBigSlab() // an HTTP/2 stream with bulk data waiting: take it at once
	} else {
		slab = buffer.GetSlab()
	}
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
