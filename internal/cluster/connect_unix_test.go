//go:build unix

package cluster

import (
	"context"
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/config"
)

// fullListener returns the port of a listener whose accept queue is full and never drained, so
// the kernel drops further SYNs and a connect to it hangs until connect_timeout.
func fullListener(t *testing.T) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)) // fills the queue
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return port
}

func TestConnectTimeout(t *testing.T) {
	tests := []struct {
		name   string
		target func(t *testing.T) config.Endpoint
	}{
		{name: "non-routable address", target: func(*testing.T) config.Endpoint {
			return config.Endpoint{Host: "10.255.255.1", Port: 80, Weight: 1}
		}},
		{name: "full accept queue", target: func(t *testing.T) config.Endpoint {
			return config.Endpoint{Host: "127.0.0.1", Port: fullListener(t), Weight: 1}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := static(config.RoundRobin)
			cfg.Endpoints = []config.Endpoint{tt.target(t)}
			cfg.ConnectTimeout = 100 * time.Millisecond
			m, st := start(t, options{}, cfg)

			begin := time.Now()
			l, err := m.Get("c").Acquire(context.Background())
			if err == nil {
				l.Release(false)
			}
			var ce *ConnectError
			if !errors.As(err, &ce) || !ce.Timeout {
				t.Skipf("no connect timeout here: %v", err)
			}
			if d := time.Since(begin); d > 2*time.Second {
				t.Errorf("connect took %v with a 100 ms connect_timeout", d)
			}
			wantStats(t, st, map[string]int64{"upstream_cx_connect_timeout": 1, "upstream_cx_connect_fail": 1, "upstream_cx_active": 0})
		})
	}
}
