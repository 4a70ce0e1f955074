//lint:file-ignore SA1019 x/net's HTTP/2 Transport sends RFC 8441 extended CONNECT (net/http's refuses :protocol)

package e2e

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"golang.org/x/net/http2"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// TestH2TunnelSlowUpstreamKeepsOrder: the client's bytes of a WebSocket over HTTP/2 reach an
// HTTP/1.1 upstream whole and in order whether the HTTP/2 reader hands them straight to the
// upstream socket or, when that socket is full, they wait for the stream's own goroutine: the
// upstream first reads nothing until its buffers are full, then reads in small bites with pauses,
// so both ways take turns many times. x/net's client sends writes of many sizes.
func TestH2TunnelSlowUpstreamKeepsOrder(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	got := make(chan result, 1)
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			return
		}
		defer c.Close()
		head, e, err := loadReadHead(c)
		if err != nil {
			got <- result{err: err}
			return
		}
		key := ""
		for _, line := range strings.Split(head, "\r\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "sec-websocket-key") {
				key = strings.TrimSpace(v)
			}
		}
		sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		if _, err := io.WriteString(c, upgSwitching("websocket", "Sec-WebSocket-Accept: "+base64.StdEncoding.EncodeToString(sum[:]))); err != nil {
			got <- result{err: err}
			return
		}
		time.Sleep(300 * time.Millisecond) // the proxy's writes fill the socket meanwhile
		h := sha256.New()
		buf := make([]byte, 4096)
		var n int64
		for i := 0; ; i++ {
			m, err := e.Read(buf)
			h.Write(buf[:m])
			n += int64(m)
			if err == io.EOF {
				got <- result{n, [32]byte(h.Sum(nil)), nil}
				return
			}
			if err != nil {
				got <- result{n, [32]byte{}, err}
				return
			}
			if i%512 == 511 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	p := harness.Start(t, seedYAML("a", h2ListenerConnect, ln.Addr().(*net.TCPAddr).Port, false, "[{upgrade_type: websocket}]"))

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

	// One masked binary frame (zero key: the payload goes as is) carrying size random bytes.
	sent := sha256.New()
	header := loadFrameHeader(size, true)
	rng := rand.New(rand.NewPCG(1, 2))
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	sent.Write(header)
	sent.Write(payload)
	sendErr := make(chan error, 1)
	go func() {
		if _, err := bodyW.Write(header); err != nil {
			sendErr <- err
			return
		}
		sizes := []int{1, 700, 16384, 3, 65536, 70001, 1200, 250000}
		for i, off := 0, 0; off < len(payload); i++ {
			n := min(sizes[i%len(sizes)], len(payload)-off)
			if _, err := bodyW.Write(payload[off : off+n]); err != nil {
				sendErr <- err
				return
			}
			off += n
		}
		sendErr <- bodyW.Close() // END_STREAM: the upstream reads its end
	}()

	var r result
	select {
	case r = <-got:
	case <-time.After(60 * time.Second):
		t.Fatal("the upstream did not get the whole stream in 60 s")
	}
	if err := <-sendErr; err != nil {
		t.Fatalf("sending: %v", err)
	}
	want := int64(len(header) + size)
	if r.err != nil || r.n != want || r.sum != [32]byte(sent.Sum(nil)) {
		t.Fatalf("upstream got %d bytes (err %v), SHA-256 match %v; sent %d", r.n, r.err, r.sum == [32]byte(sent.Sum(nil)), want)
	}
	// The upstream closed: the client sees its end of the stream.
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("client after the upstream closed: %v", err)
	}
	h2End(t, h2Hop{p, "a"})
	if n := p.Stat("http.a.upgrades.websocket.bytes_to_upstream"); n != want {
		t.Errorf("upgrades.websocket.bytes_to_upstream = %d, want %d", n, want)
	}
}
