//go:build !linux

package tunnel

import (
	"errors"
	"net"
)

// Engine is the epoll tunnel engine; without epoll every tunnel keeps its pump goroutines.
type Engine struct{}

// Tunnel is a tunnel in the engine; there are none without epoll.
type Tunnel struct{}

// DefaultEngine returns the process's engine.
func DefaultEngine() *Engine { return &Engine{} }

// Pluggable reports whether the engine can carry c: never without epoll.
func Pluggable(net.Conn) bool { return false }

// Start refuses: the engine needs epoll.
func (e *Engine) Start(Options) (*Tunnel, error) {
	return nil, errors.New("tunnel: the engine needs Linux")
}

// GoAway does nothing: no tunnel is ever started.
func (t *Tunnel) GoAway() {}

// Abort does nothing: no tunnel is ever started.
func (t *Tunnel) Abort(error) {}

// Reader is a socket the engine reads; there are none without epoll.
type Reader struct{}

// StartReader refuses: the engine needs epoll.
func (e *Engine) StartReader(ReaderOptions) (*Reader, error) {
	return nil, errors.New("tunnel: the engine needs Linux")
}

// Resume does nothing: no reader is ever started.
func (r *Reader) Resume() {}

// Abort does nothing: no reader is ever started.
func (r *Reader) Abort(error) {}
