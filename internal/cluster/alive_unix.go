//go:build unix

package cluster

import (
	"errors"
	"net"
	"syscall"
)

// alive reports whether an idle connection can carry a request: a non-blocking read must find
// nothing to read. Data (an unsolicited response) or EOF (the peer's idle close) means no.
//
// A read deadline in the past cannot do this: Go fails such a Read before it reaches the socket.
func alive(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, err := syscall.Read(int(fd), b[:]) // the fd is non-blocking
		ok = errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
		return true // never wait for readiness
	})
	return err == nil && ok
}
