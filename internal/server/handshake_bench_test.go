package server

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"

	"github.com/switchyard-proxy/switchyard/internal/config"
)

// The load tool's handshakes workload, one at a time, in process: connect, upgrade, one
// WebSocket echo, close. Its allocations per handshake are the figure to watch (the garbage a
// reconnect storm makes, and under a heap limit the collector's work); its time on a shared
// machine is not (bench/peers.sh measures CPU per handshake against the peers). "direct" is the
// same exchange with the echo app alone, so "proxy" minus "direct" is the proxy's share.
//
//	go test ./internal/server -run '^$' -bench Handshake -benchmem
func BenchmarkHandshake(b *testing.B) {
	app := startBenchApp(b)
	b.Run("direct", func(b *testing.B) { runHandshakes(b, app) })
	b.Run("proxy", func(b *testing.B) {
		snap, err := config.Parse("switchyard.yaml", handshakeBenchConfig(b, app))
		if err != nil {
			b.Fatal(err)
		}
		s := New(snap, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err := s.Start(); err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		runHandshakes(b, s.ListenerAddrs()[0].String())
	})
}

// handshakeBenchConfig is bench/configs/switchyard.yaml, the config bench/peers.sh measures, with
// ports the kernel picks and the echo app at appPort.
func handshakeBenchConfig(b *testing.B, appPort int) []byte {
	yaml, err := os.ReadFile("../../bench/configs/switchyard.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for from, to := range map[string]string{
		"port_value: 19901": "port_value: 0", // admin
		"port_value: 18084": "port_value: 0", // the listener
		"port_value: 18080": fmt.Sprintf("port_value: %d", appPort),
	} {
		if !bytes.Contains(yaml, []byte(from)) {
			b.Fatalf("bench/configs/switchyard.yaml has no %q", from)
		}
		yaml = bytes.ReplaceAll(yaml, []byte(from), []byte(to))
	}
	return yaml
}

const (
	benchUpgradeRequest = "GET /echo HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	benchUpgradeResponse = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)

// benchPing is a masked WebSocket text frame of 8 bytes, as a client sends it; benchPong is the
// app's unmasked echo of it.
var (
	benchPing = []byte{0x81, 0x88, 1, 2, 3, 4, 'p' ^ 1, 'i' ^ 2, 'n' ^ 3, 'g' ^ 4, ' ' ^ 1, '6' ^ 2, '4' ^ 3, 'B' ^ 4}
	benchPong = []byte{0x81, 0x08, 'p', 'i', 'n', 'g', ' ', '6', '4', 'B'}
)

// startBenchApp is a WebSocket echo app cut to what the benchmark sends, so that its own
// allocations are few and the same in both runs: it reads the request head, answers 101, and
// answers each 14-byte masked frame with its unmasked echo until the client closes.
func startBenchApp(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				var buf [512]byte
				if _, err := readHead(c, buf[:]); err != nil {
					return
				}
				if _, err := io.WriteString(c, benchUpgradeResponse); err != nil {
					return
				}
				for {
					if _, err := io.ReadFull(c, buf[:len(benchPing)]); err != nil {
						return
					}
					if _, err := c.Write(benchPong); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// runHandshakes does b.N handshakes to addr, each checked byte for byte.
func runHandshakes(b *testing.B, addr any) {
	target := fmt.Sprint(addr)
	if port, ok := addr.(int); ok {
		target = fmt.Sprintf("127.0.0.1:%d", port)
	}
	var buf [512]byte
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", target)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.WriteString(c, benchUpgradeRequest); err != nil {
			b.Fatal(err)
		}
		n, err := readHead(c, buf[:])
		if err != nil || !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 101 ")) {
			b.Fatalf("handshake: %q, %v", buf[:n], err)
		}
		if _, err := c.Write(benchPing); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:len(benchPong)]); err != nil || !bytes.Equal(buf[:len(benchPong)], benchPong) {
			b.Fatalf("echo: %q, %v", buf[:len(benchPong)], err)
		}
		c.Close()
	}
}

// readHead reads one HTTP head into buf and returns its length. Neither side of this exchange
// sends anything after a head until the other answers, so a read never takes bytes past it.
func readHead(c net.Conn, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, fmt.Errorf("head longer than %d bytes", len(buf))
}
