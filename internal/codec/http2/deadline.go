package http2

import (
	"net"
	"time"
)

// WriteDeadline keeps a connection's write deadline at least half a timeout ahead of each write,
// moving it only when it has come closer than that: setting it before every write cost a runtime
// timer update per frame batch (1.4% of an HTTP/2 tunnel's CPU). So a write that makes no
// progress fails between Timeout/2 and Timeout after it starts. Owned by whoever writes the
// connection (one writer at a time).
type WriteDeadline struct {
	Timeout time.Duration
	until   time.Time // the deadline now set on the connection; zero: none yet
}

// Extend moves c's write deadline to Timeout from now if fewer than Timeout/2 are left.
func (d *WriteDeadline) Extend(c net.Conn) error {
	now := time.Now()
	if !d.until.IsZero() && d.until.Sub(now) >= d.Timeout/2 {
		return nil
	}
	d.until = now.Add(d.Timeout)
	return c.SetWriteDeadline(d.until)
}
