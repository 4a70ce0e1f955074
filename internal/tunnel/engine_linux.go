//go:build linux

package tunnel

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/internal/rawsys"
	"github.com/switchyard-proxy/switchyard/internal/uring"
)

// Engine carries tunnels between two plain TCP sockets without a goroutine per tunnel. At Start
// it takes the sockets out of Go's poller (it keeps duplicates of their descriptors and closes
// the net.Conns), and puts them in an epoll set of its own. A loop goroutine per set (waiting in
// epoll_wait, or in Go's poller when it has many tunnels: see loopBlockMax) wakes when some are
// ready and moves their bytes with non-blocking reads and writes (in io_uring batches when many
// are ready: see runBatch) through buffers it owns; a destination that is full keeps the
// unwritten rest in a pooled slab until epoll says it is writable, and its source is not read
// meanwhile (backpressure). Everything about a tunnel happens on its loop's goroutine, so an idle
// tunnel costs its epoll registrations and a small record: no goroutine, no buffer, no Go poller
// state.
//
// The loops are started when the first tunnel arrives and end when their last tunnel ends, so an
// idle process has no engine goroutine.
type Engine struct {
	loops []*loop
	next  atomic.Uint32
}

var (
	defaultEngine     *Engine
	defaultEngineOnce sync.Once
)

// DefaultEngine is the process's engine, with one loop per CPU the Go scheduler uses.
func DefaultEngine() *Engine {
	defaultEngineOnce.Do(func() { defaultEngine = NewEngine(runtime.GOMAXPROCS(0)) })
	return defaultEngine
}

// NewEngine returns an engine with n loops (at least one).
func NewEngine(n int) *Engine { return newEngine(n, true) }

// newEngine returns an engine whose loops batch through io_uring where the kernel allows it, if
// ring is set.
func newEngine(n int, ring bool) *Engine {
	e := &Engine{loops: make([]*loop, max(n, 1))}
	for i := range e.loops {
		e.loops[i] = &loop{dirs: map[uint64]*direction{}, wantRing: ring}
	}
	return e
}

// Pluggable reports whether c can be carried by the engine: a plain TCP socket, perhaps under
// wrappers that pass bytes through unchanged and expose NetConn (TLS is not such a wrapper).
func Pluggable(c net.Conn) bool {
	_, ok := tcpOf(c)
	return ok
}

func tcpOf(c net.Conn) (*net.TCPConn, bool) {
	for {
		switch v := c.(type) {
		case *net.TCPConn:
			return v, true
		case interface{ NetConn() net.Conn }:
			if isTLS(c) {
				return nil, false
			}
			c = v.NetConn()
		default:
			return nil, false
		}
	}
}

func isTLS(c net.Conn) bool {
	_, ok := c.(*tls.Conn)
	return ok
}

// Tunnel is one tunnel in the engine. Its fields belong to its loop's goroutine, except where
// noted.
type Tunnel struct {
	loop  *loop
	ab    direction // A → B
	ba    direction // B → A
	moved func(toB bool, n int)
	done  func(why error)
	// reader is a Reader's destination: ab's bytes go to it instead of a socket (ba is unused).
	reader *readerDest
	gone   atomic.Bool // over, as seen from other goroutines
	ended  uint8       // directions that have ended
	splice bool
	goAway bool
	over   bool
}

// direction is one way of a tunnel: bytes read from src are written to dst. src is the
// descriptor this direction registered in the epoll set; dst is the other direction's src.
// Fields are ordered, and the offsets sized, so that a Tunnel fits a 256-byte allocation: it is
// most of what an idle tunnel costs.
type direction struct {
	t        *Tunnel
	peer     *direction
	id       uint64
	src, dst int
	ft       FrameTracker // frames written to dst

	// Bytes read but not yet written because dst was full: the rest of a slab, or a pipe.
	out            *[]byte
	pipe           *pipe
	outOff, outEnd int32 // within a slab
	inPipe         int32 // at most the pipe's capacity

	toB      bool
	readable bool // an edge said src has bytes (or EOF) that were not read yet
	ending   bool // src reported hang-up or error: read on to EOF, never stop at a short read
	ended    bool
	track    bool
	masked   bool // a Close toward dst must be masked (dst is the server)
	closed   bool // the GoAway Close (or FIN) went to dst; later bytes are dropped
	shutDst  bool // dst's write side was shut
	shutNext bool // shut dst's write side once the pending bytes are out
	queued   bool // in the loop's ready list
	bulk     bool // the last read filled the buffer: bulk data, for run and its splices
	paused   bool // a Reader's Deliver asked for no more until Resume
}

// ErrEngineClosed is the reason of a tunnel whose sockets failed under the engine.
var ErrEngineClosed = errors.New("tunnel: socket closed under the engine")

