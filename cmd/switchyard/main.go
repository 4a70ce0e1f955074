// Command switchyard is an Envoy-compatible L7 proxy for WebSockets and other HTTP upgrades. It
// takes Envoy's own flags and a real Envoy v3 bootstrap.
//
//	switchyard -c envoy.yaml                 serve
//	switchyard -c envoy.yaml --mode validate check the config, open no socket
//	switchyard demo                          run the built-in demo
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are Envoy's command-line flags that switchyard honours.
type options struct {
	configPath string
	configYAML string
	mode       string
	logLevel   string
	version    bool
	drainTime  time.Duration
	drainStrat string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("switchyard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, n := range []string{"c", "config-path"} {
		fs.StringVar(&o.configPath, n, "", "path to an Envoy v3 bootstrap (YAML or JSON)")
	}
	fs.StringVar(&o.configYAML, "config-yaml", "", "YAML merged over the bootstrap, as Envoy's --config-yaml")
	fs.StringVar(&o.mode, "mode", "serve", "serve | validate (check the config and exit without opening sockets)")
	for _, n := range []string{"l", "log-level"} {
		fs.StringVar(&o.logLevel, n, "info", "trace | debug | info | warning | warn | error | critical | off")
	}
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	drainSecs := fs.Int("drain-time-s", 600, "how long established connections and tunnels may run after SIGTERM or /drain_listeners before they are closed")
	fs.StringVar(&o.drainStrat, "drain-strategy", "gradual", "gradual: responses get Connection: close with a probability rising to 1 over the drain time; immediate: all at once")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *drainSecs < 0 {
		return nil, fmt.Errorf("--drain-time-s must not be negative")
	}
	o.drainTime = time.Duration(*drainSecs) * time.Second
	if o.drainStrat != "gradual" && o.drainStrat != "immediate" {
		return nil, fmt.Errorf("--drain-strategy %q: want gradual or immediate", o.drainStrat)
	}
	return o, nil
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	switch strings.ToLower(level) {
	case "trace", "debug":
		l = slog.LevelDebug
	case "info":
		l = slog.LevelInfo
	case "warning", "warn":
		l = slog.LevelWarn
	case "error", "critical":
		l = slog.LevelError
	case "off":
		l = slog.LevelError + 100
	default:
		return nil, fmt.Errorf("invalid log level %q", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "demo" {
		return runDemo(args[1:], stdout, stderr)
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "switchyard:", err)
		return 1
	}
	if o.version {
		fmt.Fprintf(stdout, "switchyard version %s\n", server.Version)
		return 0
	}
	log, err := newLogger(o.logLevel, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "switchyard:", err)
		return 1
	}
	if o.configPath == "" && o.configYAML == "" {
		fmt.Fprintln(stderr, "switchyard: no configuration: give -c FILE or --config-yaml")
		return 1
	}
	snap, err := config.Load(o.configPath, o.configYAML)
	if err != nil {
		fmt.Fprintln(stderr, "switchyard: invalid configuration:", err)
		return 1
	}
	for _, w := range snap.Warnings {
		log.Warn(w)
	}
	switch o.mode {
	case "validate":
		fmt.Fprintln(stdout, "configuration is valid")
		return 0
	case "serve":
	default:
		fmt.Fprintf(stderr, "switchyard: --mode %q is not supported (serve, validate)\n", o.mode)
		return 1
	}
	return serve(snap, log, o.drainTime, o.drainStrat)
}

// serve runs the proxy until a signal or /quitquitquit.
func serve(snap *config.Snapshot, log *slog.Logger, drainTime time.Duration, drainStrategy string) int {
	// Subscribe before starting: signal.Notify starts a goroutine, and it must exist before the
	// "listening" lines announce a steady state (tests compare goroutine counts against it), and a
	// SIGTERM sent right after them must not kill the process without a clean shutdown.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	srv := server.New(snap, log)
	srv.SetDrain(drainStrategy == "gradual", drainTime)
	if err := srv.Start(); err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	for i, a := range srv.ListenerAddrs() {
		log.Info("listening", "listener", snap.Listeners[i].Name, "address", a.String())
	}
	if a := srv.AdminAddr(); a != nil {
		log.Info("admin listening", "address", a.String())
	}
	select {
	case s := <-sig:
		// The first signal drains: no new connections, established ones (tunnels included) run
		// up to --drain-time-s. A second signal, or /quitquitquit, exits at once.
		log.Info("draining", "signal", s.String(), "drain_time", drainTime)
		abort := make(chan struct{})
		go func() {
			select {
			case s := <-sig:
				log.Info("exiting at once", "signal", s.String())
			case <-srv.Quitting():
				log.Info("exiting at once", "reason", "quitquitquit")
			}
			close(abort)
		}()
		srv.Shutdown(drainTime, abort)
	case <-srv.Quitting():
		log.Info("shutting down", "reason", "quitquitquit")
		srv.Close()
	}
	return 0
}
