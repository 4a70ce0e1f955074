package http2

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// fuzzSeeds are frame sequences that reach the interesting states: requests with bodies and
// trailers, extended CONNECT, resets, window and settings changes, and broken header blocks.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	frames := func(write func(fr *h2.Framer, enc func(pairs ...string) []byte)) {
		var buf, hbuf bytes.Buffer
		fr := h2.NewFramer(&buf, nil)
		fr.AllowIllegalWrites = true
		henc := hpack.NewEncoder(&hbuf)
		enc := func(pairs ...string) []byte {
			hbuf.Reset()
			for i := 0; i+1 < len(pairs); i += 2 {
				_ = henc.WriteField(hpack.HeaderField{Name: pairs[i], Value: pairs[i+1]})
			}
			return append([]byte(nil), hbuf.Bytes()...)
		}
		write(fr, enc)
		seeds = append(seeds, buf.Bytes())
	}
	get := request("GET", "/")
	frames(func(fr *h2.Framer, enc func(...string) []byte) {
		_ = fr.WriteHeaders(h2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(get...), EndStream: true, EndHeaders: true})
	})
	frames(func(fr *h2.Framer, enc func(...string) []byte) {
		_ = fr.WriteHeaders(h2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(request("POST", "/", "content-length", "5")...), EndHeaders: true})
		_ = fr.WriteData(1, false, []byte("hel"))
		_ = fr.WriteDataPadded(1, false, []byte("lo"), make([]byte, 10))
		_ = fr.WriteHeaders(h2.HeadersFrameParam{StreamID: 1, BlockFragment: enc("x-trailer", "1"), EndStream: true, EndHeaders: true})
		_ = fr.WriteWindowUpdate(0, 1000)
		_ = fr.WritePing(false, [8]byte{1})
	})
	frames(func(fr *h2.Framer, enc func(...string) []byte) {
		_ = fr.WriteHeaders(h2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":method", "CONNECT", ":protocol", "websocket",
			":scheme", "http", ":path", "/chat", ":authority", "x"), EndHeaders: true})
		_ = fr.WriteData(1, true, []byte("frame"))
		_ = fr.WriteRSTStream(1, h2.ErrCodeCancel)
		_ = fr.WriteSettings(h2.Setting{ID: h2.SettingInitialWindowSize, Val: 1}, h2.Setting{ID: h2.SettingHeaderTableSize, Val: 0})
	})
	frames(func(fr *h2.Framer, enc func(...string) []byte) {
		block := enc(get...)
		_ = fr.WriteHeaders(h2.HeadersFrameParam{StreamID: 3, BlockFragment: block[:2], Priority: h2.PriorityParam{StreamDep: 3}})
		_ = fr.WriteContinuation(3, false, nil)
		_ = fr.WriteContinuation(3, true, block[2:])
		_ = fr.WritePriority(5, h2.PriorityParam{StreamDep: 3, Weight: 7})
		_ = fr.WriteGoAway(0, h2.ErrCodeNo, nil)
	})
	return seeds
}

// FuzzServerFrames feeds arbitrary bytes after a valid preface and SETTINGS into a ServerConn
// over a real socket: Serve must neither panic nor hang, and must return once the client closes.
func FuzzServerFrames(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := tcpPair(t)
		sc := NewServerConn(server, nil, ServerConfig{AllowConnect: true, WriteTimeout: time.Second}, echoHandler)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		served := make(chan error, 1)
		go func() { served <- sc.Serve(ctx) }()

		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // the client reads everything, as a well-behaved peer
			defer wg.Done()
			_, _ = io.Copy(io.Discard, client)
		}()
		var hdr bytes.Buffer
		hdr.WriteString(h2.ClientPreface)
		_ = h2.NewFramer(&hdr, nil).WriteSettings()
		_, _ = client.Write(append(hdr.Bytes(), data...))
		_ = client.(*net.TCPConn).CloseWrite()

		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatal("Serve hung")
		}
		client.Close()
		wg.Wait()
	})
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}
