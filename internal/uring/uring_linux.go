//go:build linux

// Package uring submits batches of non-blocking socket reads and writes through one io_uring, so
// that many sockets' system calls cost one kernel entry. On the virtual machines proxies run on,
// entering the kernel is dear (about a microsecond, a fifth of a small message's cost in the
// tunnel engine), while the work inside (TCP) is the same either way.
//
// Only what the tunnel engine needs is here: recv and send with MSG_DONTWAIT, so that every
// operation completes inside the io_uring_enter that submits it (a socket with nothing to read,
// or no room, gives -EAGAIN rather than an operation parked in the kernel holding a buffer).
// A Ring belongs to one goroutine at a time; it is not safe for concurrent use.
package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"
)

const (
	sysSetup = 425
	sysEnter = 426

	opSend = 26
	opRecv = 27

	setupSubmitAll   = 1 << 7
	setupCoopTaskrun = 1 << 8
	featSingleMmap   = 1 << 0
	featNoDrop       = 1 << 1

	enterGetEvents = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	msgDontwait = 0x40
	msgNosignal = 0x4000
)

type sqRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqRingOffsets
	cqOff                                                                  cqRingOffsets
}

// sqe is struct io_uring_sqe, as far as send and recv use it.
type sqe struct {
	opcode   uint8
	flags    uint8
	ioprio   uint16
	fd       int32
	off      uint64
	addr     uint64
	len      uint32
	msgFlags uint32
	userData uint64
	_        [24]byte
}

// cqe is struct io_uring_cqe.
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// Ring is an io_uring sized for a batch of operations.
type Ring struct {
	fd      int
	ringMem []byte
	sqeMem  []byte

	sqHead, sqTail *uint32
	sqMask         uint32
	sqArray        []uint32
	sqes           []sqe

	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []cqe

	queued uint32 // operations prepared since the last Submit
	buffs  [][]byte
}

// ErrFull is returned by Recv and Send when the batch already holds the ring's size.
var ErrFull = errors.New("uring: batch full")

// New sets up a ring for batches of up to entries operations (a power of two is used). It fails
// where io_uring is missing or forbidden (old kernels, seccomp profiles, io_uring_disabled): the
// caller then makes the calls one by one.
func New(entries int) (*Ring, error) {
	var p params
	p.flags = setupSubmitAll | setupCoopTaskrun
	fd, _, e := syscall.Syscall(sysSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if e == syscall.EINVAL {
		// Kernels before 5.19 know neither flag.
		p = params{}
		fd, _, e = syscall.Syscall(sysSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	}
	if e != 0 {
		return nil, e
	}
	r := &Ring{fd: int(fd)}
	if p.features&featSingleMmap == 0 || p.features&featNoDrop == 0 {
		r.Close()
		return nil, errors.New("uring: kernel too old (needs IORING_FEAT_SINGLE_MMAP and NODROP)")
	}
	size := max(int(p.sqOff.array)+int(p.sqEntries)*4, int(p.cqOff.cqes)+int(p.cqEntries)*int(unsafe.Sizeof(cqe{})))
	mem, err := syscall.Mmap(r.fd, offSQRing, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.ringMem = mem
	sqes, err := syscall.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.sqeMem = sqes
	base := unsafe.Pointer(&mem[0])
	r.sqHead = (*uint32)(unsafe.Add(base, p.sqOff.head))
	r.sqTail = (*uint32)(unsafe.Add(base, p.sqOff.tail))
	r.sqMask = *(*uint32)(unsafe.Add(base, p.sqOff.ringMask))
	r.sqArray = unsafe.Slice((*uint32)(unsafe.Add(base, p.sqOff.array)), p.sqEntries)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&sqes[0])), p.sqEntries)
	r.cqHead = (*uint32)(unsafe.Add(base, p.cqOff.head))
	r.cqTail = (*uint32)(unsafe.Add(base, p.cqOff.tail))
	r.cqMask = *(*uint32)(unsafe.Add(base, p.cqOff.ringMask))
	r.cqes = unsafe.Slice((*cqe)(unsafe.Add(base, p.cqOff.cqes)), p.cqEntries)
	// The submission array maps slot i to SQE i, once and for all.
	for i := range r.sqArray {
		r.sqArray[i] = uint32(i)
	}
	r.buffs = make([][]byte, p.sqEntries)
	if err := r.selfTest(); err != nil {
		r.Close() // closing the ring also cancels an operation it left pending
		return nil, err
	}
	return r, nil
}

