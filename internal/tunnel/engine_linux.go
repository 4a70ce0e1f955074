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
)

// Engine carries tunnels between two plain TCP sockets without a goroutine per tunnel. Each
// socket sits in an epoll set; a loop goroutine per set wakes when some are readable, and moves
// their bytes with non-blocking reads and writes into one buffer the loop owns. Only a direction
// whose destination is full gets a goroutine, which blocks on the write (backpressure: its source
// is not read meanwhile) and goes away once the direction is drained. An idle tunnel therefore
// costs two epoll registrations and its bookkeeping: no goroutine stack, no copy buffer.
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
func NewEngine(n int) *Engine {
	e := &Engine{loops: make([]*loop, max(n, 1))}
	for i := range e.loops {
		e.loops[i] = &loop{dirs: map[uint64]*direction{}}
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

// Tunnel is one tunnel in the engine.
type Tunnel struct {
	opt  Options
	loop *loop
	ab   direction // A → B
	ba   direction // B → A

	splice  bool // bulk bytes may go through a pipe (Options.NoSplice unset)
	goAway  atomic.Bool
	mu      sync.Mutex
	ended   int   // directions that have ended
	why     error // the abort's reason; nil for a clean end
	aborted bool
	done    bool
}

// Direction states. A direction is idle (waiting for its source to be readable), running (one
// pump, on the loop or on a goroutine of its own, moves its bytes), pending (running, and more
// readiness arrived meanwhile: the pump must read again before going idle), or ended.
const (
	stIdle int32 = iota
	stRunning
	stPending
	stEnded
)

// direction is one way of a tunnel: bytes read from src are written to dst.
type direction struct {
	t        *Tunnel
	id       uint64
	toB      bool
	src, dst *net.TCPConn
	srcRC    syscall.RawConn
	dstRC    syscall.RawConn
	srcFD    int // for registering only; afterwards go through srcRC
	state    atomic.Int32
	ending   atomic.Bool // the source reported hang-up or error: read on to EOF, never stop at a short read
	track    bool
	ft       FrameTracker // frames written to dst; owned by the running pump
	masked   bool         // a Close toward dst must be masked (dst is the server)
	closed   bool         // the GoAway Close (or FIN) went to dst; later bytes are dropped
	shutDown bool         // dst's write side was shut; owned by the running pump

	// The pump's current syscall, prepared once so that moving bytes allocates nothing.
	rbuf   []byte
	rn     int
	rerr   error
	wbuf   []byte
	werr   error
	block  bool // the write may park until dst is writable
	readFn func(fd uintptr) bool
	wrFn   func(fd uintptr) bool

	// Splicing: the pipe the direction holds while bulk data moves, and its current call.
	pipe     *pipe
	inPipe   int // bytes in the pipe, not yet written to dst
	spliceN  int // the most the current splice into the pipe may move
	spliceFn func(fd uintptr) bool
	drainFn  func(fd uintptr) bool
}

// ErrEngineClosed is the reason of a tunnel aborted because its sockets could not be used.
var ErrEngineClosed = errors.New("tunnel: socket closed under the engine")

// Start hands a tunnel to the engine. On error the caller keeps both sockets.
func (e *Engine) Start(opt Options) (*Tunnel, error) {
	a, okA := tcpOf(opt.A)
	b, okB := tcpOf(opt.B)
	if !okA || !okB {
		return nil, errors.New("tunnel: the engine carries plain TCP sockets only")
	}
	t := &Tunnel{opt: opt, loop: e.loops[int(e.next.Add(1))%len(e.loops)], splice: !opt.NoSplice}
	if err := t.ab.init(t, a, b, true); err != nil {
		return nil, err
	}
	if err := t.ba.init(t, b, a, false); err != nil {
		return nil, err
	}
	t.ab.ft, t.ba.ft = opt.TowardB, opt.TowardA
	if err := t.loop.add(&t.ab, &t.ba); err != nil {
		return nil, err
	}
	return t, nil
}

func (d *direction) init(t *Tunnel, src, dst *net.TCPConn, toB bool) error {
	d.t, d.src, d.dst, d.toB = t, src, dst, toB
	d.track = t.opt.WebSocket
	d.masked = toB
	var err error
	if d.srcRC, err = src.SyscallConn(); err != nil {
		return err
	}
	if d.dstRC, err = dst.SyscallConn(); err != nil {
		return err
	}
	if d.srcFD, err = fdOf(d.srcRC); err != nil {
		return err
	}
	d.readFn = d.readOnce
	d.wrFn = d.writeOnce
	d.spliceFn = d.spliceOnce
	d.drainFn = d.drainOnce
	return nil
}

// shutdown shuts a socket down through its RawConn, which refuses once the socket is closed:
// its descriptor number may already belong to another socket.
func shutdown(rc syscall.RawConn, how int) {
	rc.Control(func(fd uintptr) { syscall.Shutdown(int(fd), how) })
}

func isTLS(c net.Conn) bool {
	_, ok := c.(*tls.Conn)
	return ok
}

func fdOf(rc syscall.RawConn) (int, error) {
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// GoAway ends the tunnel cleanly, as at the end of a drain: a WebSocket Close 1001 toward each
// side, placed between frames, or a FIN for other tunnels, then a half-close. Bytes that arrive
// afterwards are dropped; the tunnel ends when both peers have closed their sides.
func (t *Tunnel) GoAway() {
	t.goAway.Store(true)
	t.ab.kick()
	t.ba.kick()
}

// Abort tears the tunnel down at once: both sockets are shut down and Done follows with why.
func (t *Tunnel) Abort(why error) {
	t.mu.Lock()
	if t.aborted || t.done {
		t.mu.Unlock()
		return
	}
	t.aborted, t.why = true, why
	t.mu.Unlock()
	// Wake a pump blocked on a write, and end the directions nobody is running.
	shutdown(t.ab.srcRC, syscall.SHUT_RDWR)
	shutdown(t.ba.srcRC, syscall.SHUT_RDWR)
	t.ab.endIfIdle()
	t.ba.endIfIdle()
}

func (t *Tunnel) isAborted() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.aborted
}

// dirEnded counts a direction's end; the second one finishes the tunnel.
func (t *Tunnel) dirEnded() {
	t.mu.Lock()
	t.ended++
	last := t.ended == 2 && !t.done
	if last {
		t.done = true
	}
	why := t.why
	t.mu.Unlock()
	if !last {
		return
	}
	t.loop.remove(&t.ab, &t.ba)
	if t.opt.Done != nil {
		go t.opt.Done(why)
	}
}

func (d *direction) endIfIdle() {
	if d.state.CompareAndSwap(stIdle, stEnded) {
		d.t.dirEnded()
	}
}

// kick makes the direction look at its state again, as if its source became readable: used by
// GoAway, which must act on idle directions too.
func (d *direction) kick() {
	if d.claim() {
		go d.pumpOwn(nil)
	}
}

// claim marks the direction running if it was idle, or pending if a pump runs. It reports
// whether the caller must start a pump.
func (d *direction) claim() bool {
	for {
		switch s := d.state.Load(); s {
		case stIdle:
			if d.state.CompareAndSwap(stIdle, stRunning) {
				return true
			}
		case stRunning:
			if d.state.CompareAndSwap(stRunning, stPending) {
				return false
			}
		default:
			return false
		}
	}
}

// release tries to make the running direction idle. False means more readiness arrived while
// it ran: the pump goes on.
func (d *direction) release() bool {
	if d.state.CompareAndSwap(stRunning, stIdle) {
		if d.t.isAborted() {
			d.endIfIdle()
		}
		return true
	}
	d.state.Store(stRunning) // it was pending
	return false
}

// end marks the direction ended for good.
func (d *direction) end() {
	d.state.Store(stEnded)
	d.t.dirEnded()
}

func (d *direction) readOnce(fd uintptr) bool {
	for {
		d.rn, d.rerr = syscall.Read(int(fd), d.rbuf)
		if d.rerr != syscall.EINTR {
			return true
		}
	}
}

// writeOnce writes what it can of wbuf; when block is set it parks until dst is writable.
func (d *direction) writeOnce(fd uintptr) bool {
	for len(d.wbuf) > 0 {
		n, err := syscall.Write(int(fd), d.wbuf)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return !d.block
		case err != nil:
			d.werr = err
			return true
		}
		d.wbuf = d.wbuf[n:]
	}
	return true
}

// pump moves bytes until the source would block, on the loop (onLoop: writes never park; a
// write that would block is handed to a goroutine with its own slab) or on a goroutine of the
// direction's own. buf is the buffer to read into.
func (d *direction) pump(buf []byte, onLoop bool) {
	for reads := 0; ; reads++ {
		if onLoop && reads == loopReadsPerTurn {
			// A direction that always has bytes would keep the loop from the other tunnels: it
			// goes on on a goroutine of its own.
			go d.pumpOwn(nil)
			return
		}
		if d.t.isAborted() {
			d.end()
			return
		}
		if !d.maybeClose() {
			return
		}
		d.rbuf = buf
		if err := d.srcRC.Read(d.readFn); err != nil {
			d.rerr = err
		}
		d.rbuf = nil
		n, err := d.rn, d.rerr
		switch {
		case err == syscall.EAGAIN:
			if d.release() {
				return
			}
			continue
		case err != nil:
			d.t.Abort(err)
			d.end()
			return
		case n == 0:
			// The source ended its side: pass the half-close on, and the direction is over.
			if !d.shutDown {
				d.shutDown = true
				shutdown(d.dstRC, syscall.SHUT_WR)
			}
			d.end()
			return
		}
		if d.closed {
			continue // after our Close nothing may follow it
		}
		if d.t.opt.Moved != nil {
			d.t.opt.Moved(d.toB, n)
		}
		if d.track {
			d.ft.Feed(buf[:n])
		}
		d.wbuf, d.block, d.werr = buf[:n], !onLoop, nil
		if err := d.dstRC.Write(d.wrFn); err != nil && d.werr == nil {
			d.werr = err
		}
		if d.werr != nil {
			d.wbuf = nil
			d.t.Abort(d.werr)
			d.end()
			return
		}
		if len(d.wbuf) > 0 {
			// dst is full: finish the write on a goroutine that may block, with a slab of its own,
			// and leave the loop to the other tunnels.
			slab := buffer.GetSlab()
			rest := (*slab)[:copy(*slab, d.wbuf)]
			d.wbuf = nil
			go d.pumpOwn(&blockedWrite{slab: slab, rest: rest})
			return
		}
		if !d.maybeClose() {
			return
		}
		if n == len(buf) && d.spliceOK() {
			// A full read: bulk data is streaming. Move what follows socket to socket through a
			// pipe, without copying it through user space.
			if !d.splice(onLoop) {
				return
			}
		}
		if !onLoop {
			runtime.Gosched() // fairness among busy directions; see ReadSlabFrom
		}
		if n < len(buf) && !d.ending.Load() {
			// A short read drained the socket (edge-triggered: new bytes wake us again). Not so
			// for a FIN that came with the bytes: it raises no new edge, so after a hang-up the
			// pump reads on until EOF.
			if d.release() {
				return
			}
		}
	}
}

// blockedWrite is what a goroutine pump must write before reading again: the rest of a slab, or
// the bytes waiting in the direction's pipe.
type blockedWrite struct {
	slab *[]byte
	rest []byte
	pipe bool
}

// pumpOwn is a pump on a goroutine of its own: it may block on writes.
func (d *direction) pumpOwn(w *blockedWrite) {
	var slab *[]byte
	if w != nil && w.pipe {
		d.block = true
		if !d.drainPipe() {
			d.abortSplice()
			return
		}
		d.putPipe()
		w = nil
	}
	if w != nil {
		slab = w.slab
		d.wbuf, d.block, d.werr = w.rest, true, nil
		if err := d.dstRC.Write(d.wrFn); err != nil && d.werr == nil {
			d.werr = err
		}
		d.wbuf = nil
		if d.werr != nil {
			buffer.PutSlab(slab)
			d.t.Abort(d.werr)
			d.end()
			return
		}
	} else {
		slab = buffer.GetSlab()
	}
	d.pump(*slab, false)
	buffer.PutSlab(slab)
}

// maybeClose sends the drain's Close once GoAway was called and dst is between frames. It
// reports whether the pump may go on.
func (d *direction) maybeClose() bool {
	if !d.t.goAway.Load() || d.closed || (d.track && !d.ft.AtBoundary()) {
		return true
	}
	return d.sendClose()
}

// sendClose sends the drain's Close (WebSocket) and half-closes dst. It reports whether the pump
// may go on.
func (d *direction) sendClose() bool {
	d.closed = true
	if d.track {
		d.wbuf, d.block, d.werr = CloseFrame(CloseGoingAway, d.masked), true, nil
		if err := d.dstRC.Write(d.wrFn); err != nil && d.werr == nil {
			d.werr = err
		}
		d.wbuf = nil
		if d.werr != nil {
			d.t.Abort(d.werr)
			d.end()
			return false
		}
	}
	if !d.shutDown {
		d.shutDown = true
		shutdown(d.dstRC, syscall.SHUT_WR)
	}
	return true
}

// loop is one epoll set and the goroutine that serves it while it holds tunnels. The goroutine
// parks in the Go poller on the epoll descriptor itself (an epoll set is pollable), so waiting
// costs no OS thread and no extra scheduling: the runtime wakes it when any tunnel is ready.
type loop struct {
	mu      sync.Mutex
	epfd    int
	file    *os.File // epfd, as the Go poller sees it
	rc      syscall.RawConn
	dirs    map[uint64]*direction
	nextID  uint64
	running bool

	// Owned by run.
	events []syscall.EpollEvent
	waitFn func(fd uintptr) bool
	buf    []byte
}

// epollET is EPOLLET as the uint32 epoll_event wants it (package syscall spells it negative).
const epollET = 1 << 31

// loopReadsPerTurn bounds the reads one direction makes on the loop before the others' turn.
const loopReadsPerTurn = 4

// loopBufSize is the loop's read buffer: a pooled slab's size, so that what a full destination
// left unwritten always fits the slab its goroutine takes over.
const loopBufSize = buffer.SlabSize

func (l *loop) open() error {
	if l.file != nil {
		return nil
	}
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return err
	}
	f := os.NewFile(uintptr(fd), "tunnel-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	l.epfd, l.file, l.rc = fd, f, rc
	l.events = make([]syscall.EpollEvent, 128)
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
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollET,
			Fd: int32(uint32(d.id)), Pad: int32(uint32(d.id >> 32))}
		if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, d.srcFD, &ev); err != nil {
			for _, u := range ds[:i+1] {
				delete(l.dirs, u.id)
				syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, u.srcFD, nil)
			}
			return err
		}
	}
	if !l.running {
		l.running = true
		go l.run()
	}
	return nil
}

