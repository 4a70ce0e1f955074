package cluster

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/internal/codec/http2"
	"github.com/switchyard-proxy/switchyard/internal/config"
)

// The cluster's http2_protocol_options.connection_keepalive reaches the HTTP/2 client: an upstream
// that stops answering PINGs loses its pooled connection, counted in
// cluster.<name>.http2.keepalive_timeout, and the pool forgets it.
func TestH2KeepaliveTimeoutDropsPooledConn(t *testing.T) {
	u := newUpstream(t, "127.0.0.1:0")
	cfg := static(config.RoundRobin, u)
	cfg.Protocol = config.UpstreamHTTP2
	cfg.HTTP2 = &config.HTTP2Options{KeepaliveInterval: 50 * time.Millisecond, KeepaliveTimeout: 100 * time.Millisecond}
	m, st := start(t, options{}, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hc, err := m.Get("c").AcquireH2(ctx)
	if err != nil {
		t.Fatal(err)
	}

	nc := u.next(t)
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(nc, make([]byte, len(h2.ClientPreface))); err != nil {
		t.Fatal(err)
	}
	fr := h2.NewFramer(nc, nc)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for { // the upstream reads the PING and never answers it
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no PING from the cluster's connection: %v", err)
		}
		if p, ok := f.(*h2.PingFrame); ok && !p.IsAck() {
			break
		}
	}
	select {
	case <-hc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("pooled connection still open 10 s after an unanswered PING")
	}
	if !errors.Is(hc.Err(), http2.ErrKeepaliveTimeout) {
		t.Errorf("Err() = %v, want ErrKeepaliveTimeout", hc.Err())
	}
	for { // then finds the socket closed
		if _, err := fr.ReadFrame(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the cluster did not close the socket")
			}
			break
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.Get("c").Stats.UpstreamCxHTTP2Active.Value() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	wantStats(t, st, map[string]int64{"http2.keepalive_timeout": 1, "upstream_cx_http2_active": 0})
}
