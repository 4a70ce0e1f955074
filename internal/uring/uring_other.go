//go:build !linux

// Package uring submits batches of non-blocking socket reads and writes through one io_uring. It
// exists on Linux only; elsewhere New always fails and callers make the calls one by one.
package uring

import "errors"

// Ring is an io_uring; there is none on this system.
type Ring struct{}

// ErrFull is returned by Recv and Send when the batch already holds the ring's size.
var ErrFull = errors.New("uring: batch full")

// New fails: io_uring is Linux's.
func New(entries int) (*Ring, error) { return nil, errors.New("uring: Linux only") }

// Size is the most operations a batch holds.
func (r *Ring) Size() int { return 0 }

// Close releases the ring.
func (r *Ring) Close() error { return nil }

// Recv queues a recv(2).
func (r *Ring) Recv(fd int, p []byte, tag uint64) error { return ErrFull }

// Send queues a send(2).
func (r *Ring) Send(fd int, p []byte, tag uint64) error { return ErrFull }

// Queued is the number of operations waiting for Submit.
func (r *Ring) Queued() int { return 0 }

// Submit runs the queued operations.
func (r *Ring) Submit(res []int32) error { return nil }
