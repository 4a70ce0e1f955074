package client

import (
	"errors"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/internal/codec/http2"
)

// keepaliveConn opens a stream on a raw peer that has answered its HEADERS with a 200 without
// END_STREAM, so the stream is open when keepalive acts.
func keepaliveConn(t *testing.T, ka http2.KeepaliveConfig) (*ClientConn, *rawPeer, *ClientStream, *http2.Stats) {
	t.Helper()
	st := http2.NewStats(nil)
	cc, p := newRawPeer(t, Config{Keepalive: ka, Stats: st})
	p.handshake(cc)
	s, err := cc.NewStream(ctxT(t), get("/"), true)
	if err != nil {
		t.Fatal(err)
	}
	p.writeHeaders(p.nextHeaders().StreamID, false, ":status", "200")
	if _, err := s.Response(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return cc, p, s, st
}

// waitPing reads until a PING that is not an ACK arrives and returns its payload.
func (p *rawPeer) waitPing() [8]byte {
	p.t.Helper()
	for {
		if f, ok := p.read().(*h2.PingFrame); ok && !f.IsAck() {
			return f.Data
		}
	}
}

// A peer that stops answering PINGs is dead: the connection closes once Timeout passes after the
// PING, counts keepalive_timeout, and the open stream fails as on any lost connection.
func TestKeepaliveTimeoutClosesConnection(t *testing.T) {
	const interval, timeout = 50 * time.Millisecond, 100 * time.Millisecond
	start := time.Now()
	cc, p, s, st := keepaliveConn(t, http2.KeepaliveConfig{Interval: interval, Timeout: timeout, IntervalJitter: 15})
	p.waitPing()
	select {
	case <-cc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection still open 10 s after an unanswered PING")
	}
	if el := time.Since(start); el < interval+timeout {
		t.Errorf("closed after %v, before interval+timeout", el)
	}
	if !errors.Is(cc.Err(), http2.ErrKeepaliveTimeout) {
		t.Errorf("Err() = %v, want ErrKeepaliveTimeout", cc.Err())
	}
	if n := st.KeepaliveTimeout.Value(); n != 1 {
		t.Errorf("keepalive_timeout = %d, want 1", n)
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, ErrConnLost) {
		t.Errorf("Read on the open stream: %v, want ErrConnLost", err)
	}
	p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := p.fr.ReadFrame(); err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the socket was not closed")
			}
			break
		}
	}
}

// A peer that answers keeps the connection: PINGs keep coming, one interval after each ACK.
func TestKeepaliveAnsweredKeepsConnection(t *testing.T) {
	cc, p, _, st := keepaliveConn(t, http2.KeepaliveConfig{Interval: 50 * time.Millisecond, Timeout: 2 * time.Second, IntervalJitter: 15})
	for range 5 {
		if err := p.fr.WritePing(true, p.waitPing()); err != nil {
			t.Fatal(err)
		}
	}
	if err := cc.Err(); err != nil || !cc.Available() {
		t.Errorf("after 5 answered PINGs: Err %v, Available %v", err, cc.Available())
	}
	if n := st.KeepaliveTimeout.Value(); n != 0 {
		t.Errorf("keepalive_timeout = %d, want 0", n)
	}
}

// As in Envoy, any frame received while a PING is outstanding extends its timeout: an ACK stuck
// behind other traffic does not kill a connection that is visibly alive. Once the traffic stops,
// the timeout applies.
func TestKeepaliveTimeoutExtendedByTraffic(t *testing.T) {
	const timeout = 300 * time.Millisecond
	cc, p, s, st := keepaliveConn(t, http2.KeepaliveConfig{Interval: 20 * time.Millisecond, Timeout: timeout})
	p.waitPing()
	sent := 0
	stop := time.Now().Add(3 * timeout)
	for time.Now().Before(stop) {
		p.writeData(s.ID(), false, "x") // traffic, but no PING ACK
		sent++
		time.Sleep(20 * time.Millisecond)
	}
	if err := cc.Err(); err != nil {
		t.Fatalf("connection closed during traffic (after %d DATA frames): %v", sent, err)
	}
	select {
	case <-cc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection still open 10 s after the traffic stopped")
	}
	if n := st.KeepaliveTimeout.Value(); n != 1 {
		t.Errorf("keepalive_timeout = %d, want 1", n)
	}
}

// connection_idle_interval: a stream opened on a connection that has received nothing for that
// long is preceded by a PING; one opened while frames are recent is not.
func TestKeepaliveIdleIntervalPingsBeforeStream(t *testing.T) {
	const idle = 300 * time.Millisecond
	st := http2.NewStats(nil)
	cc, p := newRawPeer(t, Config{Stats: st, Keepalive: http2.KeepaliveConfig{Timeout: 5 * time.Second, ConnectionIdleInterval: idle}})
	p.handshake(cc)
	for { // the client's preface frames, up to its ACK of our SETTINGS
		if sf, ok := p.read().(*h2.SettingsFrame); ok && sf.IsAck() {
			break
		}
	}
	time.Sleep(idle + 100*time.Millisecond)

	s1, err := cc.NewStream(ctxT(t), get("/1"), true)
	if err != nil {
		t.Fatal(err)
	}
	ping, ok := p.read().(*h2.PingFrame)
	if !ok || ping.IsAck() {
		t.Fatalf("first frame after an idle period is %v, want a PING", ping)
	}
	if err := p.fr.WritePing(true, ping.Data); err != nil {
		t.Fatal(err)
	}
	hf := p.nextHeaders()
	p.writeHeaders(hf.StreamID, true, ":status", "204")
	if _, err := s1.Response(ctxT(t)); err != nil { // the ACK, sent before, has been read too
		t.Fatal(err)
	}

	if _, err := cc.NewStream(ctxT(t), get("/2"), true); err != nil {
		t.Fatal(err)
	}
	if f := p.read(); f.Header().Type != h2.FrameHeaders {
		t.Fatalf("frame for a stream on a busy connection: %v, want HEADERS (no PING)", f.Header())
	}
	if err := cc.Err(); err != nil || st.KeepaliveTimeout.Value() != 0 {
		t.Errorf("Err %v keepalive_timeout %d, want a healthy connection", err, st.KeepaliveTimeout.Value())
	}
}

// Without Keepalive no PING is ever sent.
func TestNoKeepaliveByDefault(t *testing.T) {
	cc, p := newRawPeer(t, Config{})
	p.handshake(cc)
	p.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			break // the deadline: nothing more came
		}
		if pf, ok := f.(*h2.PingFrame); ok {
			t.Fatalf("unexpected PING %v", pf)
		}
	}
}

// A stream whose received DATA has all been read holds no receive buffer (an idle tunnel costs no
// buffer memory); it takes one again when DATA arrives, and a partial read keeps the rest.
func TestIdleStreamReleasesReceiveBuffer(t *testing.T) {
	cc, p := newRawPeer(t, Config{})
	p.handshake(cc)
	s, id := p.answered(cc, get("/"), true)
	holds := func() bool {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		return s.rbuf != nil
	}
	buf := make([]byte, 4)
	for _, round := range []string{"0123456789", "abcdef"} {
		p.writeData(id, false, round)
		s.WaitReadable()
		var got []byte
		for len(got) < len(round) {
			n, err := s.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, buf[:n]...)
			if rest := len(got) < len(round); holds() != rest {
				t.Fatalf("after reading %q of %q: holds a buffer %v, want %v", got, round, holds(), rest)
			}
		}
		if string(got) != round {
			t.Fatalf("read %q, want %q", got, round)
		}
	}
}
