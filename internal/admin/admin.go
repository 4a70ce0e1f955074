// Package admin serves Envoy's admin endpoints (/ready, /stats, /clusters, /config_dump,
// /healthcheck/*, /quitquitquit, /drain_listeners, ...) so that tools and health checkers written
// for Envoy work unchanged. It is not on the proxy path, so it uses net/http's server.
//
// As in Envoy, endpoints that change the server's state answer only POST (405 otherwise), an
// unknown path answers 404 with the list of endpoints, and /healthcheck/fail makes the reported
// server state DRAINING (/ready 503) while the server keeps running.
package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-proxy/switchyard/internal/stats"
	"github.com/switchyard-proxy/switchyard/internal/workers"
)

// Server states, named as Envoy's envoy.admin.v3.ServerInfo.State.
const (
	StateLive            = "LIVE"
	StateDraining        = "DRAINING"
	StatePreInitializing = "PRE_INITIALIZING"
	StateInitializing    = "INITIALIZING"
)

// stateValues are the values of the server.state gauge: the ServerInfo.State enum numbers.
var stateValues = map[string]int64{
	StateLive:            0,
	StateDraining:        1,
	StatePreInitializing: 2,
	StateInitializing:    3,
}

// Content types of the responses, as Envoy sends them.
const (
	contentText       = "text/plain; charset=UTF-8"
	contentJSON       = "application/json"
	contentPrometheus = "text/plain; version=0.0.4"
)

// Options wires the admin server to the rest of the process without importing it. The funcs are
// called from request goroutines, so they must be safe for concurrent use.
type Options struct {
	Address    string                           // host:port to listen on ("127.0.0.1:0" in tests)
	Stats      *stats.Store                     // nil: a private empty store
	ConfigDump func() proto.Message             // the current bootstrap; nil func or nil result → 404 on /config_dump
	Clusters   func() []ClusterStatus           // for /clusters; nil → no clusters
	Version    string                           // reported by /server_info
	Quit       func()                           // /quitquitquit: begins immediate shutdown; called once, on its own goroutine, so it may call Close; nil → 404
	Drain      func(graceful, inboundOnly bool) // /drain_listeners: begins a drain and returns; nil → 404
	Logger     *slog.Logger                     // nil: discard
	// Admit is asked for every accepted connection, as Envoy counts admin connections toward
	// global_downstream_max_connections: false closes the connection at once; true gives the
	// release to call when it closes. Nil: every connection is taken.
	Admit func() (release func(), ok bool)
}

// ClusterStatus is one cluster as /clusters shows it.
type ClusterStatus struct {
	Name  string
	Hosts []HostStatus
}

// HostStatus is one upstream host as /clusters shows it.
type HostStatus struct {
	Address           string // host:port
	Healthy           bool   // false is reported as Envoy's EDS "UNHEALTHY" (/failed_eds_health)
	ActiveRequests    int64
	ActiveConnections int64
	Weight            uint32
}

// endpoint is one admin path.
type endpoint struct {
	path    string
	help    string
	mutates bool // POST only, as Envoy's mutates_server_state
	handle  func(s *Server, w http.ResponseWriter, r *http.Request)
}

// endpoints is every admin path in the order the help lists them. It is filled in init to break
// the reference cycle through handleHelp.
var endpoints []endpoint

func init() {
	endpoints = []endpoint{
		{"/", "Admin home page", false, (*Server).handleHelp},
		{"/clusters", "upstream cluster status", false, (*Server).handleClusters},
		{"/config_dump", "dump current Envoy configs", false, (*Server).handleConfigDump},
		{"/drain_listeners", "drain listeners (?graceful, ?inboundonly)", true, (*Server).handleDrain},
		{"/healthcheck/fail", "cause the server to fail health checks", true, (*Server).handleHealthFail},
		{"/healthcheck/ok", "cause the server to pass health checks", true, (*Server).handleHealthOK},
		{"/help", "print out list of admin commands", false, (*Server).handleHelp},
		{"/memory", "print current allocation/heap usage", false, (*Server).handleMemory},
		{"/quitquitquit", "exit the server", true, (*Server).handleQuit},
		{"/ready", "print server state, return 200 if LIVE, otherwise return 503", false, (*Server).handleReady},
		{"/server_info", "print server version/status information", false, (*Server).handleServerInfo},
		{"/stats", "print server stats (?format=json|prometheus, ?filter=<regex>, ?usedonly)", false, (*Server).handleStats},
		{"/stats/prometheus", "print server stats in prometheus format (?filter=<regex>, ?usedonly)", false, (*Server).handlePrometheus},
	}
}

