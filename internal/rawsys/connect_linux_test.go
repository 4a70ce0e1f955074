//go:build linux

package rawsys

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
)

// dialer returns a dialer whose Control starts the connect and reports, through peer, the
// address the socket was connected to when the dialer took over (empty while still connecting).
func dialer(peer *string) *net.Dialer {
	return &net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		err := StartConnect(network, address, c)
		c.Control(func(fd uintptr) {
			if sa, gerr := syscall.Getpeername(int(fd)); gerr == nil {
				switch a := sa.(type) {
				case *syscall.SockaddrInet4:
					*peer = (&net.TCPAddr{IP: a.Addr[:], Port: a.Port}).String()
				case *syscall.SockaddrInet6:
					*peer = (&net.TCPAddr{IP: a.Addr[:], Port: a.Port}).String()
				}
			}
		})
		return err
	}}
}

// On loopback the connect started in Control has finished before the dialer's own call (so the
// dialer does not wait in the poller), and the connection carries bytes both ways.
func TestStartConnectLoopback(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network]
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s loopback here: %v", network, err)
			}
			defer ln.Close()
			go func() {
				s, err := ln.Accept()
				if err != nil {
					return
				}
				io.Copy(s, s)
				s.Close()
			}()
			var peer string
			c, err := dialer(&peer).Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if peer != ln.Addr().String() {
				t.Fatalf("after StartConnect the socket's peer was %q, want %s", peer, ln.Addr())
			}
			c.Write([]byte("ping"))
			got := make([]byte, 4)
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
				t.Fatalf("echo: %q, %v", got, err)
			}
		})
	}
}

// A refused connect fails the dial with the error and the wording of Go's own connect.
func TestStartConnectRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var peer string
	_, err = dialer(&peer).Dial("tcp", addr)
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "connect: connection refused") {
		t.Fatalf("dial to a closed port: %v", err)
	}
}

// An address that is not an IP literal is left to the dialer: the socket is not touched.
func TestStartConnectLeavesNames(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := StartConnect("tcp", "localhost:1", fdConn(fd)); err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.Getpeername(fd); err != syscall.ENOTCONN {
		t.Fatalf("the socket was connected: getpeername says %v", err)
	}
}

// fdConn is a syscall.RawConn for a descriptor the test owns.
type fdConn int

func (f fdConn) Control(fn func(uintptr)) error    { fn(uintptr(f)); return nil }
func (f fdConn) Read(fn func(uintptr) bool) error  { fn(uintptr(f)); return nil }
func (f fdConn) Write(fn func(uintptr) bool) error { fn(uintptr(f)); return nil }
