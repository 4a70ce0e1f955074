package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
)

// maxEchoFrame bounds the frames the echo server accepts, so a bad length cannot exhaust memory.
const maxEchoFrame = 64 << 20

// EchoServer is the upstream of `switchyard-bench -serve`: a WebSocket echo server that answers
// HTTP/1.1 Upgrade (hijacked) and, on the same port, HTTP/2 with prior knowledge (h2c) extended
// CONNECT (RFC 8441), echoing frame by frame through a 4 KiB read buffer. It is built like the
// echo server the peers were measured against (perf-anchors.md), so "direct" runs compare.
type EchoServer struct {
	ln  net.Listener
	srv *http.Server

	mu     sync.Mutex
	hijack map[net.Conn]struct{} // upgraded HTTP/1.1 connections, which http.Server forgets
	closed bool
	wg     sync.WaitGroup // handlers of hijacked connections
}

// NewEchoServer listens on addr (host:port; port 0 picks one). Call Serve to accept.
func NewEchoServer(addr string) (*EchoServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	e := &EchoServer{ln: ln, hijack: map[net.Conn]struct{}{}}
	e.srv = &http.Server{Handler: e, Protocols: new(http.Protocols)}
	e.srv.Protocols.SetHTTP1(true)
	e.srv.Protocols.SetUnencryptedHTTP2(true)
	return e, nil
}

// Addr is the listening address, for building a ws:// URL.
func (e *EchoServer) Addr() string { return e.ln.Addr().String() }

// Serve accepts until Close; it returns nil after Close.
func (e *EchoServer) Serve() error {
	if err := e.srv.Serve(e.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops accepting, closes every connection and waits for the upgraded ones' handlers.
func (e *EchoServer) Close() error {
	err := e.srv.Close()
	e.mu.Lock()
	e.closed = true
	for c := range e.hijack {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
	return err
}

// ServeHTTP upgrades one request and echoes until the client closes.
func (e *EchoServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor >= 2 {
		if r.Method != http.MethodConnect || r.Header.Get(":protocol") != "websocket" {
			http.Error(w, "want an extended CONNECT with :protocol websocket", http.StatusBadRequest)
			return
		}
		rc := http.NewResponseController(w)
		w.WriteHeader(http.StatusOK)
		if rc.Flush() != nil {
			return
		}
		_ = echoFrames(bufio.NewReaderSize(r.Body, 4096), flushWriter{w, rc})
		return
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || !hasToken(r.Header["Connection"], "upgrade") || key == "" {
		http.Error(w, "not a WebSocket upgrade", http.StatusBadRequest)
		return
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		nc.Close()
		return
	}
	e.hijack[nc] = struct{}{}
	e.wg.Add(1)
	e.mu.Unlock()
	defer func() {
		nc.Close()
		e.mu.Lock()
		delete(e.hijack, nc)
		e.mu.Unlock()
		e.wg.Done()
	}()
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		acceptKey(key) + "\r\n\r\n")
	if brw.Flush() != nil {
		return
	}
	_ = echoFrames(brw.Reader, nc)
}

// hasToken reports whether a comma-separated header has token (case-insensitive).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// flushWriter sends each write at once, as an HTTP/2 handler must for a tunnel.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// echoFrames sends every frame back unmasked with the same FIN and opcode (a ping as a pong), one
// write per frame, until a close frame, which is echoed too, or an error.
func echoFrames(r *bufio.Reader, w io.Writer) error {
	const room = 10 // the longest server header goes in front of the payload
	buf := make([]byte, room+4096)
	var hdr [maxFrameHeader]byte
	for {
		if _, err := io.ReadFull(r, hdr[:2]); err != nil {
			return err
		}
		ext := 0
		switch hdr[1] & 0x7F {
		case 126:
			ext = 2
		case 127:
			ext = 8
		}
		masked := hdr[1]&0x80 != 0
		mlen := 0
		if masked {
			mlen = 4
		}
		if _, err := io.ReadFull(r, hdr[2:2+ext+mlen]); err != nil {
			return err
		}
		n := uint64(hdr[1] & 0x7F)
		switch ext {
		case 2:
			n = uint64(binary.BigEndian.Uint16(hdr[2:]))
		case 8:
			n = binary.BigEndian.Uint64(hdr[2:])
		}
		if n > maxEchoFrame {
			return fmt.Errorf("frame of %d bytes", n)
		}
		if need := room + int(n); need > len(buf) {
			buf = make([]byte, need)
		}
		payload := buf[room : room+int(n)]
		if _, err := io.ReadFull(r, payload); err != nil {
			return err
		}
		if masked {
			maskBytes(binary.LittleEndian.Uint32(hdr[2+ext:]), payload)
		}
		op := hdr[0] & 0x0F
		if op == opPong {
			continue
		}
		h := 2
		switch {
		case n > 0xFFFF:
			h = 10
			buf[room-h+1] = 127
			binary.BigEndian.PutUint64(buf[room-8:], n)
		case n > 125:
			h = 4
			buf[room-h+1] = 126
			binary.BigEndian.PutUint16(buf[room-2:], uint16(n))
		default:
			buf[room-h+1] = byte(n)
		}
		buf[room-h] = hdr[0]
		if op == opPing {
			buf[room-h] = 0x80 | opPong
		}
		if _, err := w.Write(buf[room-h : room+int(n)]); err != nil {
			return err
		}
		if op == opClose {
			return nil
		}
	}
}

// ExtendedConnectEnabled reports whether Go's HTTP/2 server in this process accepts extended
// CONNECT, which it does only with GODEBUG=http2xconnect=1 set at start-up (golang/go#71128).
func ExtendedConnectEnabled() bool {
	return strings.Contains(os.Getenv("GODEBUG"), "http2xconnect=1")
}

// EnableExtendedConnect re-executes the running program, keeping its arguments and process id,
// with http2xconnect=1 added to GODEBUG, because the HTTP/2 server reads that setting only once,
// at start-up. It returns nil at once when the setting is already there; otherwise it returns
// only if the exec failed.
func EnableExtendedConnect() error {
	if ExtendedConnectEnabled() {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	godebug := "http2xconnect=1"
	env := []string{}
	for _, kv := range os.Environ() {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			if v != "" {
				godebug = v + "," + godebug
			}
			continue
		}
		env = append(env, kv)
	}
	return syscall.Exec(exe, os.Args, append(env, "GODEBUG="+godebug))
}
