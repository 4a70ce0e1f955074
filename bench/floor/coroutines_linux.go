package main

import (
	"bytes"
	"errors"
	"io"
	"iter"
	"net/netip"
	"sync/atomic"
	"syscall"
)

// coroLoop runs each connection's relay as straight-line code, the shape a goroutine per
// connection has, but as a coroutine (iter.Pull) on the loop's own goroutine: where a goroutine
// would park until Go's poller wakes it, the coroutine hands control back to the loop, which
// resumes it when epoll says its socket is ready. No scheduler and no thread is involved in a
// wait, which is what the goroutine floor pays for.
type coroLoop struct {
	*epollBase
	waiting map[waitKey]*coroutine
	live    map[*coroutine]struct{}
	bufs    [][]byte // free read buffers
}

// waitKey is what a coroutine waits for: one socket, readable or writable.
type waitKey struct {
	fd    int
	write bool
}

type coroutine struct {
	next func() (waitKey, bool)
	stop func()
}

func newCoroLoop(listen, upstream netip.AddrPort) (*coroLoop, error) {
	b, err := newEpollBase(listen, upstream)
	if err != nil {
		return nil, err
	}
	return &coroLoop{epollBase: b, waiting: make(map[waitKey]*coroutine), live: make(map[*coroutine]struct{})}, nil
}

// errStopped is a wait cut short by the loop's end.
var errStopped = errors.New("the loop stopped")

// coroConn is a socket as a coroutine sees it: Read and Write block, by yielding to the loop.
type coroConn struct {
	fd    int
	yield func(waitKey) bool
}

func (c coroConn) Read(p []byte) (int, error) {
	for {
		n, err := syscall.Read(c.fd, p)
		switch {
		case err == syscall.EAGAIN:
			if !c.yield(waitKey{c.fd, false}) {
				return 0, errStopped
			}
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		default:
			return n, nil
		}
	}
}

func (c coroConn) Write(p []byte) (int, error) {
	w := 0
	for w < len(p) {
		n, err := syscall.Write(c.fd, p[w:])
		switch {
		case err == syscall.EAGAIN:
			if !c.yield(waitKey{c.fd, true}) {
				return w, errStopped
			}
		case err != nil:
			return w, err
		default:
			w += n
		}
	}
	return w, nil
}

// run serves until stop is set (checked every 100 ms; nil: forever), then ends every coroutine
// and closes everything.
func (l *coroLoop) run(stop *atomic.Bool) error {
	return l.serve(stop, func(ev syscall.EpollEvent) {
		fd := int(ev.Fd)
		if fd == l.lfd {
			l.accept()
			return
		}
		if ev.Events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
			l.wake(waitKey{fd, false})
		}
		if ev.Events&(syscall.EPOLLOUT|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
			l.wake(waitKey{fd, true})
		}
	}, l.closeAll)
}

// watch adds fd to the set, edge-triggered both ways: a coroutine waits only after EAGAIN, and
// the next edge is the one it waits for.
func (l *coroLoop) watch(fd int) error {
	const edgeTriggered = 1 << 31 // syscall.EPOLLET is a negative int
	return l.ctl(syscall.EPOLL_CTL_ADD, fd, syscall.EPOLLIN|syscall.EPOLLOUT|syscall.EPOLLRDHUP|edgeTriggered)
}

func (l *coroLoop) accept() {
	for {
		fd, _, err := syscall.Accept4(l.lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		if l.watch(fd) != nil {
			syscall.Close(fd)
			continue
		}
		l.spawn(func(yield func(waitKey) bool) { l.relay(fd, yield) })
	}
}

// spawn starts body as a coroutine and runs it to its first wait.
func (l *coroLoop) spawn(body func(yield func(waitKey) bool)) {
	next, stop := iter.Pull(iter.Seq[waitKey](body))
	c := &coroutine{next: next, stop: stop}
	l.live[c] = struct{}{}
	l.resume(c)
}

// resume runs c until it waits again or returns.
func (l *coroLoop) resume(c *coroutine) {
	k, ok := c.next()
	if !ok {
		delete(l.live, c)
		return
	}
	l.waiting[k] = c
}

func (l *coroLoop) wake(k waitKey) {
	if c := l.waiting[k]; c != nil {
		delete(l.waiting, k)
		l.resume(c)
	}
}

func (l *coroLoop) buffer() []byte {
	if n := len(l.bufs); n > 0 {
		b := l.bufs[n-1]
		l.bufs = l.bufs[:n-1]
		return b
	}
	return make([]byte, 16<<10)
}

// relay is the goroutine floor's relay, written the same way: request head to a new upstream
// connection, response head back, then both directions, the upstream's on a second coroutine.
func (l *coroLoop) relay(cfd int, yield func(waitKey) bool) {
	c := coroConn{cfd, yield}
	buf := l.buffer()
	defer func() { l.bufs = append(l.bufs, buf) }()
	n, err := readHeadInto(c, buf)
	if err != nil {
		syscall.Close(cfd)
		return
	}
	ufd, err := socket()
	if err != nil {
		syscall.Close(cfd)
		return
	}
	u := coroConn{ufd, yield}
	closeBoth := func() { syscall.Close(ufd); syscall.Close(cfd) }
	if err := l.watch(ufd); err != nil {
		closeBoth()
		return
	}
	if err := syscall.Connect(ufd, &l.upstream); err != nil && err != syscall.EINPROGRESS {
		closeBoth()
		return
	}
	if _, err := u.Write(buf[:n]); err != nil { // waits for the connect
		closeBoth()
		return
	}
	if n, err = readHeadInto(u, buf); err != nil {
		closeBoth()
		return
	}
	if _, err := c.Write(buf[:n]); err != nil {
		closeBoth()
		return
	}
	open := 2
	ended := func() {
		if open--; open == 0 {
			closeBoth()
		}
	}
	l.spawn(func(yield func(waitKey) bool) {
		b := l.buffer()
		io.CopyBuffer(coroConn{cfd, yield}, coroConn{ufd, yield}, b)
		l.bufs = append(l.bufs, b)
		syscall.Shutdown(cfd, syscall.SHUT_WR)
		ended()
	})
	io.CopyBuffer(u, c, buf)
	syscall.Shutdown(ufd, syscall.SHUT_WR)
	ended()
}

// readHeadInto reads into buf until it holds a whole head, and returns how many bytes it read
// (the head and whatever followed it).
func readHeadInto(r io.Reader, buf []byte) (int, error) {
	n := 0
	for {
		m, err := r.Read(buf[n:])
		if err != nil {
			return 0, err
		}
		n += m
		if bytes.Contains(buf[max(0, n-m-3):n], []byte("\r\n\r\n")) {
			return n, nil
		}
		if n == len(buf) {
			return 0, errors.New("head too long")
		}
	}
}

// closeAll ends every coroutine (each sees its wait fail and closes its sockets), then the loop.
func (l *coroLoop) closeAll() {
	for len(l.live) > 0 {
		for c := range l.live {
			delete(l.live, c)
			c.stop()
		}
	}
	clear(l.waiting)
	l.close()
}