// selfTest checks, on a socket pair, what the engine relies on: send and recv exist (Linux 5.6),
// and a recv with MSG_DONTWAIT on an empty socket comes back -EAGAIN inside the submitting call
// instead of waiting in the kernel with the caller's buffer (kernels differ on that).
func (r *Ring) selfTest() error {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	var buf [1]byte
	res := []int32{1}
	r.Recv(fds[0], buf[:], 0)
	atomic.StoreUint32(r.sqTail, *r.sqTail+1)
	r.queued = 0
	if _, _, e := syscall.Syscall6(sysEnter, uintptr(r.fd), 1, 0, enterGetEvents, 0, 0); e != 0 {
		return e
	}
	head, tail := *r.cqHead, atomic.LoadUint32(r.cqTail)
	if head == tail {
		return errors.New("uring: a recv on an empty socket waited instead of failing with EAGAIN")
	}
	res[0] = r.cqes[head&r.cqMask].res
	atomic.StoreUint32(r.cqHead, head+1)
	if res[0] != -int32(syscall.EAGAIN) {
		return fmt.Errorf("uring: recv on an empty socket gave %d, want -EAGAIN", res[0])
	}
	buf[0] = 'x'
	if r.Send(fds[1], buf[:], 0); r.Submit(res) != nil || res[0] != 1 {
		return fmt.Errorf("uring: send gave %d, want 1", res[0])
	}
	buf[0] = 0
	if r.Recv(fds[0], buf[:], 0); r.Submit(res) != nil || res[0] != 1 || buf[0] != 'x' {
		return fmt.Errorf("uring: recv gave %d (%q), want 1 byte", res[0], buf[0])
	}
	return nil
}

// Size is the most operations a batch holds.
func (r *Ring) Size() int { return len(r.sqes) }

// Close releases the ring.
func (r *Ring) Close() error {
	if r.sqeMem != nil {
		syscall.Munmap(r.sqeMem)
		r.sqeMem = nil
	}
	if r.ringMem != nil {
		syscall.Munmap(r.ringMem)
		r.ringMem = nil
	}
	if r.fd >= 0 {
		syscall.Close(r.fd)
		r.fd = -1
	}
	return nil
}

// Recv queues a recv(2) of fd into p, without waiting. tag comes back with its result.
func (r *Ring) Recv(fd int, p []byte, tag uint64) error {
	return r.queue(opRecv, fd, p, msgDontwait, tag)
}

// Send queues a send(2) of p to fd, without waiting and without SIGPIPE.
func (r *Ring) Send(fd int, p []byte, tag uint64) error {
	return r.queue(opSend, fd, p, msgDontwait|msgNosignal, tag)
}

func (r *Ring) queue(op uint8, fd int, p []byte, flags uint32, tag uint64) error {
	if int(r.queued) == len(r.sqes) {
		return ErrFull
	}
	tail := *r.sqTail + r.queued
	s := &r.sqes[tail&r.sqMask]
	*s = sqe{opcode: op, fd: int32(fd), len: uint32(len(p)), msgFlags: flags, userData: tag}
	if len(p) > 0 {
		s.addr = uint64(uintptr(unsafe.Pointer(&p[0])))
	}
	// The kernel reads p through a bare address: keep p reachable until the batch is done.
	r.buffs[tail&r.sqMask] = p
	r.queued++
	return nil
}

// Queued is the number of operations waiting for Submit.
func (r *Ring) Queued() int { return int(r.queued) }

// Submit runs the queued operations and stores each one's result (bytes, or a negative errno)
// at res[tag]; every tag must index res. Every operation has completed when it returns nil. On
// an error the ring must not be used again (close it): the results of some operations are then
// unknown, and res keeps what it held for them.
func (r *Ring) Submit(res []int32) error {
	n := r.queued
	if n == 0 {
		return nil
	}
	atomic.StoreUint32(r.sqTail, *r.sqTail+n) // release: the SQEs are written
	r.queued = 0
	// Raw: with MSG_DONTWAIT every operation completes inside the call, which never sleeps (see
	// package rawsys for why the scheduler is not told).
	_, _, e := syscall.RawSyscall6(sysEnter, uintptr(r.fd), uintptr(n), uintptr(n), enterGetEvents, 0, 0)
	got := uint32(0)
	for {
		head := *r.cqHead
		tail := atomic.LoadUint32(r.cqTail) // acquire: the CQEs are written
		for ; head != tail; head++ {
			c := &r.cqes[head&r.cqMask]
			res[c.userData] = c.res
			got++
		}
		atomic.StoreUint32(r.cqHead, head)
		if got >= n || e != 0 && e != syscall.EINTR {
			break
		}
		// An operation the kernel finished off the submitting call (it should not happen with
		// MSG_DONTWAIT), or a signal: wait for the rest, telling the scheduler this time.
		_, _, e = syscall.Syscall6(sysEnter, uintptr(r.fd), 0, uintptr(n-got), enterGetEvents, 0, 0)
	}
	clear(r.buffs)
	if got < n {
		return e
	}
	return nil
}
