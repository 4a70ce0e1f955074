package client

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/headers"
)

var enableConnect = h2.Setting{ID: h2.SettingEnableConnectProtocol, Val: 1}

func upgradeReq(method string) *headers.Map {
	return headers.New(
		headers.Method, method, headers.Path, "/chat", headers.Authority, "example.com:80",
		"upgrade", "websocket", "connection", "Upgrade", "content-length", "0",
		"sec-websocket-version", "13",
	)
}

// The Upgrade→CONNECT rewrite (RFC 8441 §4, the seed's F02): what the upstream receives and what
// the proxy sees back, for GET and for POST (whose method is lost: the seed's documented flaw).
func TestExtendedConnectRequestShape(t *testing.T) {
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			cc, p := newRawPeer(t, Config{})
			p.handshake(cc, enableConnect)
			s, err := cc.NewStream(ctxT(t), upgradeReq(method), false)
			if err != nil {
				t.Fatal(err)
			}
			hf := p.nextHeaders()
			got, names := fieldsOf(hf)
			want := map[string]string{
				":method": "CONNECT", ":protocol": "websocket", ":path": "/chat", ":scheme": "http",
				":authority": "example.com:80", "sec-websocket-version": "13",
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			for _, k := range []string{"upgrade", "connection", "content-length", "host"} {
				if slices.Contains(names, k) {
					t.Errorf("%s was forwarded over HTTP/2", k)
				}
			}
			if hf.StreamEnded() {
				t.Error("END_STREAM on the CONNECT headers")
			}
			p.writeHeaders(hf.StreamID, false, ":status", "200")
			resp, err := s.Response(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if resp.Get(":status") != "101" || resp.Get("upgrade") != "websocket" || resp.Get("connection") != "upgrade" {
				t.Errorf("response %v, want 101 + upgrade: websocket + connection: upgrade", resp.Fields())
			}
			s.Reset(h2.ErrCodeCancel)
		})
	}
}

// A tunnel over extended CONNECT: bytes both ways and END_STREAM as a half-close in each
// direction, the other direction going on.
func TestExtendedConnectTunnelHalfClose(t *testing.T) {
	cc, p := newRawPeer(t, Config{})
	p.handshake(cc, enableConnect)
	open := func() (*ClientStream, uint32) { return p.answered(cc, upgradeReq("GET"), false) }
	read := func(s *ClientStream, want string) {
		t.Helper()
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(s, buf); err != nil || string(buf) != want {
			t.Fatalf("read %q, %v; want %q", buf, err, want)
		}
	}
	expectData := func(id uint32, want string, wantEnd bool) {
		t.Helper()
		gotID, data, end := p.nextData()
		if gotID != id || string(data) != want || end != wantEnd {
			t.Fatalf("DATA stream %d %q end=%v; want %d %q end=%v", gotID, data, end, id, want, wantEnd)
		}
	}

	t.Run("client half-closes first", func(t *testing.T) {
		s, id := open()
		if err := s.Write([]byte("hello"), false); err != nil {
			t.Fatal(err)
		}
		expectData(id, "hello", false)
		p.writeData(id, false, "world")
		read(s, "world")
		if err := s.Write(nil, true); err != nil { // half-close: empty DATA + END_STREAM
			t.Fatal(err)
		}
		expectData(id, "", true)
		if err := s.Write([]byte("x"), false); !errors.Is(err, ErrStreamClosed) {
			t.Errorf("write after END_STREAM: %v", err)
		}
		p.writeData(id, false, "still sending")
		read(s, "still sending")
		p.writeData(id, true, "bye")
		read(s, "bye")
		if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("after the peer's END_STREAM: %d, %v", n, err)
		}
		<-s.Context().Done()
	})
	t.Run("upstream half-closes first", func(t *testing.T) {
		s, id := open()
		p.writeData(id, true, "last words")
		read(s, "last words")
		if _, err := s.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("want EOF, got %v", err)
		}
		if err := s.Write([]byte("still talking"), false); err != nil {
			t.Fatal(err)
		}
		expectData(id, "still talking", false)
		select {
		case <-s.Context().Done():
			t.Fatal("stream ended while the client direction is open")
		default:
		}
		if err := s.Write([]byte("done"), true); err != nil {
			t.Fatal(err)
		}
		expectData(id, "done", true)
		<-s.Context().Done()
	})
	if n := cc.ActiveStreams(); n != 0 {
		t.Errorf("active %d", n)
	}
}

// Without SETTINGS_ENABLE_CONNECT_PROTOCOL an upgrade is refused before anything is sent.
func TestExtendedConnectNotAdvertised(t *testing.T) {
	for _, settings := range [][]h2.Setting{nil, {{ID: h2.SettingEnableConnectProtocol, Val: 0}}} {
		cc, p := newRawPeer(t, Config{})
		p.handshake(cc, settings...)
		_, err := cc.NewStream(ctxT(t), upgradeReq("GET"), false)
		if !errors.Is(err, ErrNoExtendedConnect) {
			t.Fatalf("err %v, want ErrNoExtendedConnect", err)
		}
		if known, allowed := cc.PeerAllowsExtendedConnect(); !known || allowed {
			t.Errorf("PeerAllowsExtendedConnect = %v, %v", known, allowed)
		}
		if n := cc.ActiveStreams(); n != 0 {
			t.Errorf("active %d", n)
		}
		cc.Close()
		p.drainNoHeaders()
	}
}

// A peer that never sends its SETTINGS: the upgrade waits for them, bounded by ctx, and sends
// nothing.
func TestExtendedConnectNoSettingsTimeout(t *testing.T) {
	cc, p := newRawPeer(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := cc.NewStream(ctx, upgradeReq("GET"), false)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
	if known, _ := cc.PeerAllowsExtendedConnect(); known {
		t.Error("settings known without SETTINGS")
	}
	cc.Close()
	p.drainNoHeaders()
}

// A non-200 answer to an extended CONNECT passes through unconverted, with its body.
func TestExtendedConnectRejected(t *testing.T) {
	cc, p := newRawPeer(t, Config{})
	p.handshake(cc, enableConnect)
	s, err := cc.NewStream(ctxT(t), upgradeReq("GET"), false)
	if err != nil {
		t.Fatal(err)
	}
	id := p.nextHeaders().StreamID
	p.writeHeaders(id, false, ":status", "403", "content-length", "9")
	p.writeData(id, true, "forbidden")
	resp, err := s.Response(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Get(":status") != "403" || resp.Has("upgrade") || resp.Has("connection") {
		t.Errorf("response %v", resp.Fields())
	}
	if body := readAll(t, s); string(body) != "forbidden" {
		t.Errorf("body %q", body)
	}
}