func (l *loop) remove(ds ...*direction) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range ds {
		// No EPOLL_CTL_DEL: Done's contract is that the caller closes both sockets, and closing a
		// socket takes it out of every epoll set (two syscalls saved per tunnel). Until then an
		// event for it finds no direction and is dropped.
		delete(l.dirs, d.id)
	}
	if len(l.dirs) == 0 && l.running {
		l.file.SetReadDeadline(time.Now()) // wake the loop so it can end
	}
}

// serveOnce is the loop's body, run as the poller callback of the epoll descriptor: it drains the
// set's ready events and pumps each ready direction, then returns false to park until the set has
// more. Staying inside one RawConn.Read keeps the poller's readiness across iterations (a new
// RawConn.Read would clear it and need another epoll_wait to be safe): one epoll_wait per wake-up.
// It returns true, ending the Read, when the loop has no tunnels left.
func (l *loop) serveOnce(fd uintptr) bool {
	for {
		l.mu.Lock()
		empty := len(l.dirs) == 0
		l.mu.Unlock()
		if empty {
			return true
		}
		n, err := syscall.EpollWait(int(fd), l.events, 0)
		if err != nil || n <= 0 {
			return false
		}
		for _, ev := range l.events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			l.mu.Lock()
			d := l.dirs[id]
			l.mu.Unlock()
			if d == nil {
				continue
			}
			if ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				d.ending.Store(true)
			}
			if d.claim() {
				d.pump(l.buf, true)
			}
		}
		if n < len(l.events) {
			return false // drained: park (events that came meanwhile have already woken the poller)
		}
	}
}

