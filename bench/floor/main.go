// Command floor is a measuring stick for the handshake workload, not a proxy: the least a Go
// program can do to carry a WebSocket handshake, one way per architecture, so the load tool can
// put Switchyard's CPU per handshake next to the floor of the design it uses and of the design
// nginx and HAProxy use.
//
//   - -mode goroutines: a goroutine per connection on Go's net package, as Switchyard (and Caddy)
//     are built: read the request head, dial the upstream, relay the response head, then copy
//     both ways with a second goroutine.
//   - -mode eventloop: one goroutine on a raw epoll set, no Go poller, as nginx and HAProxy are
//     built: every step is a callback on readiness.
//   - -mode coroutines: the goroutine floor's straight-line code, run as coroutines (iter.Pull) on
//     one goroutine's raw epoll set: a wait for a socket hands control back to the loop instead of
//     parking a goroutine. It asks whether code written as Switchyard's is can cost what an event
//     loop costs.
//
// Neither parses HTTP beyond finding the end of a head, routes, rewrites a header or keeps a
// statistic; they forward the client's bytes to one upstream. The event loop assumes that each
// write completes (the handshake workload's messages are small) and drops the pair when one
// does not.
//
//	go run ./bench/floor -mode eventloop -listen 127.0.0.1:18092 -upstream 127.0.0.1:18080
package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
)

func main() {
	mode := flag.String("mode", "goroutines", "goroutines | eventloop | coroutines")
	listen := flag.String("listen", "127.0.0.1:18092", "address to accept on (IPv4 literal and port)")
	upstream := flag.String("upstream", "127.0.0.1:18080", "the echo app (IPv4 literal and port)")
	flag.Parse()
	if err := run(*mode, *listen, *upstream); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(mode, listen, upstream string) error {
	switch mode {
	case "goroutines":
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		return serveGoroutines(ln, upstream)
	case "eventloop", "coroutines":
		la, err := netip.ParseAddrPort(listen)
		if err != nil {
			return fmt.Errorf("-listen: %w", err)
		}
		ua, err := netip.ParseAddrPort(upstream)
		if err != nil {
			return fmt.Errorf("-upstream: %w", err)
		}
		if mode == "coroutines" {
			l, err := newCoroLoop(la, ua)
			if err != nil {
				return err
			}
			return l.run(nil)
		}
		l, err := newEventLoop(la, ua)
		if err != nil {
			return err
		}
		return l.run(nil)
	}
	return fmt.Errorf("-mode %q: want goroutines, eventloop or coroutines", mode)
}