// Start hands a tunnel to the engine, which owns the sockets from then on: it closes opt.A's and
// opt.B's sockets (closing the net.Conns again later is harmless) and carries duplicates of them
// until Done. On error the caller keeps both sockets.
func (e *Engine) Start(opt Options) (*Tunnel, error) {
	a, okA := tcpOf(opt.A)
	b, okB := tcpOf(opt.B)
	if !okA || !okB {
		return nil, errors.New("tunnel: the engine carries plain TCP sockets only")
	}
	fa, err := dupSocket(a)
	if err != nil {
		return nil, err
	}
	fb, err := dupSocket(b)
	if err != nil {
		syscall.Close(fa)
		return nil, err
	}
	t := &Tunnel{loop: e.loops[int(e.next.Add(1))%len(e.loops)], moved: opt.Moved, done: opt.Done, splice: !opt.NoSplice}
	t.ab = direction{t: t, peer: &t.ba, toB: true, src: fa, dst: fb, track: opt.WebSocket, ft: opt.TowardB, masked: true}
	t.ba = direction{t: t, peer: &t.ab, toB: false, src: fb, dst: fa, track: opt.WebSocket, ft: opt.TowardA}
	// Out of Go's poller: its registration goes with the close, the socket stays with our copy.
	a.Close()
	b.Close()
	if err := t.loop.add(&t.ab, &t.ba); err != nil {
		syscall.Close(fa)
		syscall.Close(fb)
		return nil, err
	}
	return t, nil
}

// readerDest is where a Reader's bytes go.
type readerDest struct {
	deliver func(p []byte) bool
	sender  Sender
}

// Reader is a socket the engine reads for a destination that is not a socket (see StartReader).
type Reader struct{ t *Tunnel }

// StartReader has the engine read opt.Conn's socket and pass what it reads to opt.Deliver, so
// that no goroutine waits on the socket between reads: for the upstream side of a tunnel whose
// client is an HTTP/2 stream. The engine reads the socket's own descriptor (a duplicate would cost
// a descriptor per tunnel), which stays in Go's poller: opt.Conn is still the caller's to write
// to and half-close, but not to close before Done (Abort, then close in or after Done), as the
// descriptor's number could go to another socket under the engine's reads. On error the caller
// keeps reading the socket.
func (e *Engine) StartReader(opt ReaderOptions) (*Reader, error) {
	tc, ok := tcpOf(opt.Conn)
	if !ok {
		return nil, errors.New("tunnel: the engine reads plain TCP sockets only")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	if err := rc.Control(func(sfd uintptr) { fd = int(sfd) }); err != nil {
		return nil, err
	}
	t := &Tunnel{loop: e.loops[int(e.next.Add(1))%len(e.loops)], done: opt.Done,
		reader: &readerDest{deliver: opt.Deliver, sender: opt.Sender}}
	t.ab = direction{t: t, peer: &t.ba, src: fd, dst: -1}
	t.ba = direction{t: t, peer: &t.ab, src: -1, dst: fd, ended: true}
	t.ended = 1
	t.loop.mu.Lock()
	t.loop.readers++ // before add starts the loop: it must not choose to block
	t.loop.mu.Unlock()
	if err := t.loop.add(&t.ab); err != nil {
		t.loop.mu.Lock()
		t.loop.readers--
		t.loop.mu.Unlock()
		return nil, err
	}
	return &Reader{t: t}, nil
}

// Resume reads on after Deliver asked for a pause.
func (r *Reader) Resume() {
	t := r.t
	if t.gone.Load() {
		return
	}
	t.loop.do(func() {
		if t.over || !t.ab.paused {
			return
		}
		t.ab.paused = false
		if t.ab.readable {
			t.loop.requeue(&t.ab)
		}
	})
}

// Abort stops reading: the engine lets the descriptor go, and Done follows with why. The socket
// itself is left as it is, for its owner to close.
func (r *Reader) Abort(why error) { r.t.Abort(why) }

// dupSocket duplicates c's descriptor (close-on-exec, and non-blocking like Go's own).
func dupSocket(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		// Raw: it never blocks, and an announced system call wakes sysmon (see rawsys).
		nfd, derr = rawsys.Dup(int(fd))
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	// Non-blocking already: O_NONBLOCK belongs to the open file description, which the duplicate
	// shares with Go's descriptor (Go opens every socket non-blocking).
	return nfd, nil
}

// GoAway ends the tunnel cleanly, as at the end of a drain: a WebSocket Close 1001 toward each
// side, placed between frames, or a FIN for other tunnels, then a half-close. Bytes that arrive
// afterwards are dropped; the tunnel ends when both peers have closed their sides.
func (t *Tunnel) GoAway() {
	t.loop.do(func() {
		if t.over {
			return
		}
		t.goAway = true
		t.ab.run()
		t.ba.run()
	})
}

// Abort tears the tunnel down at once: both sockets are closed and Done follows with why.
func (t *Tunnel) Abort(why error) {
	if t.gone.Load() {
		return
	}
	t.loop.do(func() { t.abort(why) })
}

// abort ends the tunnel on its loop.
func (t *Tunnel) abort(why error) {
	if t.over {
		return
	}
	if why == nil {
		why = ErrEngineClosed
	}
	if t.reader == nil { // a Reader's socket is its owner's to shut and close
		rawsys.Shutdown(t.ab.src, syscall.SHUT_RDWR)
		rawsys.Shutdown(t.ba.src, syscall.SHUT_RDWR)
	}
	t.finish(why)
}

// finish releases the tunnel: its descriptors (which takes them out of the epoll set), buffers
// and pipes, then tells Done why (nil: both directions ended).
func (t *Tunnel) finish(why error) {
	t.over = true
	t.gone.Store(true)
	if t.reader != nil {
		t.loop.remove(&t.ab)
		t.loop.mu.Lock()
		t.loop.readers--
		t.loop.mu.Unlock()
		// The descriptor is the owner's: out of the set, and left open.
		syscall.EpollCtl(t.loop.epfd, syscall.EPOLL_CTL_DEL, t.ab.src, nil)
	} else {
		t.loop.remove(&t.ab, &t.ba)
	}
	for _, d := range []*direction{&t.ab, &t.ba} {
		d.ended = true
		if d.out != nil {
			buffer.PutSlab(d.out)
			d.out = nil
		}
		if d.pipe != nil {
			d.pipe.close() // it may hold bytes: never pooled again
			d.pipe = nil
		}
	}
	if t.reader == nil {
		t.loop.closeFD(t.ab.src)
		t.loop.closeFD(t.ba.src)
	}
	if t.done != nil {
		t.done(why)
	}
}

// end marks the direction over: its source said EOF.
func (d *direction) end() {
	d.ended = true
	d.t.ended++
	if d.t.ended == 2 {
		d.t.finish(nil)
	}
}

// pending reports whether bytes wait for dst to become writable.
func (d *direction) pending() bool { return d.out != nil || d.inPipe > 0 }

// flush writes what waits for dst. It reports whether everything went (false: wait for EPOLLOUT,
// or the tunnel was aborted).
func (d *direction) flush() bool {
	for d.out != nil {
		n, err := rawsys.Write(d.dst, (*d.out)[d.outOff:d.outEnd])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			d.t.abort(err)
			return false
		}
		d.outOff += int32(n)
		if d.outOff == d.outEnd {
			buffer.PutSlab(d.out)
			d.out = nil
		}
	}
	for d.inPipe > 0 {
		n, err := rawsys.Splice(d.pipe.r, d.dst, int(d.inPipe), spliceMove|spliceNonblock)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			d.t.abort(err)
			return false
		}
		d.inPipe -= int32(n)
	}
	if d.shutNext && !d.shutDst {
		d.shutDst = true
		rawsys.Shutdown(d.dst, syscall.SHUT_WR)
	}
	return true
}

