package rawsys

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Socket returns the raw descriptor access of c's TCP socket when bytes written to c go to the
// socket unchanged: c is a *net.TCPConn, or wraps one (NetConn) with no TLS in between. Otherwise
// nil.
func Socket(c net.Conn) syscall.RawConn {
	for {
		if _, ok := c.(*tls.Conn); ok {
			return nil
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// ConnReader reads from a connection's socket with this package's Read, waiting for bytes through
// Go's poller (so the connection's read deadline holds): net.Conn's Read announces its system
// call to the scheduler, and a read that does TCP work on loopback is long enough for that to
// cost a thread hand-off (see the package comment). Bytes read are reported to the connection's
// CountRead, if it has one, as its own Read would count them. It allocates nothing per read. Safe
// for concurrent use, like a net.Conn (reads are serialized).
type ConnReader struct {
	mu      sync.Mutex
	rc      syscall.RawConn
	counter interface{ CountRead(n int) }
	p       []byte
	n       int
	err     error
	read    func(fd uintptr) bool
}

// NewConnReader returns a reader for c's socket, or nil when Socket(c) is nil: read from c then.
func NewConnReader(c net.Conn) *ConnReader {
	rc := Socket(c)
	if rc == nil {
		return nil
	}
	r := &ConnReader{}
	r.init(c, rc)
	return r
}

func (r *ConnReader) init(c net.Conn, rc syscall.RawConn) {
	r.rc = rc
	r.counter, _ = c.(interface{ CountRead(n int) })
	r.read = r.readOnce
}

// NewConnPair returns NewConnReader(c) and NewConnWriter(c) made together, with one look at c's
// socket and one allocation for both: a connection that is read and written both ways this way
// (every HTTP/1.1 one) makes both at once.
func NewConnPair(c net.Conn) (*ConnReader, *ConnWriter) {
	rc := Socket(c)
	if rc == nil {
		return nil, nil
	}
	if sw, ok := c.(SocketWriter); ok {
		if w := sw.SocketWriter(); w != nil {
			r := &ConnReader{}
			r.init(c, rc)
			return r, w
		}
	}
	p := &struct {
		r ConnReader
		w ConnWriter
	}{}
	p.r.init(c, rc)
	p.w.init(c, rc)
	return &p.r, &p.w
}

// Read reads what the socket has, up to len(p), like net.Conn's Read: io.EOF once the peer has
// closed its side.
func (r *ConnReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p, r.n, r.err = p, 0, nil
	err := r.rc.Read(r.read)
	n := r.n
	r.p = nil
	switch {
	case err != nil:
		return 0, err
	case r.err != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", r.err)}
	case n == 0:
		return 0, io.EOF
	}
	if r.counter != nil {
		r.counter.CountRead(n)
	}
	return n, nil
}

func (r *ConnReader) readOnce(fd uintptr) bool {
	for {
		n, err := Read(int(fd), r.p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false // the poller waits for bytes
		case err != nil:
			r.err = err
			return true
		}
		r.n = n
		return true
	}
}

// ConnWriter writes to a connection's socket with Write and Writev of this package, waiting for
// room through Go's poller (so the connection's write deadline holds). Bytes written are reported
// to the connection's CountWrite, if it has one, as its own Write would count them. Its state
// lives between a call and its callback, so it allocates nothing per write. Safe for concurrent
// use, like a net.Conn (writes are serialized).
type ConnWriter struct {
	mu      sync.Mutex
	rc      syscall.RawConn
	counter interface{ CountWrite(n int) }
	p       []byte
	vec     [][]byte
	n       int
	err     error
	noWait  bool // a Try call: a full socket ends the call instead of waiting for room
	// write is the poller callback for both kinds of call (a stored closure costs an allocation):
	// vec set is a Writev, else a Write of p.
	write func(fd uintptr) bool
}

// SocketWriter is a connection that already has a ConnWriter: NewConnWriter shares it (one per
// socket, rather than one for each layer that writes to it).
type SocketWriter interface {
	SocketWriter() *ConnWriter
}

// NewConnWriter returns a writer for c's socket, or nil when Socket(c) is nil: write to c then.
func NewConnWriter(c net.Conn) *ConnWriter {
	if sw, ok := c.(SocketWriter); ok {
		if w := sw.SocketWriter(); w != nil {
			return w
		}
	}
	rc := Socket(c)
	if rc == nil {
		return nil
	}
	w := &ConnWriter{}
	w.init(c, rc)
	return w
}

func (w *ConnWriter) init(c net.Conn, rc syscall.RawConn) {
	w.rc = rc
	w.counter, _ = c.(interface{ CountWrite(n int) })
	w.write = w.writeSome
}

func (w *ConnWriter) writeSome(fd uintptr) bool {
	if w.vec != nil {
		return w.writevOnce(fd)
	}
	return w.writeOnce(fd)
}

// Write writes all of p, like net.Conn's Write.
func (w *ConnWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.p, w.n, w.err = p, 0, nil
	err := w.rc.Write(w.write)
	return w.done(err)
}

// TryWrite writes as much of p as the socket takes now, without waiting for room, for a caller
// that must not block (the HTTP/2 reader passing DATA straight to an upstream): it writes the rest
// another way. A full socket is not an error: the count is just short.
func (w *ConnWriter) TryWrite(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.p, w.n, w.err, w.noWait = p, 0, nil, true
	err := w.rc.Write(w.write)
	w.noWait = false
	return w.done(err)
}

// TryWritev is Writev as TryWrite: what the socket takes now, in order, and the count.
func (w *ConnWriter) TryWritev(bufs [][]byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.vec, w.n, w.err, w.noWait = bufs, 0, nil, true
	err := w.rc.Write(w.write)
	w.vec, w.noWait = nil, false
	return w.done(err)
}

// Writev writes every slice of bufs in order, like net.Buffers' WriteTo, in as few system calls
// as the socket allows. It may modify bufs.
func (w *ConnWriter) Writev(bufs [][]byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.vec, w.n, w.err = bufs, 0, nil
	err := w.rc.Write(w.write)
	w.vec = nil
	return w.done(err)
}

// Count reports n bytes written to the socket another way (the tunnel engine's sends) to the
// connection's CountWrite, as if this writer had written them.
func (w *ConnWriter) Count(n int) {
	if w.counter != nil && n > 0 {
		w.counter.CountWrite(n)
	}
}

func (w *ConnWriter) done(err error) (int, error) {
	n := w.n
	w.p = nil
	if w.counter != nil && n > 0 {
		w.counter.CountWrite(n)
	}
	if err == nil && w.err != nil {
		err = &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", w.err)}
	}
	return n, err
}

func (w *ConnWriter) writeOnce(fd uintptr) bool {
	for w.n < len(w.p) {
		n, err := Write(int(fd), w.p[w.n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return w.noWait // else the poller waits for room
		case err != nil:
			w.err = err
			return true
		}
		w.n += n
	}
	return true
}

func (w *ConnWriter) writevOnce(fd uintptr) bool {
	for {
		for len(w.vec) > 0 && len(w.vec[0]) == 0 {
			w.vec = w.vec[1:]
		}
		if len(w.vec) == 0 {
			return true
		}
		n, err := Writev(int(fd), w.vec)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return w.noWait
		case err != nil:
			w.err = err
			return true
		}
		w.n += n
		for n > 0 {
			m := min(n, len(w.vec[0]))
			w.vec[0] = w.vec[0][m:]
			n -= m
			if len(w.vec[0]) == 0 {
				w.vec = w.vec[1:]
			}
		}
	}
}
