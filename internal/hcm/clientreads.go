package hcm

import (
	"errors"
	"io"
	"sync"
	"time"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/internal/tunnel"
	"github.com/switchyard-proxy/switchyard/internal/workers"
)

// The client's reads of a quiet tunnel on the tunnel engine. A tunnel from an HTTP/1.1 client to
// an HTTP/2 upstream (the seed's front proxy) cannot go to the engine whole, as its upstream side
// is a stream of a shared connection; that side needs no goroutine (the upstream connection's
// reader writes to the client, a pump runs on demand), and the client's side needs none while the
// client is quiet: the engine reads the client's socket then (a tunnel.Reader). The connection's
// goroutine returns once the tunnel is open, leaving the connection open (lifetime.leave). When
// the client talks, the engine's read wakes a pump (workers.Demand), which passes the bytes on,
// stops the engine's reads and reads the client itself, as the decode pump did, until the client
// has been quiet for quietBeforeEngine: then the engine reads it again and the pump's goroutine
// goes. A busy tunnel so costs what it did (a goroutine woken by Go's poller per message, no copy),
// and an idle one no goroutine. The pump ends the stream and the connection once the client's side
// has ended and the stream is done.

// quietBeforeEngine is how long a client must send nothing before the engine reads it again.
const quietBeforeEngine = time.Second

// errToPump is the pump taking the client's reads back from the engine.
var errToPump = errors.New("the pump reads the client")

// clientReads is the reading of one stream's client by the engine and the on-demand pump.
type clientReads struct {
	s     *stream
	d     *h1Stream
	pump  workers.Demand
	limit int
	pass  func(p []byte) bool // the decode pump's handling of client bytes

	// rd is the engine's Reader while the engine reads the client, nil while the pump does. It
	// is guarded by the stream's handoffMu: a reset reads it to know who may close the socket.
	rd *tunnel.Reader

	mu      sync.Mutex
	queue   []*[]byte // what the engine read, in slabs, each holding lens[i] bytes
	lens    []int
	queued  int
	paused  bool          // deliver refused more: the pump resumes the reads once it has caught up
	ended   bool          // the Reader's Done came
	endErr  error         // what Done said (nil: the client's FIN)
	doneCh  chan struct{} // closed by the Reader's Done; made by the pump when it waits for it
	started chan struct{} // closed once the connection's goroutine has let go
}

// ReadClientOnEngine is the router, whose upstream side now needs no goroutine, offering the
// client's side of the tunnel to the engine (see router.ClientReadTaker). It is taken only for an
// HTTP/1.1 client on a plain TCP socket whose chain is the router alone; the decode pump takes it
// at its next wait for the client's bytes.
func (s *stream) ReadClientOnEngine() {
	d, ok := s.down.(*h1Stream)
	if !ok || len(s.filters) != 1 || !tunnel.Pluggable(d.c.nc) {
		return
	}
	s.handoffMu.Lock()
	if s.pumpGone || s.handoff != nil || s.goAway.Load() || s.aborted() {
		s.handoffMu.Unlock()
		return
	}
	s.readsOffered = true
	s.handoffMu.Unlock()
	d.c.wakeReader() // the pump's wait for client bytes returns; it takes the offer
}

// takeClientReads runs on the decode pump, whose wait for the client's bytes the offer cut short:
// it starts the engine's reads and lets the connection's goroutine go. It reports false when
// there is no offer to take (the pump then ends as usual).
func (s *stream) takeClientReads(readErr error, pass func(p []byte) bool) bool {
	d := s.down.(*h1Stream)
	s.handoffMu.Lock()
	if !s.readsOffered || !isTimeout(readErr) || s.wasReset.Load() || s.ctx.Err() != nil {
		s.handoffMu.Unlock()
		return false
	}
	s.readsOffered = false
	d.c.nc.SetReadDeadline(time.Time{})
	cr := &clientReads{s: s, d: d, limit: int(s.decoderLimit.Load()), pass: pass, started: make(chan struct{})}
	cr.pump.Init(cr.run)
	if err := cr.startReaderLocked(); err != nil {
		s.handoffMu.Unlock()
		s.m.log.Error("the tunnel engine refused a client's reads", "err", err)
		s.pumpRequest() // the pump goes on as it was
		return true
	}
	s.clientReads.Store(cr) // from now on a reset asks whoever reads the socket to end
	s.handoffMu.Unlock()
	s.left = true
	d.c.life.leave()
	close(cr.started) // the pump may run, and end the stream and the connection, from here on
	return true
}

// startReaderLocked has the engine read the client. Called with the stream's handoffMu held.
func (cr *clientReads) startReaderLocked() error {
	cr.mu.Lock()
	cr.ended, cr.endErr, cr.doneCh = false, nil, nil
	cr.mu.Unlock()
	rd, err := tunnel.DefaultEngine().StartReader(tunnel.ReaderOptions{Conn: cr.d.c.nc, Deliver: cr.deliver, Done: cr.done})
	if err != nil {
		return err
	}
	cr.rd = rd
	return nil
}

// reader is the engine's Reader, nil while the pump reads the client.
func (cr *clientReads) reader() *tunnel.Reader {
	cr.s.handoffMu.Lock()
	defer cr.s.handoffMu.Unlock()
	return cr.rd
}

