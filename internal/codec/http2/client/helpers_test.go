//lint:file-ignore SA1019 the tests use x/net's own HTTP/2 server as a real peer on purpose

package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	h2 "golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/switchyard-proxy/switchyard/headers"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tcpPair returns the two ends of a real loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return client, r.c
}

// xnetPeer runs golang.org/x/net/http2.Server on the server end and returns a ClientConn on
// the client end; both are closed at cleanup.
func xnetPeer(t testing.TB, srv *h2.Server, cfg Config, handler http.Handler) *ClientConn {
	t.Helper()
	cn, sn := tcpPair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(sn, &h2.ServeConnOpts{Handler: handler})
	}()
	cc, err := NewClientConn(cn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		sn.Close()
		<-done
	})
	return cc
}

// waitSettings waits until the peer's first SETTINGS has been applied.
func waitSettings(t testing.TB, cc *ClientConn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if known, _ := cc.PeerAllowsExtendedConnect(); known {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no SETTINGS from the peer")
		}
		time.Sleep(time.Millisecond)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func get(path string) *headers.Map {
	return headers.New(headers.Method, "GET", headers.Path, path, headers.Authority, "example.com")
}

// rawPeer is a hand-driven HTTP/2 server on the Framer, for what x/net's server will not do
// (extended CONNECT without GODEBUG, malformed responses, GOAWAY and resets on cue). Its methods
// run on the test goroutine.
type rawPeer struct {
	t    testing.TB
	nc   net.Conn
	fr   *h2.Framer
	enc  *hpack.Encoder
	ebuf bytes.Buffer
}

// newRawPeer connects a ClientConn to a raw peer and reads the client preface. The peer has not
// sent its SETTINGS yet.
func newRawPeer(t testing.TB, cfg Config) (*ClientConn, *rawPeer) {
	t.Helper()
	cn, sn := tcpPair(t)
	p := &rawPeer{t: t, nc: sn}
	p.fr = h2.NewFramer(sn, sn)
	p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	p.fr.MaxHeaderListSize = 1 << 20
	p.enc = hpack.NewEncoder(&p.ebuf)
	cc, err := NewClientConn(cn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		sn.Close()
	})
	preface := make([]byte, len(h2.ClientPreface))
	sn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(sn, preface); err != nil || string(preface) != h2.ClientPreface {
		t.Fatalf("preface %q, %v", preface, err)
	}
	return cc, p
}

// handshake sends the peer's SETTINGS and waits until the client has applied them.
func (p *rawPeer) handshake(cc *ClientConn, settings ...h2.Setting) {
	p.t.Helper()
	if err := p.fr.WriteSettings(settings...); err != nil {
		p.t.Fatal(err)
	}
	waitSettings(p.t, cc)
}

// answered opens a stream for req, answers it with :status 200 (no END_STREAM) and returns it
// once the client has the response, with its id.
func (p *rawPeer) answered(cc *ClientConn, req *headers.Map, end bool) (*ClientStream, uint32) {
	p.t.Helper()
	s, err := cc.NewStream(ctxT(p.t), req, end)
	if err != nil {
		p.t.Fatal(err)
	}
	id := p.nextHeaders().StreamID
	p.writeHeaders(id, false, ":status", "200")
	if _, err := s.Response(ctxT(p.t)); err != nil {
		p.t.Fatal(err)
	}
	return s, id
}

// read returns the next frame, failing the test after 5s.
func (p *rawPeer) read() h2.Frame {
	p.t.Helper()
	p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := p.fr.ReadFrame()
	if err != nil {
		p.t.Fatalf("peer read: %v", err)
	}
	return f
}

// next returns the next frame that is not connection housekeeping (SETTINGS, WINDOW_UPDATE,
// PING).
func (p *rawPeer) next() h2.Frame {
	p.t.Helper()
	for {
		switch f := p.read().(type) {
		case *h2.SettingsFrame, *h2.WindowUpdateFrame, *h2.PingFrame:
		default:
			return f
		}
	}
}