// write writes p to dst without blocking; what does not fit waits in a slab.
func (d *direction) write(p []byte) bool {
	for len(p) > 0 {
		n, err := rawsys.Write(d.dst, p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			d.out = buffer.GetSlab()
			d.outOff, d.outEnd = 0, int32(copy(*d.out, p))
			return false
		case err != nil:
			d.t.abort(err)
			return false
		}
		p = p[n:]
	}
	return true
}

// run moves the direction's bytes as far as it can without blocking. It runs on the loop only.
func (d *direction) run() {
	t := d.t
	buf := t.loop.buf
	for reads := 0; !t.over && !d.ended; reads++ {
		if d.pending() && !d.flush() {
			return // dst is full: EPOLLOUT brings us back
		}
		if d.pipe != nil && d.inPipe == 0 {
			putPipe(d.pipe) // a splice that waited for dst is over
			d.pipe = nil
		}
		if t.over {
			return
		}
		if t.goAway && !d.closed && (!d.track || d.ft.AtBoundary()) {
			d.sendClose()
			continue
		}
		if !d.readable || d.paused {
			return
		}
		if reads == loopReadsPerTurn {
			t.loop.requeue(d) // the others' turn; more next round
			return
		}
		n, err := rawsys.Read(d.src, buf)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			d.readable = false
			return
		case err != nil:
			t.abort(err)
			return
		case n == 0:
			// The source ended its side: pass the half-close on, and the direction is over. When
			// the other side ended already, the close that follows sends the FIN (dst has no
			// unread bytes, so it is a FIN and not a reset), and a shutdown would only cost a call.
			if d.dst >= 0 && !d.shutDst && !d.peer.ended {
				d.shutDst = true
				rawsys.Shutdown(d.dst, syscall.SHUT_WR)
			}
			d.end()
			return
		}
		d.bulk = n == len(buf)
		if d.closed {
			continue // after our Close nothing may follow it
		}
		if t.reader != nil {
			if n < len(buf) && !d.ending {
				d.readable = false // as below: the socket is drained
			}
			d.paused = !t.reader.deliver(buf[:n])
			continue
		}
		if t.moved != nil {
			t.moved(d.toB, n)
		}
		if d.track {
			d.ft.Feed(buf[:n])
		}
		if !d.write(buf[:n]) {
			return
		}
		if n == len(buf) && d.spliceOK() {
			// A full read: bulk data is streaming. Move what follows socket to socket through a
			// pipe, without copying it through user space.
			if !d.splice() {
				return
			}
			continue
		}
		if n < len(buf) && !d.ending {
			// A short read drained the socket (edge-triggered: new bytes raise a new edge). Not
			// so for a FIN that came with the bytes: it raises none, so after a hang-up the pump
			// reads on until EOF. The loop's top still runs once (a GoAway may be due now).
			d.readable = false
		}
	}
}

