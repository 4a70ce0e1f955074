package http2

import (
	"errors"
	"net"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"
)

// keepaliveServer serves ka; every request stream waits until it ends and then reports on ended.
// It returns a raw client that has done its handshake and opened stream 1.
func keepaliveServer(t *testing.T, ka KeepaliveConfig) (*testServer, *rawClient, chan struct{}) {
	t.Helper()
	ended := make(chan struct{}, 1)
	ts := startServer(t, ServerConfig{Keepalive: ka}, func(s *ServerStream) {
		<-s.Context().Done()
		ended <- struct{}{}
	})
	rc := dialRaw(t, ts.addr())
	rc.handshake()
	rc.writeHeaders(1, false, request("POST", "/")...)
	return ts, rc, ended
}

// waitPing reads until a PING that is not an ACK arrives and returns its payload.
func (rc *rawClient) waitPing() [8]byte {
	rc.t.Helper()
	for {
		if f, ok := rc.read().(*h2.PingFrame); ok && !f.IsAck() {
			return f.Data
		}
	}
}

// A client that stops answering PINGs is dead: Timeout after the PING the server closes the
// connection without a GOAWAY, counts keepalive_timeout, resets the open stream, and Serve
// reports ErrKeepaliveTimeout.
func TestServerKeepaliveTimeout(t *testing.T) {
	const interval, timeout = 50 * time.Millisecond, 100 * time.Millisecond
	start := time.Now()
	ts, rc, ended := keepaliveServer(t, KeepaliveConfig{Interval: interval, Timeout: timeout, IntervalJitter: 15})
	rc.waitPing()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := rc.tryRead(time.Until(deadline))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection still open 10 s after an unanswered PING")
		}
		if err != nil {
			break
		}
		if _, ok := f.(*h2.GoAwayFrame); ok {
			t.Fatal("GOAWAY sent to a peer presumed dead")
		}
	}
	if el := time.Since(start); el < interval+timeout {
		t.Errorf("closed after %v, before interval+timeout", el)
	}
	if err := ts.serveErr(); !errors.Is(err, ErrKeepaliveTimeout) {
		t.Errorf("Serve returned %v, want ErrKeepaliveTimeout", err)
	}
	if n := ts.stat("keepalive_timeout"); n != 1 {
		t.Errorf("keepalive_timeout = %d, want 1", n)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Error("the open stream did not end")
	}
}

// A client that answers keeps the connection, and the stream on it, over many intervals.
func TestServerKeepaliveAnswered(t *testing.T) {
	ts, rc, ended := keepaliveServer(t, KeepaliveConfig{Interval: 50 * time.Millisecond, Timeout: 2 * time.Second, IntervalJitter: 15})
	for range 5 {
		if err := rc.fr.WritePing(true, rc.waitPing()); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-ts.errs:
		t.Fatalf("connection ended: %v", err)
	case <-ended:
		t.Fatal("stream ended")
	default:
	}
	if n := ts.stat("keepalive_timeout"); n != 0 {
		t.Errorf("keepalive_timeout = %d, want 0", n)
	}
}

// Frames other than the ACK extend the timeout (Envoy's guard against head-of-line blocking).
func TestServerKeepaliveExtendedByTraffic(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ts, rc, _ := keepaliveServer(t, KeepaliveConfig{Interval: 20 * time.Millisecond, Timeout: timeout})
	rc.waitPing()
	for stop := time.Now().Add(3 * timeout); time.Now().Before(stop); time.Sleep(20 * time.Millisecond) {
		rc.writeData(1, false, []byte("x"))
	}
	select {
	case err := <-ts.errs:
		t.Fatalf("connection ended during traffic: %v", err)
	default:
	}
	if err := ts.serveErr(); !errors.Is(err, ErrKeepaliveTimeout) {
		t.Errorf("after the traffic stopped Serve returned %v, want ErrKeepaliveTimeout", err)
	}
}

// Each interval is Interval plus a random jitter below IntervalJitter percent of it.
func TestKeepaliveIntervalJitter(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		jitter   float64
		max      time.Duration // exclusive, except with no jitter
	}{
		{"no jitter", time.Second, 0, time.Second},
		{"Envoy's default 15%", time.Second, 15, 1150 * time.Millisecond},
		{"100%", 10 * time.Millisecond, 100, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := &Keepalive{cfg: KeepaliveConfig{Interval: tt.interval, IntervalJitter: tt.jitter}}
			varied := false
			first := k.nextInterval()
			for range 1000 {
				d := k.nextInterval()
				if d < tt.interval || d > tt.max || (tt.jitter > 0 && d == tt.max) {
					t.Fatalf("interval %v outside [%v, %v)", d, tt.interval, tt.max)
				}
				varied = varied || d != first
			}
			if varied != (tt.jitter > 0) {
				t.Errorf("intervals varied: %v, want %v", varied, tt.jitter > 0)
			}
		})
	}
}
