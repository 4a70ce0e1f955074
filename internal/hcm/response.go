package hcm

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/codec/http1"
	"github.com/switchyard-proxy/switchyard/internal/tunnel"
)

// bodyMode is how the response body is framed on the downstream connection.
type bodyMode int

const (
	bodyNone    bodyMode = iota // HEAD, 1xx, 204, 304
	bodyLength                  // Content-Length
	bodyChunked                 // chunked
	bodyClose                   // until the connection closes (HTTP/1.0 clients)
	bodyRaw                     // a tunnel after 101
)

// responseWriter serialises the encoded response onto the downstream connection. Every method is
// called with the stream's encMu held.
type responseWriter struct {
	s          *stream
	mode       bodyMode
	chunked    *http1.ChunkedWriter
	ended      bool
	closeAfter bool
	direct     bool // the tunnel writes to the socket, not through the buffered writer
}

func http1StatusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "Unknown"
}

// writeHeaders is the last stage of the encode direction.
func (w *responseWriter) writeHeaders(h *headers.Map, end bool) {
	s := w.s
	c := s.c
	status, _ := strconv.Atoi(h.Get(headers.Status))
	s.respStarted.Store(true)

	switchProto := status == 101 && s.upgrade != "" && headers.IsUpgrade(h) &&
		strings.EqualFold(headers.UpgradeToken(h), s.upgrade)
	if status == 101 && !switchProto {
		// The router only passes a 101 that answers this upgrade; anything else is a bug upstream
		// of here, and a switch the client did not ask for must never reach it.
		s.m.log.Error("dropping a 101 that does not answer the request", "upgrade", s.upgrade)
		s.reset("invalid_101")
		return
	}

	if switchProto {
		upgrade := h.Values("upgrade")
		headers.RemoveHopByHop(h, false)
		h.Set("connection", "upgrade")
		for _, u := range upgrade {
			h.Add("upgrade", u)
		}
		h.Del("content-length")
		w.mode = bodyRaw
	} else {
		offered := h.Values("upgrade")
		headers.RemoveHopByHop(h, false)
		if status == 426 {
			// RFC 9110 §15.5.22: a 426 must say which protocols the client could upgrade to.
			for _, u := range offered {
				h.Add("upgrade", u)
			}
		}
		w.decideFraming(h, status, end)
	}
	if name := s.m.cfg.ServerName; name != "" {
		h.Set("server", name)
	}
	if !h.Has("date") {
		h.Set("date", time.Now().UTC().Format(http.TimeFormat))
	}
	if !switchProto {
		if !s.decodeDone.Load() {
			// The response began before the request ended: the rest of the request cannot be
			// found again on this connection.
			s.m.stats.RqResponseBeforeComplete.Inc()
			w.closeAfter = true
		}
		if s.c.closing.Load() || s.m.draining.Load() || !s.req.KeepAlive || w.mode == bodyClose {
			w.closeAfter = true
		}
		if max := s.m.cfg.MaxRequestsPerConn; max > 0 && c.requests >= max {
			s.m.stats.CxMaxRequestsReached.Inc()
			w.closeAfter = true
		}
		if w.closeAfter {
			h.Set("connection", "close")
		}
	}
	s.m.stats.countResponse(status)

	c.wmu.Lock()
	err := http1.WriteResponseHead(c.bw, h)
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		s.reset("downstream_write_failed")
		return
	}
	if switchProto {
		s.tunnelOpen.Store(true)
		s.upStats.Established.Inc()
		s.upStats.Active.Inc()
		w.direct = true
		c.bw = nil // a tunnel writes straight to the socket: no idle write buffer
		return
	}
	if end || w.mode == bodyNone {
		w.finish()
	}
}

// decideFraming picks the body framing of a non-tunnel response.
func (w *responseWriter) decideFraming(h *headers.Map, status int, end bool) {
	s := w.s
	switch {
	case s.method == "HEAD" || status < 200 || status == 204 || status == 304:
		w.mode = bodyNone
		if status < 200 || status == 204 {
			h.Del("content-length")
		}
	case end:
		w.mode = bodyNone
		h.Set("content-length", "0")
	case h.Has("content-length"):
		w.mode = bodyLength
	case s.req.Minor == 1:
		w.mode = bodyChunked
		h.Set("transfer-encoding", "chunked")
		w.chunked = http1.NewChunkedWriter(s.c.bw)
	default:
		w.mode = bodyClose
	}
}

// writeData writes body bytes or tunnel payload downstream.
func (w *responseWriter) writeData(b *buffer.Buffer, end bool) {
	s := w.s
	c := s.c
	if w.ended {
		return
	}
	var err error
	if b.Len() > 0 && w.mode != bodyNone {
		switch {
		case w.direct:
			_, err = c.nc.Write(b.Bytes())
		case w.mode == bodyChunked:
			c.wmu.Lock()
			_, err = w.chunked.Write(b.Bytes())
			if err == nil {
				err = c.bw.Flush()
			}
			c.wmu.Unlock()
		default:
			c.wmu.Lock()
			_, err = c.bw.Write(b.Bytes())
			if err == nil {
				err = c.bw.Flush()
			}
			c.wmu.Unlock()
		}
	}
	if err != nil {
		s.reset("downstream_write_failed")
		return
	}
	if end {
		w.finish()
	}
}

// finish ends the response: the last chunk, or the tunnel's half-close toward the client.
func (w *responseWriter) finish() {
	s := w.s
	c := s.c
	w.ended = true
	switch {
	case w.mode == bodyRaw:
		s.downEnded.Store(true)
		if !tunnel.CloseWrite(c.nc) {
			s.reset("half_close_unsupported")
			return
		}
		s.maybeTunnelDone()
		return
	case w.mode == bodyChunked:
		c.wmu.Lock()
		err := w.chunked.Close(nil)
		if err == nil {
			err = c.bw.Flush()
		}
		c.wmu.Unlock()
		if err != nil {
			s.reset("downstream_write_failed")
			return
		}
	}
	s.markDone()
}