// sendClose sends the drain's Close (WebSocket) toward dst and half-closes it once out.
func (d *direction) sendClose() {
	d.closed = true
	d.shutNext = true
	if d.track && !d.write(CloseFrame(CloseGoingAway, d.masked)) {
		return // the rest goes with flush, then the half-close
	}
	d.flush()
}

// loop is one epoll set and the goroutine that serves it while it holds tunnels.
type loop struct {
	mu      sync.Mutex
	opened  bool     // epfd and wakeFD exist (from the first tunnel on)
	epfd    int      // the epoll set
	polled  *os.File // a duplicate of epfd in Go's poller, while the loop waits there
	rc      syscall.RawConn
	wakeFD  int // an eventfd in the set, to wake the loop for work from other goroutines
	dirs    map[uint64]*direction
	nextID  uint64
	readers int // Readers in the set: the loop waits in Go's poller while there are any
	running bool
	inbox   []func() // work from other goroutines (Abort, GoAway), run on the loop

	// Owned by the loop's goroutine.
	events []syscall.EpollEvent
	buf    []byte
	slab   *[]byte      // buf's pooled slab
	ready  []*direction // directions to serve this round: events, and turns left over
	spare  []*direction // the ready list's other half, swapped in each round
	work   []func()

	// Batching (see runBatch): nil ring where io_uring is not available.
	wantRing  bool
	batched   atomic.Uint64 // reads made in batches, for tests
	ring      *uring.Ring
	arena     []byte       // one read buffer per ring entry, mapped while the loop runs
	slots     []*direction // the directions of this round's reads, by ring tag
	res       []int32      // the results of a submitted batch, by ring tag
	sent      []int32      // the bytes each slot's send carried (0: none)
	sendStart []int32      // where in its slot a Sender's send starts
	later     []int        // slots whose Sender could not send in this batch: Deliver after it
	laterFull []bool       // by slot: its read filled the buffer
	inBatch   bool         // descriptors to close wait for the batch to end: it may still name them
	closing   []int
	waitFn    func(fd uintptr) bool
	ran       time.Time     // when the loop last parked or yielded
	blocking  bool          // the loop waits in epoll_wait itself (few tunnels), not in Go's poller
	switches  atomic.Uint32 // changes of the way it waits, for tests
}

// loopYieldAfter is how long a loop that always has work runs before it lets other goroutines
// have its processor. Its system calls are raw (see rawsys), so the scheduler never sees it
// blocked, and the signal that would preempt it lands inside a system call nearly every time,
// where a goroutine cannot be preempted; and what it would yield to needs the network polled,
// which the scheduler does only when it has nothing else to run. Without parking now and then, a
// saturated loop starved the admin endpoint for over ten seconds (TestLoadFairness).
const loopYieldAfter = time.Millisecond

// epollET is EPOLLET as the uint32 epoll_event wants it (package syscall spells it negative).
const epollET = 1 << 31

// loopReadsPerTurn bounds the reads one direction makes before the others' turn.
const loopReadsPerTurn = 4

// loopBufSize is the loop's read buffer: a pooled slab's size, so that what a full destination
// left unwritten always fits the slab it waits in.
const loopBufSize = buffer.SlabSize

// loopEvents is the most events one epoll_wait returns, and the most reads one batch makes.
const loopEvents = 128

// wakeID is the wake eventfd's id in the set; tunnel directions count from 1.
const wakeID = 0

func (l *loop) open() error {
	if l.opened {
		return nil // (a descriptor number says nothing: 0 is free in a process started without stdin)
	}
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	const efdCloexec, efdNonblock = 0x80000, 0x800
	wfd, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, efdCloexec|efdNonblock, 0)
	if errno != 0 {
		syscall.Close(fd)
		return errno
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | epollET, Fd: wakeID}
	if err := syscall.EpollCtl(fd, syscall.EPOLL_CTL_ADD, int(wfd), &ev); err != nil {
		syscall.Close(fd)
		syscall.Close(int(wfd))
		return err
	}
	// Non-blocking, so that Go's poller takes its duplicates (epoll_wait itself heeds only its
	// timeout).
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		syscall.Close(int(wfd))
		return err
	}
	l.epfd, l.wakeFD, l.opened = fd, int(wfd), true
	l.events = make([]syscall.EpollEvent, loopEvents)
	if l.wantRing {
		if r, err := uring.New(loopEvents); err == nil {
			l.ring = r
			l.slots = make([]*direction, 0, r.Size())
			l.res = make([]int32, r.Size())
			l.sent = make([]int32, r.Size())
			l.sendStart = make([]int32, r.Size())
			l.laterFull = make([]bool, r.Size())
		}
	}
	l.waitFn = l.serveOnce
	return nil
}

