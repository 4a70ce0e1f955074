// Package workers runs short-lived functions on goroutines that are kept for the next one. A
// connection's or a request's goroutine grows its stack to tens of kilobytes on the way down the
// call chain (the dialer, the codecs), and a new goroutine pays that growth again, copy by copy,
// as well as its creation and exit: about 5% of the CPU of a WebSocket handshake. A kept
// goroutine has its stack already grown.
//
// The package owns its idle goroutines. One ends when the function it ran returns and maxIdle
// others are already waiting, or once it has waited longer than maxWait (so a burst's goroutines,
// and their stacks, go away once load is back to normal, even in a process that then does nothing).
package workers

import (
	"sync"
	"time"
)

// maxIdle bounds the goroutines kept waiting, and so the memory their stacks hold when load drops
// (the runtime's collector shrinks idle stacks, too).
const maxIdle = 256

// maxWait is how long a goroutine may wait for work before it may be ended (a variable for tests).
var maxWait = time.Minute

var (
	mu   sync.Mutex
	idle []*worker // most recently idle last: its stack is the warmest
	// trim ends goroutines idle past maxWait when nothing else would: after a burst, a quiet
	// process would otherwise keep up to maxIdle grown stacks (~20 KiB each) for good. Armed
	// while the idle list is not empty.
	trim *time.Timer
)

type worker struct {
	next  chan func() // nil ends the goroutine
	since time.Time   // when it went idle
}

// Go runs f on a kept goroutine if one is waiting, or a new one. Like a go statement, it does not
// wait for f.
func Go(f func()) {
	mu.Lock()
	if n := len(idle); n > 0 {
		w := idle[n-1]
		idle[n-1] = nil
		idle = idle[:n-1]
		mu.Unlock()
		w.next <- f
		return
	}
	mu.Unlock()
	w := &worker{next: make(chan func(), 1)}
	go w.run(f)
}

// Idle returns the number of goroutines waiting for work: they are not leaks (tests that count
// goroutines allow for them).
func Idle() int {
	mu.Lock()
	defer mu.Unlock()
	return len(idle)
}

func (w *worker) run(f func()) {
	for f != nil {
		f()
		f = nil
		if w.park() {
			f = <-w.next
		}
	}
}

// park puts w on the idle list, unless it is full; it ends the longest-waiting goroutine if that
// has waited past maxWait.
func (w *worker) park() bool {
	now := time.Now()
	mu.Lock()
	defer mu.Unlock()
	if len(idle) > 0 && now.Sub(idle[0].since) > maxWait {
		idle[0].next <- nil
		idle = append(idle[:0], idle[1:]...)
	}
	if len(idle) >= maxIdle {
		return false
	}
	w.since = now
	idle = append(idle, w)
	if trim == nil {
		trim = time.AfterFunc(maxWait, trimIdle)
	} else if len(idle) == 1 {
		trim.Reset(maxWait)
	}
	return true
}

// trimIdle ends the goroutines that have waited past maxWait, and comes back while some wait.
func trimIdle() {
	now := time.Now()
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for n < len(idle) && now.Sub(idle[n].since) > maxWait {
		idle[n].next <- nil
		n++
	}
	idle = append(idle[:0], idle[n:]...)
	clear(idle[len(idle) : len(idle)+n])
	if len(idle) > 0 {
		trim.Reset(maxWait - now.Sub(idle[0].since) + time.Millisecond)
	}
}
