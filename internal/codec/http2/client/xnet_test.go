//lint:file-ignore SA1019 the tests use x/net's own HTTP/2 server as a real peer on purpose

package client

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	h2 "golang.org/x/net/http2"

	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/testing/sinkcheck"
)

// Requests against x/net's server: the ordinary HTTP/2 a real upstream speaks.
func TestRequestsAgainstXNetServer(t *testing.T) {
	bigValue := strings.Repeat("0123456789abcdef", 100<<10/16) // 100 KiB: HEADERS + CONTINUATION
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hello":
			w.Header().Set("x-test", "yes")
			w.Header().Set("x-method", r.Method)
			io.WriteString(w, "hello")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/big-header":
			// Request header in, a 30 KiB response header out: CONTINUATION both ways.
			w.Header().Set("x-got", fmt.Sprint(len(r.Header.Get("x-big")), r.Header.Get("x-big") == bigValue))
			w.Header().Set("x-big-response", bigValue[:30<<10])
		case "/trailers":
			w.Header().Set("Trailer", "x-checksum")
			io.WriteString(w, "body")
			w.Header().Set("x-checksum", "abc")
		}
	})
	tests := []struct {
		name       string
		req        *headers.Map
		wantStatus string
		wantBody   string
		wantEnd    bool // EndStreamOnHeaders
		check      func(t *testing.T, resp *headers.Map, s *ClientStream)
	}{
		{
			name: "GET", req: get("/hello"), wantStatus: "200", wantBody: "hello",
			check: func(t *testing.T, resp *headers.Map, _ *ClientStream) {
				if resp.Get("x-test") != "yes" || resp.Get("x-method") != "GET" {
					t.Errorf("headers %v", resp.Fields())
				}
			},
		},
		{name: "204 has no body", req: get("/empty"), wantStatus: "204", wantEnd: true},
		{
			name:       "large header blocks both ways",
			req:        headers.New(":method", "GET", ":path", "/big-header", ":authority", "a", "x-big", bigValue),
			wantStatus: "200", wantEnd: true,
			check: func(t *testing.T, resp *headers.Map, _ *ClientStream) {
				if got := resp.Get("x-got"); got != fmt.Sprint(len(bigValue), true) {
					t.Errorf("server saw x-big as %q", got)
				}
				if resp.Get("x-big-response") != bigValue[:30<<10] {
					t.Errorf("response header damaged (%d bytes)", len(resp.Get("x-big-response")))
				}
			},
		},
		{
			name: "trailers", req: get("/trailers"), wantStatus: "200", wantBody: "body",
			check: func(t *testing.T, _ *headers.Map, s *ClientStream) {
				if tr := s.Trailers(); tr == nil || tr.Get("x-checksum") != "abc" {
					t.Errorf("trailers %v", tr)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{}
			cfg = withDefaults(cfg)
			cc := xnetPeer(t, &h2.Server{}, cfg, handler)
			s, err := cc.NewStream(ctxT(t), tt.req, true)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := s.Response(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Get(headers.Status); got != tt.wantStatus {
				t.Fatalf("status %s", got)
			}
			if s.EndStreamOnHeaders() != tt.wantEnd {
				t.Errorf("EndStreamOnHeaders = %v", s.EndStreamOnHeaders())
			}
			if body := readAll(t, s); string(body) != tt.wantBody {
				t.Errorf("body %q", body)
			}
			if tt.check != nil {
				tt.check(t, resp, s)
			}
			if n := cc.ActiveStreams(); n != 0 {
				t.Errorf("active streams %d after the exchange", n)
			}
			if tt.name == "trailers" && cfg.Stats.Trailers.Value() != 1 {
				t.Errorf("trailers stat %d", cfg.Stats.Trailers.Value())
			}
			select {
			case <-s.Context().Done():
			case <-time.After(5 * time.Second):
				t.Error("stream context not done after both directions ended")
			}
		})
	}
}

// A 10 MiB request body is echoed as a 10 MiB response body while it is still being sent:
// flow control in both directions, with the default windows and with the minimum ones.
func TestTenMiBBothWays(t *testing.T) {
	for _, cfg := range []Config{{}, {InitialStreamWindowSize: 65535, InitialConnectionWindowSize: 65535}} {
		t.Run(fmt.Sprint(cfg.InitialStreamWindowSize), func(t *testing.T) {
			cc := xnetPeer(t, &h2.Server{}, cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(w, r.Body)
			}))
			body := make([]byte, 10<<20)
			rand.Read(body)
			s, err := cc.NewStream(ctxT(t), headers.New(":method", "POST", ":path", "/echo", ":authority", "a"), false)
			if err != nil {
				t.Fatal(err)
			}
			werr := make(chan error, 1)
			go func() {
				// Uneven chunks: frames are cut by the windows and MAX_FRAME_SIZE, not by us.
				p := body
				for len(p) > 0 {
					n := min(len(p), 100_000)
					if err := s.Write(p[:n], n == len(p)); err != nil {
						werr <- err
						return
					}
					p = p[n:]
				}
				werr <- nil
			}()
			if _, err := s.Response(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, s)
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(got) != sha256.Sum256(body) {
				t.Fatalf("echo differs: %d bytes back of %d", len(got), len(body))
			}
		})
	}
}