func (l *loop) add(ds ...*direction) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.open(); err != nil {
		return err
	}
	for i, d := range ds {
		l.nextID++
		d.id = l.nextID
		l.dirs[d.id] = d
		// EPOLLOUT too: with edge triggering it fires only when a full send buffer drains.
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | epollET,
			Fd: int32(uint32(d.id)), Pad: int32(uint32(d.id >> 32))}
		if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, d.src, &ev); err != nil {
			for _, u := range ds[:i+1] {
				delete(l.dirs, u.id)
				syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, u.src, nil)
			}
			return err
		}
	}
	if !l.running {
		l.running = true
		l.slab = buffer.GetSlab() // from the pool: under handshake load a loop stops and starts often
		l.buf = *l.slab
		if l.ring != nil {
			l.mapArena()
		}
		go l.run()
	}
	return nil
}

// remove forgets the directions; their descriptors are about to close, which takes them out of
// the set. Called on the loop.
func (l *loop) remove(ds ...*direction) {
	l.mu.Lock()
	for _, d := range ds {
		delete(l.dirs, d.id)
	}
	l.mu.Unlock()
}

// do runs f on the loop's goroutine.
func (l *loop) do(f func()) {
	l.mu.Lock()
	l.inbox = append(l.inbox, f)
	l.mu.Unlock()
	l.wake()
}

// wake makes the loop's epoll set ready, so a parked loop runs.
func (l *loop) wake() {
	one := [8]byte{1}
	syscall.Write(l.wakeFD, one[:])
}

// requeue puts a direction that still has bytes at the back of the ready list.
func (l *loop) requeue(d *direction) {
	if !d.queued {
		d.queued = true
		l.ready = append(l.ready, d)
	}
}

// Waiting. A loop with many tunnels waits in Go's poller (a duplicate of its epoll descriptor is
// registered there): the scheduler runs it like any goroutine when a processor is free, and
// under load it seldom waits at all. A loop with one or two tunnels waits in epoll_wait itself,
// a blocking system call: each message then costs one thread wake-up and nothing else, where
// through the poller the scheduler's idle path (waking and parking threads that look for work)
// cost more than the message (c=1 echo: 70 → 42 µs of CPU and 137 → 81 µs p50 per round trip).
// With many tunnels the same blocking wait loses: a thread that returns from it must find a free
// processor, and under load there is none (handshakes: a third more CPU, twice the latency).
// The count has a gap between the two thresholds, so that a loop near one does not flip at
// every message.
const (
	loopBlockMax = 2 // at most this many tunnels: wait in epoll_wait
	loopPollMin  = 4 // at least this many: wait in the poller
)

// A Reader's socket stays in Go's poller too (its owner writes to it there), so each of its
// messages is an event in both sets: a loop blocked in epoll_wait would be a second thread woken
// for it (HTTP/2 echo at c=1: 52 → 78 µs of CPU per round trip), where in the poller both events
// come out of the same wait. A loop with a Reader waits in the poller however few tunnels it has.

// shouldBlock reports which way the loop should wait now.
func (l *loop) shouldBlock(tunnels, readers int) bool {
	if readers > 0 {
		return false
	}
	if l.blocking {
		return tunnels < loopPollMin
	}
	return tunnels <= loopBlockMax
}

