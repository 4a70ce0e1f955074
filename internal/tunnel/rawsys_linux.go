package tunnel

import (
	"syscall"
	"unsafe"
)

// The engine's hot system calls, made without telling the scheduler (syscall.RawSyscall). Every
// descriptor the engine touches is non-blocking, so none of these can block: a read or write on
// loopback that does the receiver's TCP work takes tens of microseconds, which is long enough for
// the runtime's monitor to take the processor away from a thread in an announced system call and
// wake another thread to run it, then have the first one find it gone — three context switches,
// each dear on a virtual machine, for a call that was never going to wait. The descriptors are
// ints the caller owns; errors are syscall.Errno, as from package syscall.

func rawRead(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func rawSplice(in, out, n int, flags int) (int, error) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), uintptr(flags))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// rawPoll is epoll_wait with a zero timeout: it never sleeps.
func rawPoll(epfd int, events []syscall.EpollEvent) (int, error) {
	var ptr unsafe.Pointer
	if len(events) > 0 {
		ptr = unsafe.Pointer(&events[0])
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(ptr), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
