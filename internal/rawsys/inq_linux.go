package rawsys

import (
	"syscall"
	"unsafe"
)

// tcpInq is TCP_INQ (Linux 4.18), also the type of its control message (TCP_CM_INQ).
const tcpInq = 36

// EnableInq asks the kernel to report, with every recvmsg on fd, how much is left to read (see
// InqReader). It reports false where the kernel has no such option.
func EnableInq(fd int) bool {
	return syscall.SetsockoptInt(fd, syscall.SOL_TCP, tcpInq, 1) == nil
}

// InqReader reads a TCP socket with recvmsg(2) and learns from the TCP_INQ hint whether anything
// is left: bytes, or the peer's FIN not yet read as EOF. A reader that waits for the poller only
// when nothing is left never needs a read that says EAGAIN — and never misses an EOF that arrived
// with the last bytes, which a read that merely came back short cannot tell (the kernel sends no
// new readiness for a FIN that was already queued). Its buffers live in the struct, so a read
// allocates nothing; one goroutine at a time.
type InqReader struct {
	hdr syscall.Msghdr
	iov syscall.Iovec
	ctl [syscall.SizeofCmsghdr + 8]byte
}

// Read reads into p. more is the kernel's word that something is left to read; it is true when
// the hint is missing (EnableInq was not called or failed), so that the caller reads on.
func (q *InqReader) Read(fd int, p []byte) (n int, more bool, err error) {
	if len(p) == 0 {
		return 0, true, nil
	}
	q.iov.Base = &p[0]
	q.iov.SetLen(len(p))
	q.hdr.Iov = &q.iov
	q.hdr.Iovlen = 1
	q.hdr.Control = &q.ctl[0]
	q.hdr.SetControllen(len(q.ctl))
	q.hdr.Flags = 0
	r, _, e := syscall.RawSyscall(syscall.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&q.hdr)), 0)
	q.iov.Base = nil // hold no reference to the caller's buffer
	if e != 0 {
		return -1, true, e
	}
	more = true
	if q.hdr.Controllen >= syscall.SizeofCmsghdr+4 {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&q.ctl[0]))
		if h.Level == syscall.SOL_TCP && h.Type == tcpInq {
			more = *(*int32)(unsafe.Pointer(&q.ctl[syscall.SizeofCmsghdr])) != 0
		}
	}
	return int(r), more, nil
}
