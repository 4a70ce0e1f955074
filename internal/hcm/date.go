package hcm

import (
	"net/http"
	"sync/atomic"
	"time"
)

// formattedDate is the Date header value for one second.
type formattedDate struct {
	unix  int64
	value string
}

var lastDate atomic.Pointer[formattedDate]

// httpDate is the Date header value for now (RFC 9110 §6.6.1, IMF-fixdate). It is formatted once
// a second and shared: formatting it per response cost an allocation and a few hundred ns on every
// handshake.
func httpDate() string {
	now := time.Now()
	if d := lastDate.Load(); d != nil && d.unix == now.Unix() {
		return d.value
	}
	d := &formattedDate{unix: now.Unix(), value: now.UTC().Format(http.TimeFormat)}
	lastDate.Store(d)
	return d.value
}
