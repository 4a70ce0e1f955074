package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/demo"
	"github.com/switchyard-proxy/switchyard/internal/server"
)

// The demo runs the deployment of Envoy's "Handling HTTP/2 hops" section in one process:
//
//	browser —HTTP/1.1 Upgrade→ front —HTTP/2 extended CONNECT→ sidecar —HTTP/1.1 Upgrade→ app
//
// Each proxy is its own server.Server with its own embedded bootstrap, stats and admin endpoint.
// The front's stat_prefix is "demo" (http.demo.*), the sidecar's "sidecar" (http.sidecar.*).
// ADMIN, LISTEN and UPSTREAM_PORT are filled in at start.

// frontConfig is the front proxy: an HTTP/1.1 listener with WebSocket upgrades whose cluster
// speaks HTTP/2 with allow_connect, so each WebSocket becomes an RFC 8441 CONNECT stream.
const frontConfig = `
admin:
  address: {socket_address: {address: "ADMIN_HOST", port_value: ADMIN_PORT}}
static_resources:
  listeners:
  - name: front
    address: {socket_address: {address: "LISTEN_HOST", port_value: LISTEN_PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: demo
          codec_type: HTTP1
          upgrade_configs:
          - upgrade_type: websocket
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: sidecar, idle_timeout: 3600s}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: sidecar
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {allow_connect: true}
    load_assignment:
      cluster_name: sidecar
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: UPSTREAM_PORT}}}
`

// sidecarConfig is the sidecar proxy: a listener that accepts HTTP/1.1 or HTTP/2 (AUTO) and, with
// allow_connect, turns an extended CONNECT back into an HTTP/1.1 WebSocket Upgrade to the app.
const sidecarConfig = `
admin:
  address: {socket_address: {address: "ADMIN_HOST", port_value: ADMIN_PORT}}
static_resources:
  listeners:
  - name: sidecar
    address: {socket_address: {address: "LISTEN_HOST", port_value: LISTEN_PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: sidecar
          codec_type: AUTO
          http2_protocol_options: {allow_connect: true}
          upgrade_configs:
          - upgrade_type: websocket
          route_config:
            virtual_hosts:
            - name: all
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
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: UPSTREAM_PORT}}}
`

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("switchyard demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "where the front proxy listens (HTTP/1.1)")
	adminAddr := fs.String("admin", "127.0.0.1:9901", "where the front proxy's admin endpoint listens")
	sidecarAdmin := fs.String("sidecar-admin", "127.0.0.1:9902", "where the sidecar proxy's admin endpoint listens")
	level := fs.String("log-level", "info", "log level")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "switchyard demo: unexpected argument %q\n", fs.Arg(0))
		return 1
	}
	for _, a := range []string{*listen, *adminAddr, *sidecarAdmin} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			fmt.Fprintln(stderr, "switchyard demo: -listen, -admin and -sidecar-admin take host:port:", err)
			return 1
		}
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
	// Deferred closes run front first, so clients go before the hops behind them.
	sidecar, err := startDemoProxy("sidecar", sidecarConfig, "127.0.0.1:0", *sidecarAdmin, app.Addr(), log)
	if err != nil {
		fmt.Fprintln(stderr, "switchyard demo:", err)
		return 1
	}
	defer sidecar.Close()
	front, err := startDemoProxy("front", frontConfig, *listen, *adminAddr, sidecar.ListenerAddrs()[0], log)
	if err != nil {
		fmt.Fprintln(stderr, "switchyard demo:", err)
		return 1
	}
	defer front.Close()
	fmt.Fprintf(stdout, `Switchyard demo is running the seed deployment in one process:
  browser —HTTP/1.1 Upgrade→ front %s —HTTP/2 extended CONNECT→ sidecar %s —HTTP/1.1 Upgrade→ app %s
  chat (open in two tabs): http://%s/
  front admin:             http://%s/stats?filter=upgrade   (stats http.demo.*)
  sidecar admin:           http://%s/stats?filter=upgrade   (stats http.sidecar.*)
Press Ctrl-C to stop.
`, front.ListenerAddrs()[0], sidecar.ListenerAddrs()[0], app.Addr(),
		front.ListenerAddrs()[0], front.AdminAddr(), sidecar.AdminAddr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	select {
	case <-sig:
	case <-front.Quitting():
	case <-sidecar.Quitting():
	}
	return 0
}

// startDemoProxy starts one of the demo's proxies from its embedded bootstrap, listening on listen
// with its admin on admin, and sending to upstream.
func startDemoProxy(name, tmpl, listen, admin string, upstream net.Addr, log *slog.Logger) (*server.Server, error) {
	lh, lp, _ := net.SplitHostPort(listen)
	ah, ap, _ := net.SplitHostPort(admin)
	if lh == "" {
		lh = "0.0.0.0" // ":8080" means every interface, as in net.Listen
	}
	if ah == "" {
		ah = "0.0.0.0"
	}
	_, up, err := net.SplitHostPort(upstream.String())
	if err != nil {
		return nil, fmt.Errorf("%s: upstream %v: %w", name, upstream, err)
	}
	yaml := strings.NewReplacer("ADMIN_HOST", ah, "ADMIN_PORT", ap, "LISTEN_HOST", lh, "LISTEN_PORT", lp,
		"UPSTREAM_PORT", up).Replace(tmpl)
	snap, err := config.Parse(name+".yaml", []byte(yaml))
	if err != nil {
		return nil, fmt.Errorf("%s: embedded config: %w", name, err)
	}
	srv := server.New(snap, log.With("proxy", name))
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return srv, nil
}
