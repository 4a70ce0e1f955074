//go:build !linux

package main

import (
	"errors"
	"net/netip"
	"sync/atomic"
)

type eventLoop struct{}

func newEventLoop(listen, upstream netip.AddrPort) (*eventLoop, error) {
	return nil, errors.New("-mode eventloop needs Linux (epoll)")
}

func (l *eventLoop) port() int                   { return 0 }
func (l *eventLoop) run(stop *atomic.Bool) error { return nil }