// 100 streams are open at once on one connection: the handler releases them only when all
// 100 have arrived.
func TestHundredConcurrentStreams(t *testing.T) {
	const n = 100
	var arrived atomic.Int32
	release := make(chan struct{})
	cc := xnetPeer(t, &h2.Server{MaxConcurrentStreams: 250}, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == n {
			close(release)
		}
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		io.WriteString(w, r.URL.Path)
	}))
	waitSettings(t, cc)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("/s/%d", i)
			s, err := cc.NewStream(ctxT(t), get(path), true)
			if err != nil {
				errs <- err
				return
			}
			if _, err := s.Response(ctxT(t)); err != nil {
				errs <- err
				return
			}
			if body, err := io.ReadAll(s); err != nil || string(body) != path {
				errs <- fmt.Errorf("%s: body %q, %v", path, body, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	select {
	case <-release:
	default:
		t.Fatal("the 100 streams were not concurrent")
	}
	if got := cc.ActiveStreams(); got != 0 {
		t.Errorf("active %d", got)
	}
}

// The peer's MAX_CONCURRENT_STREAMS bounds the connection: at the limit Available is false and
// NewStream fails with ErrNoCapacity; a finished stream frees its slot.
func TestMaxConcurrentStreams(t *testing.T) {
	release := make(chan struct{})
	cc := xnetPeer(t, &h2.Server{MaxConcurrentStreams: 2}, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "ok")
	}))
	waitSettings(t, cc)
	var open []*ClientStream
	for range 2 {
		if !cc.Available() {
			t.Fatal("not available under the limit")
		}
		s, err := cc.NewStream(ctxT(t), get("/"), true)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, s)
	}
	if cc.Available() {
		t.Error("Available at the peer's limit")
	}
	if _, err := cc.NewStream(ctxT(t), get("/"), true); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("third stream: %v, want ErrNoCapacity", err)
	}
	close(release)
	for _, s := range open {
		if _, err := s.Response(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		readAll(t, s)
	}
	if !cc.Available() {
		t.Error("not available after the streams finished")
	}
}

// TestDataSinkKeepsOrder: a sink that takes all, half or none of what it is offered, and a
// reader that is sometimes slow to come back to Read, see together exactly the bytes the server
// sent, in order — many windows' worth, so the sink's bytes open the windows as Read's do. Which
// path gets offered what depends on timing (DATA that comes while bytes wait for Read must wait
// behind them, and under load the reader can lag all along): a run in which one path carried
// nothing proves less, and is tried again, up to three times; every run must keep the order.
func TestDataSinkKeepsOrder(t *testing.T) {
	payload := make([]byte, 4<<20)
	rand.Read(payload)
	for attempt := 1; ; attempt++ {
		cc := xnetPeer(t, &h2.Server{}, Config{InitialStreamWindowSize: 65535, InitialConnectionWindowSize: 65535},
			http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(200)
				for p, i := payload, 0; len(p) > 0; i++ {
					n := min(len(p), []int{1, 900, 16384, 70000, 5}[i%5])
					w.Write(p[:n])
					w.(http.Flusher).Flush()
					p = p[n:]
				}
			}))
		s, err := cc.NewStream(ctxT(t), get("/"), true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Response(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		r := sinkcheck.Run(s)
		if r.Err != nil || !bytes.Equal(r.Got, payload) {
			t.Fatalf("the sink and Read saw %d bytes together (%v), the server sent %d; equal: %v", len(r.Got), r.Err, len(payload), bytes.Equal(r.Got, payload))
		}
		if r.Sunk > 0 && r.Read > 0 {
			return
		}
		if attempt == 3 {
			t.Fatalf("sink took %d bytes and Read %d in each of %d runs: both paths should have carried some", r.Sunk, r.Read, attempt)
		}
		t.Logf("run %d: sink took %d bytes and Read %d; again", attempt, r.Sunk, r.Read)
	}
}