func (p *rawPeer) nextHeaders() *h2.MetaHeadersFrame {
	p.t.Helper()
	f := p.next()
	hf, ok := f.(*h2.MetaHeadersFrame)
	if !ok {
		p.t.Fatalf("want HEADERS, got %v", f.Header())
	}
	return hf
}

// nextData returns the next DATA frame's payload (copied) and END_STREAM flag.
func (p *rawPeer) nextData() (uint32, []byte, bool) {
	p.t.Helper()
	f := p.next()
	df, ok := f.(*h2.DataFrame)
	if !ok {
		p.t.Fatalf("want DATA, got %v", f.Header())
	}
	return df.StreamID, append([]byte(nil), df.Data()...), df.StreamEnded()
}

func (p *rawPeer) nextRST() *h2.RSTStreamFrame {
	p.t.Helper()
	f := p.next()
	rf, ok := f.(*h2.RSTStreamFrame)
	if !ok {
		p.t.Fatalf("want RST_STREAM, got %v", f.Header())
	}
	return rf
}

// writeHeaders sends one header block (name, value pairs, in order, unvalidated).
func (p *rawPeer) writeHeaders(id uint32, end bool, kv ...string) {
	p.t.Helper()
	p.ebuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		p.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	if err := p.fr.WriteHeaders(h2.HeadersFrameParam{
		StreamID: id, BlockFragment: p.ebuf.Bytes(), EndStream: end, EndHeaders: true,
	}); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) writeData(id uint32, end bool, data string) {
	p.t.Helper()
	if err := p.fr.WriteData(id, end, []byte(data)); err != nil {
		p.t.Fatal(err)
	}
}

// drainNoHeaders reads until EOF and fails if any HEADERS frame arrives.
func (p *rawPeer) drainNoHeaders() {
	p.t.Helper()
	p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					p.t.Fatal("client did not close")
				}
			}
			return
		}
		if _, ok := f.(*h2.MetaHeadersFrame); ok {
			p.t.Fatalf("peer received HEADERS %v", f.Header())
		}
	}
}

// fieldsOf turns a decoded header block into name→value (last wins) plus the names in order.
func fieldsOf(f *h2.MetaHeadersFrame) (map[string]string, []string) {
	m := map[string]string{}
	var names []string
	for _, hf := range f.Fields {
		m[hf.Name] = hf.Value
		names = append(names, hf.Name)
	}
	return m, names
}

// readAll reads s to io.EOF.
func readAll(t testing.TB, s *ClientStream) []byte {
	t.Helper()
	var buf bytes.Buffer
	p := make([]byte, 32<<10)
	for {
		n, err := s.Read(p)
		buf.Write(p[:n])
		if err == io.EOF {
			return buf.Bytes()
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	}
}

// echoPeer is a raw peer loop for benchmarks: it answers HEADERS with 200, echoes DATA on the
// same stream and returns every byte of window at once. It returns when the connection closes.
func echoPeer(nc net.Conn, wg *sync.WaitGroup) {
	defer wg.Done()
	defer nc.Close()
	preface := make([]byte, len(h2.ClientPreface))
	if _, err := io.ReadFull(nc, preface); err != nil {
		return
	}
	fr := h2.NewFramer(nc, nc)
	fr.SetReuseFrames()
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	status := append([]byte(nil), hb.Bytes()...)
	fr.WriteSettings(h2.Setting{ID: h2.SettingInitialWindowSize, Val: 1 << 20})
	fr.WriteWindowUpdate(0, 1<<30)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *h2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *h2.MetaHeadersFrame:
			fr.WriteHeaders(h2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: status, EndHeaders: true})
		case *h2.DataFrame:
			if n := uint32(len(f.Data())); n > 0 {
				fr.WriteData(f.StreamID, f.StreamEnded(), f.Data())
				fr.WriteWindowUpdate(0, n)
				fr.WriteWindowUpdate(f.StreamID, n)
			} else if f.StreamEnded() {
				fr.WriteData(f.StreamID, true, nil)
			}
		}
	}
}
