package tunnel

import "net"

// Options describe one tunnel. A is the client's side, B the upstream's.
type Options struct {
	A, B net.Conn // plain TCP sockets (see Pluggable), with no bytes buffered above them
	// WebSocket makes the engine follow frames each way, so GoAway closes between frames.
	// TowardB and TowardA are the frame state of the bytes already written to B and to A.
	WebSocket        bool
	TowardB, TowardA FrameTracker
	// NoSplice keeps bulk bytes on the copy path (for measuring; splice is the default).
	NoSplice bool
	// Moved is told of every n bytes read from A (toB) or from B, before they are written on.
	// It runs on the engine's goroutines: it must be quick and must not block.
	Moved func(toB bool, n int)
	// Done is called once when both directions have ended (nil) or the tunnel was aborted (why).
	// The engine does not touch the sockets after that, and the caller must close both: closing
	// is also what takes them out of the engine's epoll set. Like Moved it runs on the engine's
	// goroutine (a goroutine of its own per tunnel cost a thread wake-up per handshake): it must
	// be quick, and may take locks only for short work that never waits for the engine.
	Done func(why error)
}

// ReaderOptions describe a socket for the engine to read (Engine.StartReader).
type ReaderOptions struct {
	// Conn is a plain TCP socket (see Pluggable) with no bytes buffered above it. Its owner may
	// write to it and half-close it meanwhile, but closes it only after Done.
	Conn net.Conn
	// Deliver takes what was read, in order, on the engine's goroutine: it must not block, and
	// must copy what it keeps. It returns false to stop the reads until Reader.Resume (the
	// destination is full: what it took last is all it holds beyond its limit).
	Deliver func(p []byte) bool
	// Done is called once, on the engine's goroutine, when the socket said EOF (nil), a read
	// failed, or Abort was called (why). No Deliver follows it.
	Done func(why error)
	// Sender, if set, lets the engine send what it read in its io_uring batches, where it reads
	// many sockets at once, instead of calling Deliver for each (one system call fewer per read).
	Sender Sender
}

// Sender frames and sends a Reader's bytes through the engine (ReaderOptions.Sender). Both
// methods run on the engine's goroutine and must not block.
type Sender interface {
	// Begin is offered n bytes read into buf[SendHeadroom:SendHeadroom+n]. It may write framing
	// into the SendHeadroom bytes before them, and returns the socket to send on and where in buf
	// the bytes to send start (they end with the payload). ok false: Deliver gets the bytes.
	Begin(buf []byte, n int) (fd, start int, ok bool)
	// End settles the send of out (what Begin laid out): res is the bytes sent or -errno. It
	// reports whether the payload was taken; if not (nothing went), Deliver gets it. What went
	// in part is the Sender's to finish.
	End(out []byte, res int32) (taken bool)
}

// SendHeadroom is the room a Sender has for framing before the bytes read: an HTTP/2 frame
// header.
const SendHeadroom = 9