// poll registers a duplicate of the epoll descriptor in Go's poller, for the loop to park there.
// Only a duplicate can be taken out again without closing the set.
func (l *loop) poll() error {
	if l.polled != nil {
		return nil
	}
	fd, _, e := syscall.RawSyscall(syscall.SYS_FCNTL, uintptr(l.epfd), syscall.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return e
	}
	f := os.NewFile(fd, "tunnel-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	l.polled, l.rc = f, rc
	return nil
}

// unpoll takes the duplicate out of Go's poller, which would otherwise wake for every event the
// loop takes from epoll_wait itself.
func (l *loop) unpoll() {
	if l.polled != nil {
		l.polled.Close()
		l.polled, l.rc = nil, nil
	}
}

// serveOnce is the loop's body, run as the poller callback of the epoll descriptor: it handles
// the set's ready events, the inbox and the ready list, then returns false to park until the set
// has more. Staying inside one RawConn.Read keeps the poller's readiness across iterations (a new
// Read would clear it and need another epoll_wait to be safe). It returns true, ending the Read,
// when the loop has no tunnels left.
func (l *loop) serveOnce(fd uintptr) bool {
	l.ran = time.Now()
	wait := false
	for {
		l.mu.Lock()
		l.work, l.inbox = l.inbox, l.work[:0]
		empty := len(l.dirs) == 0 && len(l.work) == 0
		l.mu.Unlock()
		if empty {
			return true
		}
		for i, f := range l.work {
			f()
			l.work[i] = nil
		}
		var n int
		var err error
		if wait {
			// Blocking, and announced: the processor goes to other goroutines meanwhile.
			n, err = syscall.EpollWait(l.epfd, l.events, -1)
			l.ran = time.Now()
			wait = false
		} else {
			n, err = rawsys.Poll(l.epfd, l.events)
		}
		if err != nil && err != syscall.EINTR {
			n = 0
		}
		for _, ev := range l.events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == wakeID {
				var b [8]byte
				syscall.Read(l.wakeFD, b[:])
				continue
			}
			l.mu.Lock()
			d := l.dirs[id]
			l.mu.Unlock()
			if d == nil {
				continue
			}
			if ev.Events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				d.readable = true
				if ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
					d.ending = true
				}
				l.requeue(d)
			}
			if ev.Events&(syscall.EPOLLOUT|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 && d.peer.pending() {
				l.requeue(d.peer) // d's socket is the peer's destination: it can take more
			}
		}
		// One round: the directions events named, and those that had more than their turn.
		ready := l.ready
		l.ready = l.spare[:0]
		l.runBatch(ready)
		clear(ready)
		l.spare = ready[:0]
		l.mu.Lock()
		idle, empty, tunnels, readers := len(l.inbox) == 0, len(l.dirs) == 0, len(l.dirs)/2, l.readers
		l.mu.Unlock()
		if empty && idle {
			return true // the last tunnel ended: the loop goes away
		}
		if n < len(l.events) && len(l.ready) == 0 && idle {
			// Drained: wait for more, where the tunnel count says (run switches).
			if l.blocking != l.shouldBlock(tunnels, readers) {
				return true
			}
			if l.blocking {
				wait = true
				continue
			}
			return false // park (events that came meanwhile have already woken the poller)
		}
		if l.blocking && time.Since(l.ran) > loopYieldAfter {
			runtime.Gosched()
			l.ran = time.Now()
			continue
		}
		if time.Since(l.ran) > loopYieldAfter {
			// Park, with a wake-up already on its way: the goroutine goes back through the
			// scheduler, which polls the network on the way (a Gosched would not), and the
			// wake-up brings the loop back for the work it left.
			l.wake()
			return false
		}
	}
}

// run serves the loop's tunnels until it has none.
func (l *loop) run() {
	for {
		l.mu.Lock()
		if len(l.dirs) == 0 && len(l.inbox) == 0 {
			l.running = false
			buffer.PutSlab(l.slab) // an idle process keeps no loop buffer
			l.buf, l.slab = nil, nil
			l.unmapArena()
			l.mu.Unlock()
			return
		}
		tunnels, readers := len(l.dirs)/2, l.readers
		l.mu.Unlock()
		block := l.shouldBlock(tunnels, readers) || l.poll() != nil
		if block != l.blocking {
			l.switches.Add(1)
		}
		l.blocking = block
		if block {
			l.unpoll()
			l.serveOnce(0)
			continue
		}
		l.rc.Read(l.waitFn)
	}
}

// Batching. On a virtual machine a system call's entry and exit cost about as much as the TCP
// work of a small message inside it, so a loop with many tunnels ready makes its reads in one
// io_uring batch and its writes in a second (uring.Ring: MSG_DONTWAIT, so every operation
// completes inside the one io_uring_enter). Each read lands in its own slot of an arena, as the
// writes that follow still need the bytes. Only the common case goes this way: a direction that
// is readable, with nothing waiting for its destination and no drain under way. Everything else,
// and a round with a single direction, goes through run, one call at a time.

// runBatch serves one round's directions.
func (l *loop) runBatch(ds []*direction) {
	if l.ring == nil || len(ds) < 2 {
		for _, d := range ds {
			d.queued = false
			d.run()
		}
		return
	}
	l.inBatch = true
	slots := l.slots[:0]
	for _, d := range ds {
		d.queued = false
		if !d.batchable() {
			d.run()
			continue
		}
		if len(slots) == cap(slots) {
			l.requeue(d) // next round
			continue
		}
		i := len(slots)
		l.ring.Recv(d.src, l.recvBuf(i, d), uint64(i))
		l.res[i] = -int32(syscall.EINTR) // should the batch fail: try again next round
		l.sent[i] = 0
		slots = append(slots, d)
	}
	if err := submitRing(l.ring, l.res); err != nil {
		l.dropRing()
	}
	l.batched.Add(uint64(len(slots)))
	for i, d := range slots {
		l.readDone(i, d)
	}
	if l.ring != nil && l.ring.Queued() > 0 {
		if err := submitRing(l.ring, l.res); err != nil {
			// Whether those bytes went is unknown: the tunnels that sent cannot go on.
			l.dropRing()
			for i, d := range slots {
				if l.sent[i] > 0 {
					if d.t.reader != nil {
						d.t.reader.sender.End(l.sentBytes(i), -int32(syscall.EIO))
						l.sent[i] = 0
					}
					d.t.abort(err)
				}
			}
		}
	}
	for i, d := range slots {
		if l.sent[i] > 0 {
			l.writeDone(i, d)
		}
	}
	// Reads whose destination was busy with this batch's sends (a Sender's connection carries
	// several tunnels) go to Deliver now that the sends are over.
	for _, i := range l.later {
		if d := slots[i]; !d.t.over {
			l.deliverRead(d, l.slot(i)[SendHeadroom:SendHeadroom+int(l.res[i])], l.laterFull[i])
		}
	}
	l.later = l.later[:0]
	clear(slots)
	l.inBatch = false
	for _, fd := range l.closing {
		rawsys.Close(fd)
	}
	l.closing = l.closing[:0]
}

