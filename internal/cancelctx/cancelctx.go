// Package cancelctx is context.WithCancel for the contexts a proxy keeps for as long as a tunnel
// lives: tens of thousands at once, several per stream (the codec's stream, the connection
// manager's stream, the watches the router and the codecs put on them). The standard library's
// cancel context allocates a map of its children and a Done channel as soon as anything watches
// it, some 350 bytes that stay for the context's life (a map does not shrink) even once the
// watchers are gone. A Context here keeps its watchers in a slice with constant-time removal,
// registers a child of its own kind without a channel or a map, and makes its Done channel only
// when Done is called.
//
// Cancellation reaches the children of a Context of this package before Cancel returns, as with
// the standard library; functions given to AfterFunc run on goroutines of their own, as with
// context.AfterFunc. A standard-library context derived from one of these (context.WithTimeout
// and so on) is cancelled through AfterFunc, so shortly after rather than before Cancel returns.
//
// context.Cause does not see a Context of this package (it looks for the standard library's
// type); call Cause instead.
package cancelctx

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// closedDone is the Done channel of a Context cancelled before anyone asked for it.
var closedDone = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Context is a cancellable context.Context. The zero value is not usable: make one with New.
type Context struct {
	parent context.Context

	mu       sync.Mutex
	done     chan struct{}                 // made by the first Done, or closedDone once cancelled before that
	doneSeen atomic.Pointer[chan struct{}] // &done once made: Done's fast path, without the lock
	end      atomic.Pointer[ending]        // set once, by the cancel: Err and Cause without the lock
	watchers []*watcher                    // registered and not yet run or stopped

	self       watcher     // this context's registration with a parent of this package
	stopParent func() bool // its registration with a standard-library parent, if any
}

// ending is why a Context was cancelled. It is allocated by the cancel, which keeps the Context
// itself small for its (long) life before that.
type ending struct {
	err, cause error
}

// watcher is one registration with a Context: a child Context, cancelled synchronously, or a
// function, run on its own goroutine. owner and idx are guarded by the owner's mu.
type watcher struct {
	owner *Context // the context it is registered with; nil once run or removed
	idx   int      // its position in owner.watchers
	child *Context
	fn    func()
}

// New returns a context cancelled by its Cancel or when parent is done, whichever comes first.
func New(parent context.Context) *Context {
	c := &Context{parent: parent}
	c.self.child = c
	if p, ok := parent.(*Context); ok {
		p.mu.Lock()
		if e := p.end.Load(); e != nil {
			p.mu.Unlock()
			c.cancel(e.err, e.cause, false)
			return c
		}
		p.addLocked(&c.self)
		p.mu.Unlock()
		return c
	}
	if parent.Done() == nil {
		return c // never cancelled from above
	}
	if err := parent.Err(); err != nil {
		c.cancel(err, context.Cause(parent), false)
		return c
	}
	c.stopParent = context.AfterFunc(parent, func() {
		c.cancel(parent.Err(), context.Cause(parent), false)
	})
	return c
}

// Cancel cancels the context with context.Canceled; later calls do nothing.
func (c *Context) Cancel() { c.cancel(context.Canceled, nil, true) }

// CancelCause cancels the context with context.Canceled and cause (context.Canceled when nil),
// as the function context.WithCancelCause returns does.
func (c *Context) CancelCause(cause error) { c.cancel(context.Canceled, cause, true) }

// Cause is what context.Cause returns for a standard-library context: the cause given to
// CancelCause (or inherited from the parent), its Err if none, nil while not cancelled.
func (c *Context) Cause() error {
	if e := c.end.Load(); e != nil {
		return e.cause
	}
	return nil
}