// Server is a running admin endpoint.
type Server struct {
	opts    Options
	log     *slog.Logger
	store   *stats.Store
	ln      net.Listener
	srv     *http.Server
	started time.Time
	done    chan struct{} // closed when the serve goroutine returns
	err     error         // Serve's error; written before done is closed

	mu    sync.Mutex
	state string // guarded by mu

	healthFailed atomic.Bool
	quitOnce     sync.Once
	closeOnce    sync.Once

	live, uptime, stateGauge, goroutines   *stats.Gauge
	workersIdle                            *stats.Gauge
	memAllocated, memHeapSize, memPhysical *stats.Gauge // server.memory_*: see memory.go
}

// Start listens on opts.Address and serves the admin endpoints on a goroutine owned by the
// returned Server until Close. The server starts in state LIVE.
func Start(opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", opts.Address)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if opts.Admit != nil {
		ln = &admitListener{Listener: ln, admit: opts.Admit}
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		store:   opts.Stats,
		ln:      ln,
		started: time.Now(),
		done:    make(chan struct{}),
		state:   StateLive,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.store == nil {
		s.store = stats.NewStore()
	}
	s.live = s.store.Gauge("server.live")
	s.uptime = s.store.Gauge("server.uptime")
	s.stateGauge = s.store.Gauge("server.state")
	s.goroutines = s.store.Gauge("server.goroutines")
	s.workersIdle = s.store.Gauge("server.workers_idle")
	s.memAllocated = s.store.Gauge("server.memory_allocated")
	s.memHeapSize = s.store.Gauge("server.memory_heap_size")
	s.memPhysical = s.store.Gauge("server.memory_physical_size")
	s.updateStateGauges()
	s.updateUptime()
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	go s.serve()
	s.log.Info("admin address", "address", ln.Addr().String())
	return s, nil
}

// serve runs http.Server.Serve; it is the goroutine Close waits for.
func (s *Server) serve() {
	defer close(s.done)
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		s.err = err
	}
}

// Addr returns the address the server listens on, useful when Options.Address had port 0.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// HealthFailed reports whether /healthcheck/fail was called (and not undone by /healthcheck/ok),
// so the process can fail its own health checks as Envoy does.
func (s *Server) HealthFailed() bool { return s.healthFailed.Load() }

// SetState records the server state (StateLive, StateDraining, StatePreInitializing,
// StateInitializing) reported by /ready, /server_info and the server.* gauges. Unknown states are
// logged and ignored.
func (s *Server) SetState(state string) {
	if _, ok := stateValues[state]; !ok {
		s.log.Warn("admin: ignoring unknown server state", "state", state)
		return
	}
	s.mu.Lock()
	s.state = state
	s.mu.Unlock()
	s.updateStateGauges()
}

// Close stops serving, closing open admin connections, and waits for the serve goroutine. It is
// safe to call more than once; later calls return nil. It does not wait for a Quit call in flight.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		err = s.srv.Close()
		<-s.done
		if err == nil {
			err = s.err
		}
	})
	return err
}

// effectiveState is the state Envoy reports: a server that fails health checks is DRAINING
// (Envoy's Utility::serverState).
func (s *Server) effectiveState() string {
	s.mu.Lock()
	state := s.state
	s.mu.Unlock()
	if state == StateLive && s.healthFailed.Load() {
		return StateDraining
	}
	return state
}

