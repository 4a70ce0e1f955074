package main

import (
	"bytes"
	"net/netip"
	"sync/atomic"
	"syscall"
)

// pairSide is one socket of a relayed pair.
type pairSide struct {
	fd    int
	peer  *pairSide
	state sideState
	head  []byte // client: the request head so far; upstream: the head to send once connected
	ended bool   // read its FIN
}

type sideState int

const (
	readingHead  sideState = iota // the client, until its request head is complete
	connecting                    // the upstream, until it is writable
	awaitingHead                  // the upstream, until the response head's first bytes
	relaying                      // both, after the response head
)

// eventLoop is the whole program on one goroutine and one epoll set.
type eventLoop struct {
	*epollBase
	sides map[int]*pairSide
	buf   []byte
}

func newEventLoop(listen, upstream netip.AddrPort) (*eventLoop, error) {
	b, err := newEpollBase(listen, upstream)
	if err != nil {
		return nil, err
	}
	return &eventLoop{epollBase: b, sides: make(map[int]*pairSide), buf: make([]byte, 64<<10)}, nil
}

// run serves until stop is set (checked every 100 ms; nil: forever), then closes everything.
func (l *eventLoop) run(stop *atomic.Bool) error {
	return l.serve(stop, func(ev syscall.EpollEvent) {
		if fd := int(ev.Fd); fd == l.lfd {
			l.accept()
		} else if s := l.sides[fd]; s != nil {
			l.ready(s)
		}
	}, l.closeAll)
}

func (l *eventLoop) accept() {
	for {
		fd, _, err := syscall.Accept4(l.lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		if l.ctl(syscall.EPOLL_CTL_ADD, fd, syscall.EPOLLIN) != nil {
			syscall.Close(fd)
			continue
		}
		l.sides[fd] = &pairSide{fd: fd}
	}
}

// ready moves one side on by its state.
func (l *eventLoop) ready(s *pairSide) {
	switch s.state {
	case readingHead:
		n, err := syscall.Read(s.fd, l.buf)
		if err == syscall.EAGAIN {
			return
		}
		if n <= 0 {
			l.drop(s)
			return
		}
		s.head = append(s.head, l.buf[:n]...)
		if bytes.Contains(s.head, []byte("\r\n\r\n")) {
			l.dial(s)
		}
	case connecting:
		if _, err := syscall.Write(s.fd, s.head); err != nil {
			l.drop(s)
			return
		}
		s.head, s.state = nil, awaitingHead
		if l.ctl(syscall.EPOLL_CTL_MOD, s.fd, syscall.EPOLLIN) != nil {
			l.drop(s)
		}
	case awaitingHead, relaying:
		l.forward(s)
	}
}

// dial connects the client's upstream; the client is not read again until the response head.
func (l *eventLoop) dial(c *pairSide) {
	fd, err := socket()
	if err != nil {
		l.drop(c)
		return
	}
	if err := syscall.Connect(fd, &l.upstream); err != nil && err != syscall.EINPROGRESS {
		syscall.Close(fd)
		l.drop(c)
		return
	}
	u := &pairSide{fd: fd, peer: c, state: connecting, head: c.head}
	c.peer, c.head, c.state = u, nil, relaying
	l.sides[fd] = u
	if l.ctl(syscall.EPOLL_CTL_ADD, fd, syscall.EPOLLOUT) != nil || l.ctl(syscall.EPOLL_CTL_MOD, c.fd, 0) != nil {
		l.drop(c)
	}
}

// forward passes what s has to its peer, and its FIN as a half-close.
func (l *eventLoop) forward(s *pairSide) {
	n, err := syscall.Read(s.fd, l.buf)
	if err == syscall.EAGAIN {
		return
	}
	if err != nil || n == 0 {
		s.ended = true
		if err != nil || s.peer.ended {
			l.drop(s)
			return
		}
		syscall.Shutdown(s.peer.fd, syscall.SHUT_WR)
		l.ctl(syscall.EPOLL_CTL_MOD, s.fd, 0)
		return
	}
	if w, err := syscall.Write(s.peer.fd, l.buf[:n]); err != nil || w != n {
		l.drop(s) // a full socket: beyond what this measuring stick does
		return
	}
	if s.state == awaitingHead { // the response head: the client may talk now
		s.state = relaying
		if l.ctl(syscall.EPOLL_CTL_MOD, s.peer.fd, syscall.EPOLLIN) != nil {
			l.drop(s)
		}
	}
}

// drop closes both sides of s's pair.
func (l *eventLoop) drop(s *pairSide) {
	for _, x := range []*pairSide{s, s.peer} {
		if x != nil && l.sides[x.fd] == x {
			delete(l.sides, x.fd)
			syscall.Close(x.fd)
		}
	}
}

func (l *eventLoop) closeAll() {
	for fd := range l.sides {
		syscall.Close(fd)
	}
	clear(l.sides)
	l.close()
}
