package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
)

// serveGoroutines accepts until ln is closed, serving each connection on a goroutine of its own.
func serveGoroutines(ln net.Listener, upstream string) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go relay(c.(*net.TCPConn), upstream)
	}
}

// readHead reads an HTTP head up to and including its empty line.
func readHead(br *bufio.Reader) ([]byte, error) {
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		head = append(head, line...)
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return head, nil
		}
	}
}

// relay carries one connection: the request head to a new upstream connection, the response head
// back, then the bytes both ways until each side has ended.
func relay(c *net.TCPConn, upstream string) {
	defer c.Close()
	br := bufio.NewReader(c)
	head, err := readHead(br)
	if err != nil {
		return
	}
	nu, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	u := nu.(*net.TCPConn)
	defer u.Close()
	if _, err := u.Write(head); err != nil {
		return
	}
	ubr := bufio.NewReader(u)
	resp, err := readHead(ubr)
	if err != nil {
		return
	}
	if _, err := c.Write(resp); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(c, ubr)
		c.CloseWrite()
	}()
	io.Copy(u, br)
	u.CloseWrite()
	<-done
}
