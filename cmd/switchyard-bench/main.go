// Command switchyard-bench measures a WebSocket proxy with the load issue's workloads and prints
// one JSON line per run; with -serve it is the WebSocket echo server to measure against.
//
//	switchyard-bench -serve 127.0.0.1:18080
//	switchyard-bench -url ws://127.0.0.1:18081/ -workload echo -conns 100 -size 1024 -duration 5s -pid PID
//	switchyard-bench -url ws://127.0.0.1:18081/ -proto h2 -workload handshakes -conns 50
//	switchyard-bench -url ws://127.0.0.1:18081/ -workload idle -conns 9000 -pid PID
//	switchyard-bench -url ws://127.0.0.1:18085/ -workload echo -conns 100 -pid FRONT_PID,SIDECAR_PID
//
// See internal/bench for what each workload counts.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/bench"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var cfg bench.Config
	var serve string
	fs := flag.NewFlagSet("switchyard-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&serve, "serve", "", "run the WebSocket echo server on this address (HTTP/1.1 Upgrade and h2c extended CONNECT) instead of a load")
	fs.StringVar(&cfg.URL, "url", "", "target: ws://host:port/path or wss://")
	fs.StringVar(&cfg.Target, "target", "", "label for the result line (default: the URL)")
	fs.StringVar(&cfg.Proto, "proto", "h1", "h1 (Upgrade) or h2 (RFC 8441 extended CONNECT: h2c prior knowledge for ws://, ALPN h2 for wss://)")
	fs.StringVar(&cfg.Workload, "workload", "echo", "echo | bulk | handshakes | idle")
	fs.IntVar(&cfg.Conns, "conns", 1, "sockets (echo, bulk, idle) or concurrent workers (handshakes)")
	fs.IntVar(&cfg.Size, "size", 64, "message payload in bytes")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured window")
	fs.Int64Var(&cfg.Ops, "ops", 0, "end the window after this many operations instead of after -duration")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "load before the window opens")
	fs.Float64Var(&cfg.Rate, "rate", 0, "operations per second over all sockets (0: closed loop)")
	fs.Func("pid", "processes to charge CPU (/proc/PID/stat) and RSS (/proc/PID/status) to: PID or PID,PID,..., each with all its descendants", func(s string) error {
		pids, err := bench.ParsePIDs(s)
		cfg.PIDs = pids
		return err
	})
	fs.BoolVar(&cfg.Insecure, "insecure", false, "do not verify the TLS certificate (wss://)")
	fs.DurationVar(&cfg.Settle, "settle", 2*time.Second, "idle: wait after the last socket opened before sampling RSS")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "switchyard-bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if serve != "" {
		return runServer(serve, stderr)
	}
	if cfg.URL == "" {
		fmt.Fprintln(stderr, "switchyard-bench: give -url (or -serve ADDR)")
		return 2
	}
	res, err := bench.Run(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "switchyard-bench:", err)
		return 1
	}
	if err := json.NewEncoder(stdout).Encode(res); err != nil {
		fmt.Fprintln(stderr, "switchyard-bench:", err)
		return 1
	}
	return 0
}

// runServer serves until SIGINT or SIGTERM. Go's HTTP/2 server accepts extended CONNECT only with
// GODEBUG=http2xconnect=1 from the start, so the process first re-executes itself with it (same
// PID, so -pid still points at it).
func runServer(addr string, stderr io.Writer) int {
	if err := bench.EnableExtendedConnect(); err != nil {
		fmt.Fprintln(stderr, "switchyard-bench: cannot enable HTTP/2 extended CONNECT, serving without it:", err)
	}
	e, err := bench.NewEchoServer(addr)
	if err != nil {
		fmt.Fprintln(stderr, "switchyard-bench:", err)
		return 1
	}
	fmt.Fprintf(stderr, "switchyard-bench: echo server on %s (pid %d)\n", e.Addr(), os.Getpid())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- e.Serve() }()
	select {
	case <-sig:
		e.Close()
		<-done
		return 0
	case err := <-done:
		fmt.Fprintln(stderr, "switchyard-bench:", err)
		return 1
	}
}
