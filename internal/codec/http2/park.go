package http2

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/workers"
)

// Parking. An idle connection would otherwise keep a goroutine waiting on its socket (its stack,
// 8 KiB, is most of what an idle HTTP/2 tunnel costs). With ServerConfig.ParkReads, a connection
// whose client has sent nothing for QuietBeforePark has its reads made elsewhere (the tunnel
// engine) and its goroutine returns (ServeLeaving). What they read wakes a pump
// (workers.Demand), which takes the reads back — it aborts them and waits for their end, so no
// read is left behind — and reads the connection itself, as Serve's goroutine did, until it is
// quiet again. A busy connection so costs what it did (a deadline re-armed once per quiet
// period), and an idle one no goroutine. While the reads are parked, the socket must not close
// under them: Close aborts them and the pump closes the socket once they have let go.

// ParkedReads are a quiet connection's reads made elsewhere. Abort stops them; their done
// follows, with the reason given.
type ParkedReads interface{ Abort(why error) }

// ReadParker starts parked reads of nc's socket: deliver gets each read's bytes on the reading
// goroutine (it must not block; false asks for a pause), and done their end: nil for the peer's
// FIN, the reason given to Abort, or the read's error. nc stays the caller's to write to; it is
// not closed before done.
type ReadParker func(nc net.Conn, deliver func(p []byte) bool, done func(why error)) (ParkedReads, error)

var (
	// errParked is readFrames reporting that the reads are parked: the goroutine may go.
	errParked = errors.New("http2: the connection's reads are parked")
	// errUnpark is the pump taking the reads back.
	errUnpark = errors.New("http2: a goroutine reads the connection again")
)

// parking is a connection's parked reads and the pump that takes them back.
type parking struct {
	c       *ServerConn
	pump    workers.Demand
	started chan struct{} // closed once ServeLeaving's caller has let go
	ended   func(error)   // ServeLeaving's

	// Guarded by c.mu.
	reads       ParkedReads // nil while a goroutine reads the socket
	closeSocket bool        // Close came while parked: the pump closes the socket

	mu     sync.Mutex
	queue  [][]byte // what the parked reads delivered
	queued int
	done   bool          // the parked reads have ended
	why    error         // what their done said
	doneCh chan struct{} // made by the pump when it waits for done: a parked connection holds none
}

// ServeLeaving is Serve for a caller whose goroutine should not wait on a quiet connection. With
// ServerConfig.ParkReads, once the connection's reads park it calls leave and returns true; the
// connection goes on, and ended receives what Serve would have returned, once everything Serve
// waits for is over. Otherwise it is Serve.
func (c *ServerConn) ServeLeaving(ctx context.Context, leave func(), ended func(error)) (left bool, err error) {
	c.start(ctx)
	err = c.serve()
	if err != errParked {
		return false, c.finish(err)
	}
	c.pk.ended = ended
	leave()
	close(c.pk.started) // the pump may run, and end the connection, from here on
	return true, nil
}

// park hands the quiet connection's reads to ParkReads, and reports whether it did. Called by
// the goroutine that reads the connection.
func (c *ServerConn) park() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.closed {
		return false
	}
	p := c.pk
	if p == nil {
		p = &parking{c: c, started: make(chan struct{})}
		p.pump.Init(p.run)
		c.pk = p
	}
	p.mu.Lock()
	p.done, p.why, p.doneCh = false, nil, nil
	p.mu.Unlock()
	_ = c.nc.SetReadDeadline(time.Time{}) // the quiet period's, which has passed
	if len(c.queue) == 0 && !c.writerOn {
		c.queue, c.batch = nil, nil // a quiet connection holds no write queue (grown to ~300 bytes)
	}
	r, err := c.cfg.ParkReads(c.nc, p.deliver, p.finished)
	if err != nil {
		c.noPark = true // (not a plain TCP socket, say): this goroutine goes on reading
		return false
	}
	p.reads = r
	return true
}

// unparkLocked has the pump take the reads back (finishLocked: the close's grace period needs a
// deadline, which only a goroutine's reads heed).
func (c *ServerConn) unparkLocked() {
	if p := c.pk; p != nil && p.reads != nil {
		p.reads.Abort(errUnpark)
	}
}

// closeParkedLocked reports whether the reads are parked, and if so aborts them: the pump closes
// the socket once they have let go.
func (c *ServerConn) closeParkedLocked() bool {
	p := c.pk
	if p == nil || p.reads == nil {
		return false
	}
	p.closeSocket = true
	p.reads.Abort(errClosed)
	return true
}

// deliver queues what the parked reads read, on their goroutine: it never waits.
func (p *parking) deliver(b []byte) bool {
	p.mu.Lock()
	p.queue = append(p.queue, append([]byte(nil), b...))
	p.queued += len(b)
	more := p.queued < frameBufSize
	p.mu.Unlock()
	p.pump.Ask()
	return more
}

// finished is the parked reads' done.
func (p *parking) finished(why error) {
	p.mu.Lock()
	p.done, p.why = true, why
	ch := p.doneCh
	p.mu.Unlock()
	if ch != nil {
		close(ch)
	}
	p.pump.Ask()
}

// take moves what the parked reads delivered into the frame source, and reports whether there
// was anything and whether (and why) the reads have ended.
func (p *parking) take() (got, done bool, why error) {
	p.mu.Lock()
	q := p.queue
	p.queue, p.queued = nil, 0
	done, why = p.done, p.why
	p.mu.Unlock()
	for _, b := range q {
		p.c.src.feed(b)
		if p.c.counter != nil {
			p.c.counter.CountRead(len(b)) // read past the connection's counting
		}
	}
	return len(q) > 0, done, why
}

// run is a run of the pump: when the parked reads brought bytes, or ended, it takes the reads
// back and reads the connection until it is quiet again (false: the goroutine goes) or over
// (true, after ended).
func (p *parking) run() (over bool) {
	<-p.started
	got, done, why := p.take()
	if !got && !done {
		return false
	}
	c := p.c
	if !done {
		c.mu.Lock()
		if p.reads != nil {
			p.reads.Abort(errUnpark)
		}
		c.mu.Unlock()
		p.mu.Lock()
		var ch chan struct{}
		if !p.done {
			p.doneCh = make(chan struct{})
			ch = p.doneCh
		}
		p.mu.Unlock()
		if ch != nil {
			<-ch
		}
		_, _, why = p.take() // what they read before they let go
	}
	c.mu.Lock()
	p.reads = nil
	closeSocket := p.closeSocket
	p.closeSocket = false
	c.mu.Unlock()
	if closeSocket {
		_ = c.nc.Close()
	}
	err := why
	if why == nil || why == errUnpark {
		// The frames delivered first, then the socket (whose FIN, if that ended the parked
		// reads, a read finds again).
		if err = c.readFrames(); err == errParked {
			return false
		}
	}
	p.ended(c.finish(err))
	return true
}