// updateStateGauges sets server.state and server.live from the effective state.
func (s *Server) updateStateGauges() {
	state := s.effectiveState()
	s.stateGauge.Set(stateValues[state])
	if state == StateLive {
		s.live.Set(1)
	} else {
		s.live.Set(0)
	}
}

// updateUptime sets server.uptime, the server.memory_* gauges, and server.goroutines and
// server.workers_idle (not Envoy stats: they let tests and operators see that tunnels and streams
// leave nothing behind but the goroutines kept for the next connection, see package workers), and
// returns the uptime.
func (s *Server) updateUptime() int64 {
	s.goroutines.Set(int64(runtime.NumGoroutine()))
	s.workersIdle.Set(int64(workers.Idle()))
	s.updateMemory()
	up := int64(time.Since(s.started) / time.Second)
	s.uptime.Set(up)
	return up
}

// ServeHTTP dispatches on the exact path, as Envoy's admin does.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, e := range endpoints {
		if e.path != r.URL.Path {
			continue
		}
		if e.mutates && r.Method != http.MethodPost {
			s.log.Warn("admin: path mutates state, method is not POST", "path", e.path, "method", r.Method)
			w.Header().Set("Allow", http.MethodPost)
			reply(w, http.StatusMethodNotAllowed, contentText, fmt.Sprintf("Method %s not allowed, POST required.\n", r.Method))
			return
		}
		e.handle(s, w, r)
		return
	}
	reply(w, http.StatusNotFound, contentText, "invalid path. "+helpText())
}

// reply writes a whole response.
func reply(w http.ResponseWriter, code int, contentType, body string) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	io.WriteString(w, body)
}

// helpText lists the endpoints the way Envoy's /help does.
func helpText() string {
	var b strings.Builder
	b.WriteString("admin commands are:\n")
	for _, e := range endpoints {
		fmt.Fprintf(&b, "  %s: %s\n", e.path, e.help)
	}
	return b.String()
}

func (s *Server) handleHelp(w http.ResponseWriter, _ *http.Request) {
	reply(w, http.StatusOK, contentText, helpText())
}

func (s *Server) handleReady(w http.ResponseWriter, _ *http.Request) {
	state := s.effectiveState()
	code := http.StatusOK
	if state != StateLive {
		code = http.StatusServiceUnavailable
	}
	reply(w, code, contentText, state+"\n")
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	switch f := r.URL.Query().Get("format"); f {
	case "", "text":
		s.writeStats(w, r, contentText, func(w io.Writer, ss []stats.Sample) error {
			return stats.WriteText(w, ss, nil, false)
		})
	case "json":
		s.writeStats(w, r, contentJSON, func(w io.Writer, ss []stats.Sample) error {
			return stats.WriteJSON(w, ss, nil, false)
		})
	case "prometheus":
		s.handlePrometheus(w, r)
	default:
		reply(w, http.StatusBadRequest, contentText, fmt.Sprintf("unsupported format %q: use json, prometheus or text\n", f))
	}
}

func (s *Server) handlePrometheus(w http.ResponseWriter, r *http.Request) {
	s.writeStats(w, r, contentPrometheus, stats.WritePrometheus)
}

// writeStats applies ?filter= and ?usedonly to a fresh snapshot and renders it with write.
func (s *Server) writeStats(w http.ResponseWriter, r *http.Request, contentType string, write func(io.Writer, []stats.Sample) error) {
	q := r.URL.Query()
	var filter *regexp.Regexp
	if f := q.Get("filter"); f != "" {
		re, err := regexp.Compile(f)
		if err != nil {
			reply(w, http.StatusBadRequest, contentText, fmt.Sprintf("Invalid regex: %v\n", err))
			return
		}
		filter = re
	}
	s.updateUptime()
	s.updateStateGauges()
	samples := stats.Select(s.store.Snapshot(), filter, q.Has("usedonly"))
	var buf bytes.Buffer
	if err := write(&buf, samples); err != nil {
		reply(w, http.StatusInternalServerError, contentText, err.Error()+"\n")
		return
	}
	reply(w, http.StatusOK, contentType, buf.String())
}

