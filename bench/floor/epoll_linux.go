package main

import (
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
)

// epollBase is what both loops share: a non-blocking listening socket in an epoll set of their
// own, and the upstream's address.
type epollBase struct {
	ep, lfd  int
	upstream syscall.SockaddrInet4
	events   []syscall.EpollEvent
}

func newEpollBase(listen, upstream netip.AddrPort) (*epollBase, error) {
	if !listen.Addr().Is4() || !upstream.Addr().Is4() {
		return nil, syscall.EAFNOSUPPORT
	}
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	b := &epollBase{lfd: lfd, ep: -1, events: make([]syscall.EpollEvent, 256),
		upstream: syscall.SockaddrInet4{Port: int(upstream.Port()), Addr: upstream.Addr().As4()}}
	if err := b.listen(listen); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *epollBase) listen(a netip.AddrPort) error {
	if err := syscall.SetsockoptInt(b.lfd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return err
	}
	if err := syscall.Bind(b.lfd, &syscall.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}); err != nil {
		return err
	}
	if err := syscall.Listen(b.lfd, 4096); err != nil {
		return err
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	b.ep = ep
	return b.ctl(syscall.EPOLL_CTL_ADD, b.lfd, syscall.EPOLLIN)
}

// port is the listening port (the tests listen on port 0).
func (b *epollBase) port() int {
	sa, err := syscall.Getsockname(b.lfd)
	if err != nil {
		return 0
	}
	return sa.(*syscall.SockaddrInet4).Port
}

func (b *epollBase) ctl(op, fd int, events uint32) error {
	return syscall.EpollCtl(b.ep, op, fd, &syscall.EpollEvent{Events: events, Fd: int32(fd)})
}

// serve passes each event to handle, on one thread, until stop is set (checked every 100 ms;
// nil: forever), then runs finish on that thread still locked: iter.Pull's coroutines must be
// resumed, to end them, in the thread-locking state they were made in.
func (b *epollBase) serve(stop *atomic.Bool, handle func(syscall.EpollEvent), finish func()) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer finish()
	for stop == nil || !stop.Load() {
		n, err := syscall.EpollWait(b.ep, b.events, 100)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range b.events[:n] {
			handle(ev)
		}
	}
	return nil
}

// socket makes a non-blocking TCP socket for the upstream, with Nagle off as every proxy here has.
func socket() (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err == nil {
		syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	}
	return fd, err
}

func (b *epollBase) close() {
	syscall.Close(b.lfd)
	if b.ep >= 0 {
		syscall.Close(b.ep)
	}
}
