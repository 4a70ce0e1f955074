package bench

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// RFC 6455 §5.2 opcodes.
const (
	opContinuation = 0x0
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// maxFrameHeader is the longest client frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const maxFrameHeader = 14

// errClosed is a WebSocket close frame from the peer.
var errClosed = errors.New("websocket: close frame received")

// acceptKey is Sec-WebSocket-Accept for key (RFC 6455 §4.2.2).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// stream is what a WebSocket runs over: an upgraded TCP or TLS connection, or an HTTP/2 stream.
type stream interface {
	io.ReadWriteCloser
	// writeLast writes p and ends the sending direction where the transport has a half-close
	// that keeps the socket (END_STREAM on HTTP/2). Over HTTP/1.1 it is a plain Write.
	writeLast(p []byte) error
	// SetDeadline sets the underlying socket's deadline.
	SetDeadline(t time.Time) error
}

// wsConn is the client end of one WebSocket with its own framing, so a round trip allocates
// nothing: it writes one masked frame per message from a reused buffer and reads frames through
// a reused buffer, comparing the payload with what was sent instead of copying it out.
type wsConn struct {
	s    stream
	rbuf []byte // rbuf[r:w] is read but not yet parsed
	r, w int
	wbuf []byte // header and masked payload of the last message
	rng  *rand.PCG
}

func newWSConn(s stream, rbufSize int, leftover []byte) *wsConn {
	if rbufSize < len(leftover) {
		rbufSize = len(leftover)
	}
	c := &wsConn{s: s, rbuf: make([]byte, rbufSize), rng: rand.NewPCG(rand.Uint64(), rand.Uint64())}
	c.w = copy(c.rbuf, leftover)
	return c
}

// frameHeader writes a client frame header (FIN set, masked with key) for an n-byte payload into
// dst and returns its length.
func frameHeader(dst []byte, op byte, n int, key uint32) int {
	dst[0] = 0x80 | op
	h := 2
	switch {
	case n <= 125:
		dst[1] = 0x80 | byte(n)
	case n <= 0xFFFF:
		dst[1] = 0x80 | 126
		binary.BigEndian.PutUint16(dst[2:], uint16(n))
		h = 4
	default:
		dst[1] = 0x80 | 127
		binary.BigEndian.PutUint64(dst[2:], uint64(n))
		h = 10
	}
	binary.LittleEndian.PutUint32(dst[h:], key)
	return h + 4
}

// maskBytes XORs a whole payload p with the 4-byte mask key (read little-endian from the frame),
// eight bytes at a time.
func maskBytes(key uint32, p []byte) {
	k8 := uint64(key) | uint64(key)<<32
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k8)
	}
	for ; i < len(p); i++ {
		p[i] ^= byte(key >> (8 * (i & 3)))
	}
}

// writeMessage sends payload as one masked frame with a fresh key (RFC 6455 §5.3), in one write.
func (c *wsConn) writeMessage(op byte, payload []byte, last bool) error {
	need := maxFrameHeader + len(payload)
	if cap(c.wbuf) < need {
		c.wbuf = make([]byte, need)
	}
	buf := c.wbuf[:need]
	key := uint32(c.rng.Uint64())
	h := frameHeader(buf, op, len(payload), key)
	copy(buf[h:], payload)
	maskBytes(key, buf[h:h+len(payload)])
	if last {
		return c.s.writeLast(buf[:h+len(payload)])
	}
	_, err := c.s.Write(buf[:h+len(payload)])
	return err
}

// fill makes at least n bytes available in rbuf[r:w].
func (c *wsConn) fill(n int) error {
	if c.w-c.r >= n {
		return nil
	}
	if c.r > 0 {
		c.w = copy(c.rbuf, c.rbuf[c.r:c.w])
		c.r = 0
	}
	for c.w < n {
		m, err := c.s.Read(c.rbuf[c.w:])
		c.w += m
		if err != nil && c.w < n {
			return err
		}
	}
	return nil
}

// readMessage reads one data message (joining fragments, skipping ping and pong) and checks that
// it equals want byte for byte; want == nil skips the check. It returns the payload length.
func (c *wsConn) readMessage(want []byte) (int, error) {
	total := 0
	for {
		if err := c.fill(2); err != nil {
			return total, err
		}
		b0, b1 := c.rbuf[c.r], c.rbuf[c.r+1]
		hlen := 2
		n := int(b1 & 0x7F)
		if b1&0x80 != 0 {
			return total, errors.New("websocket: server frame is masked")
		}
		switch n {
		case 126:
			hlen = 4
		case 127:
			hlen = 10
		}
		if err := c.fill(hlen); err != nil {
			return total, err
		}
		switch n {
		case 126:
			n = int(binary.BigEndian.Uint16(c.rbuf[c.r+2:]))
		case 127:
			n = int(binary.BigEndian.Uint64(c.rbuf[c.r+2:]))
		}
		c.r += hlen
		op := b0 & 0x0F
		if op == opClose {
			return total, errClosed
		}
		control := op == opPing || op == opPong
		for left := n; left > 0; {
			if c.r == c.w {
				if err := c.fill(1); err != nil {
					return total, err
				}
			}
			k := min(left, c.w-c.r)
			if !control && want != nil {
				if total+k > len(want) || !bytes.Equal(c.rbuf[c.r:c.r+k], want[total:total+k]) {
					return total, fmt.Errorf("websocket: echo differs at byte %d", total)
				}
			}
			if !control {
				total += k
			}
			c.r += k
			left -= k
		}
		if !control && b0&0x80 != 0 { // FIN
			if want != nil && total != len(want) {
				return total, fmt.Errorf("websocket: echo has %d bytes, want %d", total, len(want))
			}
			return total, nil
		}
	}
}

// echo sends msg and waits for it to come back.
func (c *wsConn) echo(msg []byte) error {
	if err := c.writeMessage(opBinary, msg, false); err != nil {
		return err
	}
	_, err := c.readMessage(msg)
	return err
}

// close runs the closing handshake (RFC 6455 §5.5.1): a close frame, which ends the sending side
// of an HTTP/2 stream, then reads until the peer's close frame or EOF, then closes the transport.
func (c *wsConn) close() error {
	err := c.writeMessage(opClose, []byte{0x03, 0xE8}, true) // 1000 normal closure
	if err == nil {
		for err == nil {
			_, err = c.readMessage(nil)
		}
		if errors.Is(err, errClosed) || errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if cerr := c.s.Close(); err == nil {
		err = cerr
	}
	return err
}