// serverInfo is the part of Envoy's envoy.admin.v3.ServerInfo that applies here.
type serverInfo struct {
	Version            string   `json:"version"`
	State              string   `json:"state"`
	UptimeCurrentEpoch string   `json:"uptime_current_epoch"`
	UptimeAllEpochs    string   `json:"uptime_all_epochs"`
	HotRestartVersion  string   `json:"hot_restart_version"`
	CommandLineOptions struct{} `json:"command_line_options"`
}

func (s *Server) handleServerInfo(w http.ResponseWriter, _ *http.Request) {
	up := strconv.FormatInt(s.updateUptime(), 10) + "s" // protobuf JSON Duration
	replyJSON(w, serverInfo{
		Version:            s.opts.Version,
		State:              s.effectiveState(),
		UptimeCurrentEpoch: up,
		UptimeAllEpochs:    up, // no hot restart: one epoch
		HotRestartVersion:  "disabled",
	})
}

// replyJSON writes v as indented JSON.
func replyJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		reply(w, http.StatusInternalServerError, contentText, err.Error()+"\n")
		return
	}
	reply(w, http.StatusOK, contentJSON, string(b)+"\n")
}

// The JSON of /clusters?format=json: envoy.admin.v3.Clusters in proto JSON with proto field names.
type (
	clustersJSON struct {
		ClusterStatuses []clusterJSON `json:"cluster_statuses"`
	}
	clusterJSON struct {
		Name         string     `json:"name"`
		AddedViaAPI  bool       `json:"added_via_api"`
		HostStatuses []hostJSON `json:"host_statuses"`
	}
	hostJSON struct {
		Address struct {
			SocketAddress struct {
				Address   string `json:"address"`
				PortValue uint32 `json:"port_value"`
			} `json:"socket_address"`
		} `json:"address"`
		Stats        []hostStatJSON `json:"stats"`
		HealthStatus struct {
			EDSHealthStatus string `json:"eds_health_status"`
		} `json:"health_status"`
		Weight uint32 `json:"weight"`
	}
	hostStatJSON struct {
		Name  string `json:"name"`
		Value string `json:"value"` // uint64 is a string in proto JSON
		Type  string `json:"type"`
	}
)

func (s *Server) handleClusters(w http.ResponseWriter, r *http.Request) {
	var clusters []ClusterStatus
	if s.opts.Clusters != nil {
		clusters = s.opts.Clusters()
	}
	if r.URL.Query().Get("format") == "json" {
		doc := clustersJSON{ClusterStatuses: []clusterJSON{}}
		for _, c := range clusters {
			cj := clusterJSON{Name: c.Name, HostStatuses: []hostJSON{}}
			for _, h := range c.Hosts {
				var hj hostJSON
				hj.Address.SocketAddress.Address, hj.Address.SocketAddress.PortValue = splitHostPort(h.Address)
				hj.Stats = []hostStatJSON{
					{Name: "cx_active", Value: strconv.FormatInt(h.ActiveConnections, 10), Type: "GAUGE"},
					{Name: "rq_active", Value: strconv.FormatInt(h.ActiveRequests, 10), Type: "GAUGE"},
				}
				hj.HealthStatus.EDSHealthStatus = "HEALTHY"
				if !h.Healthy {
					hj.HealthStatus.EDSHealthStatus = "UNHEALTHY"
				}
				hj.Weight = h.Weight
				cj.HostStatuses = append(cj.HostStatuses, hj)
			}
			doc.ClusterStatuses = append(doc.ClusterStatuses, cj)
		}
		replyJSON(w, doc)
		return
	}
	var b strings.Builder
	for _, c := range clusters {
		fmt.Fprintf(&b, "%s::added_via_api::false\n", c.Name)
		for _, h := range c.Hosts {
			p := c.Name + "::" + h.Address + "::"
			flags := "healthy"
			if !h.Healthy {
				flags = "/failed_eds_health"
			}
			fmt.Fprintf(&b, "%scx_active::%d\n", p, h.ActiveConnections)
			fmt.Fprintf(&b, "%srq_active::%d\n", p, h.ActiveRequests)
			fmt.Fprintf(&b, "%shealth_flags::%s\n", p, flags)
			fmt.Fprintf(&b, "%sweight::%d\n", p, h.Weight)
		}
	}
	reply(w, http.StatusOK, contentText, b.String())
}

