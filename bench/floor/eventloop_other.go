//go:build !linux

package main

import (
	"errors"
	"net/netip"
	"sync/atomic"
)

type eventLoop struct{}

var errNotLinux = errors.New("-mode eventloop and coroutines need Linux (epoll)")

func newEventLoop(listen, upstream netip.AddrPort) (*eventLoop, error) { return nil, errNotLinux }

type coroLoop struct{ eventLoop }

func newCoroLoop(listen, upstream netip.AddrPort) (*coroLoop, error) { return nil, errNotLinux }

func (l *eventLoop) port() int                   { return 0 }
func (l *eventLoop) run(stop *atomic.Bool) error { return nil }
