//lint:file-ignore SA1019 x/net's HTTP/2 Transport sends RFC 8441 extended CONNECT (net/http's refuses :protocol)

package e2e

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
	"golang.org/x/net/http2"
)

// Tunnel payload crosses an HTTP/2 hop straight from the codec's reader to the next socket when
// that socket takes it at once, and through the stream's goroutine otherwise. These tests make
// the next socket fill up and drain again many times, so both ways take turns, and check that
// every byte arrives in order.

// inlineResult is what one end of a tunnel received: its byte count and SHA-256.
type inlineResult struct {
	n   int64
	sum [32]byte
	err error
}

// inlineUpstream answers one WebSocket upgrade (computing Sec-WebSocket-Accept, which a proxy
// that made up the key checks) and hands the tunnel's end to serve on a goroutine of its own.
func inlineUpstream(t *testing.T, serve func(e *loadEnd)) (port int) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			return
		}
		defer c.Close()
		head, e, err := loadReadHead(c)
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, wsSwitching(head)); err != nil {
			return
		}
		serve(e)
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// wsSwitching is an upstream's 101 to the WebSocket request whose head is given, with the
// Sec-WebSocket-Accept its key calls for (RFC 6455 §4.2.2), as a proxy that made the key up for
// an HTTP/2 client's extended CONNECT checks.
func wsSwitching(head string) string {
	key := ""
	for _, line := range strings.Split(head, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "sec-websocket-key") {
			key = strings.TrimSpace(v)
		}
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return upgSwitching("websocket", "Sec-WebSocket-Accept: "+base64.StdEncoding.EncodeToString(sum[:]))
}

// inlineSlowRead reads r to its end slowly: nothing for 300 ms (the sender fills the socket),
// then 4 KiB bites with a pause every 2 MiB.
func inlineSlowRead(r io.Reader) inlineResult {
	time.Sleep(300 * time.Millisecond)
	h := sha256.New()
	buf := make([]byte, 4096)
	var n int64
	for i := 0; ; i++ {
		m, err := r.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		if err == io.EOF {
			return inlineResult{n, [32]byte(h.Sum(nil)), nil}
		}
		if err != nil {
			return inlineResult{n, [32]byte{}, err}
		}
		if i%512 == 511 {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// inlineMessage is one binary WebSocket frame of size pseudo-random bytes (masked with a zero key
// toward a server), as the chunks of uneven sizes a sender writes it in, and its SHA-256.
func inlineMessage(size int, masked bool) (chunks [][]byte, sum [32]byte) {
	msg := loadFrameHeader(int64(size), masked)
	chunks = append(chunks, msg)
	rng := rand.New(rand.NewPCG(1, 2))
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	sizes := []int{1, 700, 16384, 3, 65536, 70001, 1200, 250000}
	for i, off := 0, 0; off < size; i++ {
		n := min(sizes[i%len(sizes)], size-off)
		chunks = append(chunks, payload[off:off+n])
		off += n
	}
	h := sha256.New()
	for _, c := range chunks {
		h.Write(c)
	}
	return chunks, [32]byte(h.Sum(nil))
}

// TestH2TunnelSlowUpstreamKeepsOrder: a WebSocket over HTTP/2 (x/net's client) to an HTTP/1.1
// upstream that reads slowly: the client's bytes all arrive, in order, and are counted.
func TestH2TunnelSlowUpstreamKeepsOrder(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	got := make(chan inlineResult, 1)
	port := inlineUpstream(t, func(e *loadEnd) { got <- inlineSlowRead(e) })
	p := harness.Start(t, seedYAML("a", h2ListenerConnect, port, false, "[{upgrade_type: websocket}]"))

	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	body, bodyW := io.Pipe()
	req, err := http.NewRequest("CONNECT", "http://"+p.Addr("")+"/slow", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "svc"
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("sec-websocket-version", "13")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("extended CONNECT answered %d, want 200\n%s", resp.StatusCode, p.Log())
	}

	chunks, sum := inlineMessage(size, true)
	sendErr := make(chan error, 1)
	go func() {
		for _, c := range chunks {
			if _, err := bodyW.Write(c); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- bodyW.Close() // END_STREAM: the upstream reads its end
	}()
	want := int64(len(chunks[0]) + size)
	checkInlineStream(t, "the upstream", got, sendErr, want, sum)
	// The upstream closed: the client sees its end of the stream.
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("client after the upstream closed: %v", err)
	}
	h2End(t, h2Hop{p, "a"})
	if n := p.Stat("http.a.upgrades.websocket.bytes_to_upstream"); n != want {
		t.Errorf("upgrades.websocket.bytes_to_upstream = %d, want %d", n, want)
	}
}

// TestTwoHopSlowClientKeepsOrder: the seed's deployment (HTTP/1.1 client, front, HTTP/2,
// sidecar, HTTP/1.1 app), the app sending a large message to a client that reads slowly through
// a small socket buffer: every byte arrives, in order, and both hops count them.
func TestTwoHopSlowClientKeepsOrder(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	chunks, sum := inlineMessage(size, false)
	sendErr := make(chan error, 1)
	port := inlineUpstream(t, func(e *loadEnd) {
		for _, c := range chunks {
			if _, err := e.Write(c); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- e.CloseWrite()
		io.Copy(io.Discard, e) // until the client's side ends
	})
	sidecar := harness.Start(t, seedYAML("b", h2ListenerConnect, port, false, "[{upgrade_type: websocket}]"))
	front := harness.Start(t, seedYAML("a", h2Listener, portOf(t, sidecar.Addr("")), true, "[{upgrade_type: websocket}]"))

	c, err := loadDial(front.Addr(""), upgWSReq("/slow"), 16<<10)
	if err != nil {
		t.Fatalf("%v\n%s", err, front.Log())
	}
	defer c.Close()
	got := make(chan inlineResult, 1)
	go func() { got <- inlineSlowRead(c) }()
	want := int64(len(chunks[0]) + size)
	checkInlineStream(t, "the client", got, sendErr, want, sum)
	c.CloseWrite()
	h2End(t, h2Hop{front, "a"}, h2Hop{sidecar, "b"})
	for _, h := range []h2Hop{{front, "a"}, {sidecar, "b"}} {
		if n := h.p.Stat("http." + h.prefix + ".upgrades.websocket.bytes_to_downstream"); n != want {
			t.Errorf("%s: upgrades.websocket.bytes_to_downstream = %d, want %d", h.prefix, n, want)
		}
	}
}

// checkInlineStream waits for the receiving end's result and the sender's, and fails the test
// unless who got exactly want bytes with the SHA-256 sent.
func checkInlineStream(t *testing.T, who string, got <-chan inlineResult, sendErr <-chan error, want int64, sum [32]byte) {
	t.Helper()
	var r inlineResult
	select {
	case r = <-got:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not get the whole stream in 60 s", who)
	}
	if err := <-sendErr; err != nil {
		t.Fatalf("sending to %s: %v", who, err)
	}
	if r.err != nil || r.n != want || r.sum != sum {
		t.Fatalf("%s got %d bytes (err %v), SHA-256 match %v; sent %d", who, r.n, r.err, r.sum == sum, want)
	}
}