// splitHostPort splits "host:port"; an address without a valid port is returned whole with port 0.
func splitHostPort(addr string) (string, uint32) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	p, err := strconv.ParseUint(port, 10, 32)
	if err != nil {
		return addr, 0
	}
	return host, uint32(p)
}

func (s *Server) handleConfigDump(w http.ResponseWriter, _ *http.Request) {
	var msg proto.Message
	if s.opts.ConfigDump != nil {
		msg = s.opts.ConfigDump()
	}
	if msg == nil {
		reply(w, http.StatusNotFound, contentText, "no configuration to dump\n")
		return
	}
	// Envoy prints proto field names (preserve_proto_field_names).
	boot, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
	if err != nil {
		reply(w, http.StatusInternalServerError, contentText, fmt.Sprintf("config_dump: %v\n", err))
		return
	}
	raw := `{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump","bootstrap":` +
		string(boot) + `}]}`
	var out bytes.Buffer
	if err := json.Indent(&out, []byte(raw), "", "  "); err != nil {
		reply(w, http.StatusInternalServerError, contentText, fmt.Sprintf("config_dump: %v\n", err))
		return
	}
	out.WriteByte('\n')
	reply(w, http.StatusOK, contentJSON, out.String())
}

func (s *Server) handleHealthFail(w http.ResponseWriter, _ *http.Request) {
	s.healthFailed.Store(true)
	s.updateStateGauges()
	s.log.Info("admin: health checks now fail")
	reply(w, http.StatusOK, contentText, "OK\n")
}

func (s *Server) handleHealthOK(w http.ResponseWriter, _ *http.Request) {
	s.healthFailed.Store(false)
	s.updateStateGauges()
	s.log.Info("admin: health checks now pass")
	reply(w, http.StatusOK, contentText, "OK\n")
}

// handleQuit answers, flushes the answer to the client, then calls Quit once on a new goroutine:
// Quit may shut this server down, and Close waits for in-flight handlers.
func (s *Server) handleQuit(w http.ResponseWriter, _ *http.Request) {
	if s.opts.Quit == nil {
		reply(w, http.StatusNotFound, contentText, "quitquitquit is not available\n")
		return
	}
	reply(w, http.StatusOK, contentText, "OK\n")
	http.NewResponseController(w).Flush()
	s.quitOnce.Do(func() {
		s.log.Info("admin: quitquitquit")
		go s.opts.Quit()
	})
}

func (s *Server) handleDrain(w http.ResponseWriter, r *http.Request) {
	if s.opts.Drain == nil {
		reply(w, http.StatusNotFound, contentText, "drain_listeners is not available\n")
		return
	}
	q := r.URL.Query()
	if q.Has("skip_exit") {
		reply(w, http.StatusBadRequest, contentText, "skip_exit is not supported\n")
		return
	}
	graceful, inboundOnly := q.Has("graceful"), q.Has("inboundonly")
	s.log.Info("admin: draining listeners", "graceful", graceful, "inboundonly", inboundOnly)
	s.opts.Drain(graceful, inboundOnly)
	reply(w, http.StatusOK, contentText, "OK\n")
}

// admitListener closes at accept the connections Admit refuses, and gives back the admitted
// ones' places when they close.
type admitListener struct {
	net.Listener
	admit func() (release func(), ok bool)
}

func (l *admitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, ok := l.admit()
		if !ok {
			c.Close()
			continue
		}
		return &admittedConn{Conn: c, release: release}, nil
	}
}

// admittedConn releases its place once, at the first Close.
type admittedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *admittedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
