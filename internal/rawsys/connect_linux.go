//go:build linux

package rawsys

import (
	"net/netip"
	"os"
	"syscall"
	"unsafe"
)

// StartConnect is a net.Dialer's Control hook that starts the TCP connect itself, with a raw
// system call, before the dialer's own connect(2). On loopback the kernel does the whole
// three-way handshake inside that first call (tens of microseconds: long enough, announced, for
// the runtime's monitor to take the thread's processor, see the package comment), and the
// dialer's call then finds the socket connected: it returns at once, and the dialer skips its
// wait in the poller and its SO_ERROR check. When the handshake is still under way (a remote
// host) the dialer's call reports EALREADY and it waits as it always does. An error the first
// call reports at once (no route, a refused loopback port) fails the dial with Go's own wording.
// Not for a dialer with a LocalAddr: Control runs before the dialer binds it, and the connect
// would bind an ephemeral address first (the dialer's bind would then fail).
func StartConnect(network, address string, c syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || ap.Addr().Zone() != "" {
		return nil // not a plain IP literal: leave the connect to the dialer
	}
	var cerr error
	if err := c.Control(func(fd uintptr) { cerr = connect(int(fd), ap) }); err != nil {
		return err
	}
	return cerr
}

func connect(fd int, ap netip.AddrPort) error {
	var (
		ptr unsafe.Pointer
		n   uintptr
		sa4 syscall.RawSockaddrInet4
		sa6 syscall.RawSockaddrInet6
	)
	port := ap.Port()
	if a := ap.Addr(); a.Is4() || a.Is4In6() {
		sa4.Family = syscall.AF_INET
		sa4.Addr = a.Unmap().As4()
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		ptr, n = unsafe.Pointer(&sa4), syscall.SizeofSockaddrInet4
	} else {
		sa6.Family = syscall.AF_INET6
		sa6.Addr = a.As16()
		p := (*[2]byte)(unsafe.Pointer(&sa6.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		ptr, n = unsafe.Pointer(&sa6), syscall.SizeofSockaddrInet6
	}
	_, _, e := syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(ptr), n)
	switch e {
	case 0, syscall.EINPROGRESS, syscall.EALREADY, syscall.EINTR, syscall.EISCONN:
		return nil
	case syscall.EAFNOSUPPORT, syscall.EINVAL:
		return nil // not the socket's family after all: the dialer's own call will say
	}
	return os.NewSyscallError("connect", e)
}
