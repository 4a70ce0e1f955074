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
	Conn net.Conn // a plain TCP socket (see Pluggable), with no bytes buffered above it
	// Deliver takes what was read, in order, on the engine's goroutine: it must not block, and
	// must copy what it keeps. It returns false to stop the reads until Reader.Resume (the
	// destination is full: what it took last is all it holds beyond its limit).
	Deliver func(p []byte) bool
	// Done is called once, on the engine's goroutine, when the socket said EOF (nil), a read
	// failed, or Abort was called (why). No Deliver follows it.
	Done func(why error)
}
