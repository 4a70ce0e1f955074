//go:build !linux

// Package rawsys makes the proxy's hot system calls on non-blocking sockets; on Linux without
// telling the scheduler (see rawsys_linux.go), elsewhere through package syscall.
package rawsys

import "syscall"

// Read is read(2).
func Read(fd int, p []byte) (int, error) { return syscall.Read(fd, p) }

// Write is write(2).
func Write(fd int, p []byte) (int, error) { return syscall.Write(fd, p) }

// Writev writes bufs in order, one write(2) each, stopping at the first short write.
func Writev(fd int, bufs [][]byte) (int, error) {
	total := 0
	for _, b := range bufs {
		n, err := syscall.Write(fd, b)
		if n > 0 {
			total += n
		}
		if err != nil {
			if total > 0 {
				return total, nil
			}
			return -1, err
		}
		if n < len(b) {
			break
		}
	}
	return total, nil
}

// EnableInq reports false: the TCP_INQ hint is Linux's.
func EnableInq(fd int) bool { return false }

// InqReader reads with read(2) and, without the TCP_INQ hint, always says more may be left.
type InqReader struct{}

// Read reads into p; more is always true.
func (q *InqReader) Read(fd int, p []byte) (n int, more bool, err error) {
	n, err = syscall.Read(fd, p)
	return n, true, err
}

// Shutdown is shutdown(2).
func Shutdown(fd, how int) error { return syscall.Shutdown(fd, how) }

// Close is close(2).
func Close(fd int) error { return syscall.Close(fd) }

// StartConnect does nothing here: the dialer connects as usual (see connect_linux.go).
func StartConnect(network, address string, c syscall.RawConn) error { return nil }

// Dup duplicates fd.
func Dup(fd int) (int, error) { return syscall.Dup(fd) }