// run serves the loop's tunnels until it has none.
func (l *loop) run() {
	if l.buf == nil {
		l.buf = make([]byte, loopBufSize)
	}
	for {
		l.mu.Lock()
		if len(l.dirs) == 0 {
			l.running = false
			l.buf = nil // an idle process keeps no loop buffer
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		if err := l.rc.Read(l.waitFn); err != nil {
			// The deadline that remove set to wake us: look at the tunnel count again.
			l.file.SetReadDeadline(time.Time{})
		}
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

// splice moves bulk bytes until the source has none ready (or, for a WebSocket, the frame's
// payload ends). It reports whether the pump goes on; false means the direction was handed to a
// goroutine (dst full while on the loop) or ended.
func (d *direction) splice(onLoop bool) bool {
	if d.pipe = getPipe(); d.pipe == nil {
		return true // no pipe to be had: copying still works
	}
	for chunks := 0; !d.t.isAborted(); chunks++ {
		if chunks == loopReadsPerTurn {
			if onLoop {
				d.putPipe()
				go d.pumpOwn(nil) // a long transfer goes on off the loop
				return false
			}
			chunks = 0
			runtime.Gosched()
		}
		limit := spliceChunk
		if d.track {
			left := d.ft.PayloadLeft()
			if left == 0 {
				break
			}
			limit = int(min(left, uint64(limit)))
		}
		d.spliceN, d.rn, d.rerr = limit, 0, nil
		if err := d.srcRC.Read(d.spliceFn); err != nil {
			d.rerr = err
		}
		if d.rerr == syscall.EAGAIN || d.rn == 0 && d.rerr == nil {
			break // nothing ready, or EOF: the copy path sees it on its next read
		}
		if d.rerr != nil {
			d.abortSplice()
			return false
		}
		n := d.rn
		d.inPipe = n
		if d.t.opt.Moved != nil {
			d.t.opt.Moved(d.toB, n)
		}
		if d.track {
			d.ft.Skip(uint64(n))
		}
		d.block = !onLoop
		if !d.drainPipe() {
			d.abortSplice()
			return false
		}
		if d.inPipe > 0 {
			go d.pumpOwn(&blockedWrite{pipe: true}) // dst is full: wait for it off the loop
			return false
		}
	}
	d.putPipe()
	return true
}

// spliceOnce moves up to spliceN bytes from the source socket into the pipe, without blocking.
func (d *direction) spliceOnce(fd uintptr) bool {
	for {
		n, err := syscall.Splice(int(fd), nil, d.pipe.w, nil, d.spliceN, spliceMove|spliceNonblock)
		if err == syscall.EINTR {
			continue
		}
		d.rn, d.rerr = int(n), err
		return true
	}
}

// drainOnce writes the pipe's bytes to dst; when block is set it parks until dst is writable.
func (d *direction) drainOnce(fd uintptr) bool {
	for d.inPipe > 0 {
		n, err := syscall.Splice(d.pipe.r, nil, int(fd), nil, d.inPipe, spliceMove|spliceNonblock)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return !d.block
		case err != nil:
			d.werr = err
			return true
		}
		d.inPipe -= int(n)
	}
	return true
}

// drainPipe empties the pipe into dst as far as it can (all of it when block is set). It reports
// false on a write error.
func (d *direction) drainPipe() bool {
	d.werr = nil
	if err := d.dstRC.Write(d.drainFn); err != nil && d.werr == nil {
		d.werr = err
	}
	return d.werr == nil
}

// abortSplice ends the tunnel after a failed splice; the pipe, which may hold bytes, is closed.
func (d *direction) abortSplice() {
	err := d.werr
	if err == nil {
		err = d.rerr
	}
	if err == nil {
		err = ErrEngineClosed
	}
	d.pipe.close()
	d.pipe, d.inPipe = nil, 0
	d.t.Abort(err)
	d.end()
}

func (d *direction) putPipe() {
	putPipe(d.pipe)
	d.pipe = nil
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