// cancel ends c and its descendants. detach removes c from its parent; a parent cancelling its
// children has already emptied its list.
func (c *Context) cancel(err, cause error, detach bool) {
	if cause == nil {
		cause = err
	}
	c.mu.Lock()
	if c.end.Load() != nil {
		c.mu.Unlock()
		return
	}
	c.end.Store(&ending{err: err, cause: cause})
	if c.done == nil {
		c.done = closedDone
		c.doneSeen.Store(&c.done)
	} else {
		close(c.done)
	}
	ws := c.watchers
	c.watchers = nil
	for _, w := range ws {
		w.owner = nil
	}
	c.mu.Unlock()
	for _, w := range ws {
		if w.child != nil {
			w.child.cancel(err, cause, false)
		} else {
			go w.fn()
		}
	}
	if !detach {
		return
	}
	if p, ok := c.parent.(*Context); ok {
		p.mu.Lock()
		p.removeLocked(&c.self)
		p.mu.Unlock()
	} else if c.stopParent != nil {
		c.stopParent()
	}
}

// AfterFunc arranges for f to run on its own goroutine once c is done (at once if it already
// is). stop unregisters f and reports whether it did so before f started; it is what
// context.AfterFunc does, and context.AfterFunc calls this method for a Context of this package.
func (c *Context) AfterFunc(f func()) (stop func() bool) {
	w := &watcher{fn: f}
	c.mu.Lock()
	if c.end.Load() != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.addLocked(w)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if w.owner != c {
			return false
		}
		c.removeLocked(w)
		return true
	}
}

// AfterFunc is context.AfterFunc, registered without the standard library's per-call context
// when ctx is a Context of this package.
func AfterFunc(ctx context.Context, f func()) (stop func() bool) {
	if c, ok := ctx.(*Context); ok {
		return c.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}

// Wait waits until ch is closed or ctx is done, and returns nil or ctx's Err. For a Context of
// this package it waits without making the Context's Done channel (which would stay for the
// Context's life): a watch is registered for the wait and removed after it.
func Wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	default:
	}
	c, ok := ctx.(*Context)
	if !ok {
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	wake := make(chan struct{})
	stop := c.AfterFunc(func() { close(wake) })
	select {
	case <-ch:
		stop()
		return nil
	case <-wake:
		return c.Err()
	}
}

// Detach returns a context for an operation that derives contexts of its own from ctx (a dial:
// net.Dialer derives one for its timeout), and release, to call once the operation is over.
// Derived from a Context of this package directly, such a context would ask for its Done channel,
// which the Context then keeps for its life; derived from the child Detach returns, the channel is
// the child's, garbage once the operation is over. Any other ctx is returned as it is.
func Detach(ctx context.Context) (detached context.Context, release func()) {
	c, ok := ctx.(*Context)
	if !ok {
		return ctx, func() {}
	}
	d := New(c)
	return d, d.Cancel
}

func (c *Context) addLocked(w *watcher) {
	w.owner, w.idx = c, len(c.watchers)
	c.watchers = append(c.watchers, w)
}

// removeLocked unregisters w if it is still registered with c, moving the last watcher into its
// place.
func (c *Context) removeLocked(w *watcher) {
	if w.owner != c {
		return
	}
	last := len(c.watchers) - 1
	moved := c.watchers[last]
	c.watchers[w.idx], moved.idx = moved, w.idx
	c.watchers[last] = nil
	c.watchers = c.watchers[:last]
	w.owner = nil
	if len(c.watchers) == 0 && cap(c.watchers) > 64 {
		c.watchers = nil // a long-lived parent gives back what a burst of children grew
	}
}

// Done is closed when the context is cancelled.
func (c *Context) Done() <-chan struct{} {
	if d := c.doneSeen.Load(); d != nil {
		return *d
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		c.doneSeen.Store(&c.done)
	}
	return c.done
}

// Err is nil until the context is cancelled, then context.Canceled or the parent's error.
func (c *Context) Err() error {
	if e := c.end.Load(); e != nil {
		return e.err
	}
	return nil
}

// Deadline is the parent's: cancellation adds none.
func (c *Context) Deadline() (time.Time, bool) { return c.parent.Deadline() }

// Value is the parent's.
func (c *Context) Value(key any) any { return c.parent.Value(key) }

// String names the context for debugging, as the standard library's do.
func (c *Context) String() string { return "cancelctx.New" }