// submitRing runs a batch; tests replace it to make a ring fail.
var submitRing = (*uring.Ring).Submit

// batchable reports whether d's next step is a plain read and write.
func (d *direction) batchable() bool {
	t := d.t
	return d.readable && !d.paused && !d.bulk && !t.over && !d.ended && !d.pending() && d.pipe == nil && !t.goAway && !d.closed
}

// slot is batch slot i's buffer.
func (l *loop) slot(i int) []byte { return l.arena[i*loopBufSize : (i+1)*loopBufSize] }

// recvBuf is where slot i's read for d goes: the whole slot, or after the headroom a Sender may
// put its framing in.
func (l *loop) recvBuf(i int, d *direction) []byte {
	if r := d.t.reader; r != nil && r.sender != nil {
		return l.slot(i)[SendHeadroom:]
	}
	return l.slot(i)
}

// sentBytes is what slot i's send carried.
func (l *loop) sentBytes(i int) []byte {
	start := int(l.sendStart[i])
	return l.slot(i)[start : start+int(l.sent[i])]
}

// deliverRead passes a Reader's bytes to Deliver, and decides the direction's next turn.
func (l *loop) deliverRead(d *direction, p []byte, full bool) {
	if d.paused = !d.t.reader.deliver(p); !d.paused {
		l.afterWrite(d, full)
	} else if !full && !d.ending {
		d.readable = false
	}
}

// sendRead offers a Reader's bytes in slot i to its Sender, for this batch's sends; what the
// Sender cannot take now goes to Deliver after them.
func (l *loop) sendRead(i int, d *direction, n int, full bool) {
	s := d.t.reader.sender
	slot := l.slot(i)
	if fd, start, ok := s.Begin(slot, n); ok {
		out := slot[start : SendHeadroom+n]
		if l.ring.Send(fd, out, uint64(i)) == nil {
			l.sent[i], l.sendStart[i] = int32(len(out)), int32(start)
			return
		}
		s.End(out, -int32(syscall.EAGAIN)) // not sent: nothing stays reserved
	}
	l.later = append(l.later, i)
	l.res[i] = int32(n)
	l.laterFull[i] = full
}

// readDone handles slot i's read, as run would, and queues the write of what it read.
func (l *loop) readDone(i int, d *direction) {
	t := d.t
	if t.over {
		return
	}
	res := l.res[i]
	switch {
	case res == -int32(syscall.EINTR):
		l.requeue(d)
	case res == -int32(syscall.EAGAIN):
		d.readable = false
	case res < 0:
		t.abort(syscall.Errno(-res))
	case res == 0:
		if d.dst >= 0 && !d.shutDst && !d.peer.ended {
			d.shutDst = true
			rawsys.Shutdown(d.dst, syscall.SHUT_WR)
		}
		d.end()
	default:
		if t.reader != nil {
			full := int(res) == len(l.recvBuf(i, d))
			if t.reader.sender != nil && l.ring != nil {
				l.sendRead(i, d, int(res), full)
				return
			}
			l.deliverRead(d, l.recvBuf(i, d)[:res], full)
			return
		}
		p := l.slot(i)[:res]
		if t.moved != nil {
			t.moved(d.toB, int(res))
		}
		if d.track {
			d.ft.Feed(p)
		}
		if l.ring == nil || l.ring.Send(d.dst, p, uint64(i)) != nil {
			// The ring failed with the reads: write the old way.
			if d.write(p) {
				l.afterWrite(d, res == loopBufSize)
			}
			return
		}
		l.sent[i] = res
	}
}

