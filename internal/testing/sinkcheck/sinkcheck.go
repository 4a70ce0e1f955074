// Package sinkcheck drives an HTTP/2 stream's data sink and a slow reader of the same stream
// together. Both codecs (server and client) promise the same thing of SetDataSink — the sink and
// Read between them see every byte once, in order — and their tests check it the same way.
package sinkcheck

import (
	"io"
	"sync"
	"time"
)

// Stream is the part of an HTTP/2 stream (http2.ServerStream, client.ClientStream) the check uses.
type Stream interface {
	SetDataSink(sink func(p []byte) int)
	WaitReadable()
	Read(p []byte) (int, error)
}

// Result is what the sink and Read saw together, in the order they saw it.
type Result struct {
	Got        []byte
	Calls      int   // sink calls
	Sunk, Read int   // bytes each took
	Err        error // Read's error other than io.EOF
}

// Run installs a sink that takes, in turn, all, half or none of what it is offered, and reads s
// to its end in 5,000-byte bites, every seventh time pausing a millisecond between a Read and
// recording what it returned: the reader is then still passing bytes on when more DATA comes, as
// a proxy writing them upstream would be, and that DATA must wait behind what it holds.
func Run(s Stream) Result {
	var mu sync.Mutex
	var r Result
	s.SetDataSink(func(p []byte) int {
		mu.Lock()
		defer mu.Unlock()
		r.Calls++
		n := [...]int{len(p), len(p) / 2, 0}[r.Calls%3]
		r.Got = append(r.Got, p[:n]...)
		r.Sunk += n
		return n
	})
	buf := make([]byte, 5000)
	for i := 0; ; i++ {
		s.WaitReadable()
		n, err := s.Read(buf)
		if i%7 == 0 {
			time.Sleep(time.Millisecond)
		}
		mu.Lock()
		r.Got = append(r.Got, buf[:n]...)
		r.Read += n
		mu.Unlock()
		if err != nil {
			if err != io.EOF {
				r.Err = err
			}
			mu.Lock()
			defer mu.Unlock()
			return r
		}
	}
}
