package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/demo"
	"github.com/switchyard-proxy/switchyard/internal/server"
)

// demoConfig is the embedded Envoy bootstrap the demo runs: one listener with WebSocket upgrades
// enabled, routed to the built-in chat app. APP_PORT, LISTEN and ADMIN are filled in at start.
const demoConfig = `
admin:
  address: {socket_address: {address: ADMIN_HOST, port_value: ADMIN_PORT}}
static_resources:
  listeners:
  - name: demo
    address: {socket_address: {address: LISTEN_HOST, port_value: LISTEN_PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: demo
          codec_type: AUTO
          upgrade_configs:
          - upgrade_type: websocket
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: chat_app, idle_timeout: 3600s}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: chat_app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: chat_app
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: APP_PORT}}}
`

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("switchyard demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "where the proxy listens")
	adminAddr := fs.String("admin", "127.0.0.1:9901", "where the admin endpoint listens")
	level := fs.String("log-level", "info", "log level")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	log, err := newLogger(*level, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "switchyard demo:", err)
		return 1
	}
	app, err := demo.StartApp("127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(stderr, "switchyard demo: app:", err)
		return 1
	}
	defer app.Close()
	lh, lp, err1 := splitHostPort(*listen)
	ah, ap, err2 := splitHostPort(*adminAddr)
	if err1 != nil || err2 != nil {
		fmt.Fprintln(stderr, "switchyard demo: -listen and -admin take host:port")
		return 1
	}
	_, appPort, _ := splitHostPort(app.Addr().String())
	yaml := strings.NewReplacer("ADMIN_HOST", ah, "ADMIN_PORT", ap, "LISTEN_HOST", lh, "LISTEN_PORT", lp,
		"APP_PORT", appPort).Replace(demoConfig)
	snap, err := config.Parse("demo.yaml", []byte(yaml))
	if err != nil {
		fmt.Fprintln(stderr, "switchyard demo: embedded config:", err)
		return 1
	}
	srv := server.New(snap, log)
	if err := srv.Start(); err != nil {
		fmt.Fprintln(stderr, "switchyard demo:", err)
		return 1
	}
	defer srv.Close()
	fmt.Fprintf(stdout, "Switchyard demo is running.\n  chat (open in two tabs): http://%s/\n  admin:                   http://%s/stats?filter=upgrade\n  app (direct, behind the proxy): http://%s/\nPress Ctrl-C to stop.\n",
		srv.ListenerAddrs()[0], srv.AdminAddr(), app.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	select {
	case <-sig:
	case <-srv.Quitting():
	}
	return 0
}

func splitHostPort(a string) (string, string, error) {
	i := strings.LastIndexByte(a, ':')
	if i < 0 {
		return "", "", fmt.Errorf("no port in %q", a)
	}
	return a[:i], a[i+1:], nil
}