// writeDone handles slot i's write: what did not fit waits in a slab for EPOLLOUT.
func (l *loop) writeDone(i int, d *direction) {
	t := d.t
	if t.reader != nil {
		// A Sender's send: it settles its own bytes, even for a tunnel that has ended.
		out := l.sentBytes(i)
		payload := l.slot(i)[SendHeadroom : int(l.sendStart[i])+len(out)]
		full := len(payload) == loopBufSize-SendHeadroom
		if t.reader.sender.End(out, l.res[i]) {
			if !t.over {
				l.afterWrite(d, full)
			}
		} else if !t.over {
			l.deliverRead(d, payload, full)
		}
		return
	}
	if t.over {
		return
	}
	n, res := l.sent[i], l.res[i]
	switch {
	case res == n:
		l.afterWrite(d, n == loopBufSize)
	case res >= 0 || res == -int32(syscall.EAGAIN) || res == -int32(syscall.EINTR):
		d.out = buffer.GetSlab()
		d.outOff, d.outEnd = 0, int32(copy(*d.out, l.slot(i)[max(res, 0):n]))
		if res == -int32(syscall.EINTR) {
			l.requeue(d) // the socket may have room: no EPOLLOUT edge would come
		}
	default:
		t.abort(syscall.Errno(-res))
	}
}

// afterWrite decides a direction's next turn once all the bytes of its read went on (full: the
// read filled its buffer).
func (l *loop) afterWrite(d *direction, full bool) {
	switch {
	case full:
		d.run() // a full read: more is there, perhaps bulk to splice
	case d.ending:
		l.requeue(d) // a FIN raises no new edge: read on to EOF
	default:
		d.readable = false
	}
}

// closeFD closes a tunnel's descriptor, after the batch if one is being made.
func (l *loop) closeFD(fd int) {
	if l.inBatch {
		l.closing = append(l.closing, fd)
		return
	}
	rawsys.Close(fd)
}

// dropRing gives batching up after an io_uring failure: the loop goes on one call at a time.
func (l *loop) dropRing() {
	l.ring.Close()
	l.ring = nil
}

// mapArena maps the batch slots' buffers: anonymous memory, so the pages a light load never
// touches cost nothing, and it goes back whole when the loop stops.
func (l *loop) mapArena() {
	mem, err := syscall.Mmap(-1, 0, l.ring.Size()*loopBufSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		l.dropRing()
		return
	}
	l.arena = mem
}

func (l *loop) unmapArena() {
	if l.arena != nil {
		syscall.Munmap(l.arena)
		l.arena = nil
	}
}

// Splicing. A direction whose reads fill the buffer is streaming bulk data: it moves the bytes
// that follow with splice(2), socket → pipe → socket, so they never cross into user space. A
// WebSocket direction splices only inside a frame's payload (the frame header was read and fed to
// the tracker), so it stays in step with the frames and GoAway can still close between them.

// spliceMin is the least payload worth a splice: below it the copy is as cheap as the pipe.
const spliceMin = 16 << 10

// spliceChunk is the most one splice moves: the default pipe capacity.
const spliceChunk = 64 << 10

func (d *direction) spliceOK() bool {
	if !d.t.splice || d.closed {
		return false
	}
	return !d.track || d.ft.PayloadLeft() >= spliceMin
}

// splice moves bulk bytes until the source has none ready, the frame's payload ends (WebSocket)
// or the direction's turn is over. It reports whether the direction may go on reading.
func (d *direction) splice() bool {
	if d.pipe = getPipe(); d.pipe == nil {
		return true // no pipe to be had: copying still works
	}
	for chunk := 0; chunk < loopReadsPerTurn; chunk++ {
		limit := spliceChunk
		if d.track {
			left := d.ft.PayloadLeft()
			if left == 0 {
				break
			}
			limit = int(min(left, uint64(limit)))
		}
		n, err := rawsys.Splice(d.src, d.pipe.w, limit, spliceMove|spliceNonblock)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN || n == 0 && err == nil {
			break // nothing ready, or EOF: the copy path sees it on its next read
		}
		if err != nil {
			d.t.abort(err)
			return false
		}
		d.inPipe = int32(n)
		if d.t.moved != nil {
			d.t.moved(d.toB, int(n))
		}
		if d.track {
			d.ft.Skip(uint64(n))
		}
		if !d.flush() {
			return false // dst is full (the pipe waits for EPOLLOUT) or the tunnel ended
		}
	}
	if d.pipe != nil {
		putPipe(d.pipe)
		d.pipe = nil
	}
	return true
}

// Splice flags (package syscall has no names for them).
const (
	spliceMove     = 0x1
	spliceNonblock = 0x2
)

// pipe is a kernel pipe that bulk bytes pass through. Only empty pipes go back to the pool.
type pipe struct{ r, w int }

// pipes keeps a few empty pipes, so a burst of bulk transfers does not open and close pipes for
// every splice run; the rest are closed.
var pipes = make(chan *pipe, 64)

func getPipe() *pipe {
	select {
	case p := <-pipes:
		return p
	default:
	}
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil
	}
	return &pipe{r: fds[0], w: fds[1]}
}

func putPipe(p *pipe) {
	select {
	case pipes <- p:
	default:
		p.close()
	}
}

func (p *pipe) close() {
	syscall.Close(p.r)
	syscall.Close(p.w)
}