// deliver queues what the engine read from the client, on the engine's goroutine: it never waits.
func (cr *clientReads) deliver(p []byte) bool {
	s := cr.s
	s.m.stats.CxRxBytes.Add(uint64(len(p))) // the engine reads past the connection's counting
	slab := buffer.GetSlab()                // p is one engine read: at most a slab
	n := copy(*slab, p)
	cr.mu.Lock()
	cr.queue = append(cr.queue, slab)
	cr.lens = append(cr.lens, n)
	cr.queued += n
	full := cr.queued >= cr.limit
	cr.paused = cr.paused || full
	cr.mu.Unlock()
	cr.pump.Ask()
	return !full
}

// done is the Reader's Done: the client's side ended, or the reads were aborted (by a reset, the
// server's close, or the pump taking them back).
func (cr *clientReads) done(why error) {
	cr.mu.Lock()
	cr.ended, cr.endErr = true, why
	ch := cr.doneCh
	cr.mu.Unlock()
	if ch != nil {
		close(ch)
	}
	cr.pump.Ask()
}

// run is a run of the on-demand pump: it passes on what the engine read and, if there was
// something, takes the client's reads back from the engine; once the client's side has ended it
// ends the stream and the connection.
func (cr *clientReads) run() (ended bool) {
	<-cr.started
	got, end, why := cr.drain()
	if !end && !got {
		return false
	}
	if !end {
		// The client talks: this goroutine reads it while it does.
		if rd := cr.reader(); rd != nil {
			rd.Abort(errToPump)
		}
		cr.mu.Lock()
		var ch chan struct{}
		if !cr.ended {
			cr.doneCh = make(chan struct{})
			ch = cr.doneCh
		}
		cr.mu.Unlock()
		if ch != nil {
			<-ch
		}
		_, _, why = cr.drain() // what the engine read before its Done
	}
	if why != errToPump {
		cr.finish(why)
		return true
	}
	return cr.readUntilQuiet()
}

// drain passes the queue on, resuming the engine's reads if they were paused, and reports whether
// it passed anything and whether the Reader's Done has come (and what it said).
func (cr *clientReads) drain() (got, ended bool, why error) {
	var b buffer.Buffer
	s := cr.s
	for {
		cr.mu.Lock()
		q, lens := cr.queue, cr.lens
		cr.queue, cr.lens, cr.queued = nil, nil, 0
		resume := cr.paused && !cr.ended
		cr.paused = false
		ended, why = cr.ended, cr.endErr
		cr.mu.Unlock()
		for i, slab := range q {
			s.touch()
			s.upStats.BytesUp.Add(uint64(lens[i]))
			if !s.aborted() {
				b.SetBytes((*slab)[:lens[i]])
				s.dec.pushData(&b, false)
			}
			buffer.PutSlab(slab)
		}
		if resume {
			if rd := cr.reader(); rd != nil {
				rd.Resume()
			}
		}
		got = got || len(q) > 0
		if len(q) == 0 {
			return got, ended, why
		}
	}
}

// readUntilQuiet reads the client on the pump's goroutine, as the decode pump did, until the
// client's side ends (it then ends the stream: true) or the client has been quiet for
// quietBeforeEngine (the engine then reads it again, and the goroutine goes: false).
func (cr *clientReads) readUntilQuiet() bool {
	s, d := cr.s, cr.d
	s.handoffMu.Lock()
	cr.rd = nil // a reset now closes the socket, which ends the reads below
	reset := s.wasReset.Load()
	s.handoffMu.Unlock()
	if reset {
		cr.finish(errStreamEnded)
		return true
	}
	if d.raw == nil {
		d.raw = tunnel.NewSlabReader(d.c.nc)
	}
	for {
		d.c.nc.SetReadDeadline(time.Now().Add(quietBeforeEngine))
		err := d.raw.Stream(&d.stop, cr.pass)
		if err == nil {
			err = io.EOF
		}
		if !isTimeout(err) || s.ctx.Err() != nil || s.aborted() {
			cr.finish(err)
			return true
		}
		if time.Since(time.Unix(0, s.activity.Load())) < quietBeforeEngine {
			continue
		}
		d.c.nc.SetReadDeadline(time.Time{})
		s.handoffMu.Lock()
		if s.wasReset.Load() {
			s.handoffMu.Unlock()
			cr.finish(errStreamEnded)
			return true
		}
		err = cr.startReaderLocked()
		s.handoffMu.Unlock()
		if err == nil {
			return false
		}
	}
}

// finish is what the connection's goroutine would have done from the client's end on: pass the
// end on, wait for the stream's end, end the stream and then the connection (which closes the
// socket: nothing reads it any more).
func (cr *clientReads) finish(why error) {
	s := cr.s
	if why == nil {
		why = io.EOF
	}
	if !s.aborted() {
		s.pumpEnded(why, true)
	}
	select {
	case <-s.doneChan():
	case <-s.ctx.Done():
	}
	s.end()
	cr.d.c.life.end()
}

// abortReads ends the engine's reads of the stream's client, whose Done then ends the stream, and
// reports true; false when the engine does not read the client (nothing then stops a socket
// close).
func (s *stream) abortReads(why error) bool {
	cr := s.clientReads.Load()
	if cr == nil {
		return false
	}
	rd := cr.reader()
	if rd == nil {
		return false
	}
	rd.Abort(why)
	return true
}
