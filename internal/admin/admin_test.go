package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-proxy/switchyard/internal/stats"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// client makes one connection per request so no idle connection outlives a test.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

// response is what a test looks at.
type response struct {
	code   int
	header http.Header
	body   string
}

// do sends method path to s over a real socket.
func do(t *testing.T, s *Server, method, path string) response {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.Addr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

// start starts a server on a loopback port and closes it when the test ends.
func start(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.Address = "127.0.0.1:0"
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// statValue returns the named stat as /stats?format=json reports it.
func statValue(t *testing.T, s *Server, name string) int64 {
	t.Helper()
	r := do(t, s, "GET", "/stats?format=json&filter=^"+strings.ReplaceAll(name, ".", `\.`)+"$")
	var doc struct {
		Stats []struct {
			Name  string
			Value int64
		}
	}
	if err := json.Unmarshal([]byte(r.body), &doc); err != nil || len(doc.Stats) != 1 {
		t.Fatalf("stat %s: %q (%v)", name, r.body, err)
	}
	return doc.Stats[0].Value
}

func TestReadyFollowsStateAndHealthCheck(t *testing.T) {
	s := start(t, Options{})
	steps := []struct {
		name       string
		act        func()
		code       int
		body       string
		live, stat int64 // server.live, server.state
	}{
		{"initial", func() {}, 200, "LIVE\n", 1, 0},
		{"draining", func() { s.SetState(StateDraining) }, 503, "DRAINING\n", 0, 1},
		{"unknown state ignored", func() { s.SetState("BOGUS") }, 503, "DRAINING\n", 0, 1},
		{"pre-initializing", func() { s.SetState(StatePreInitializing) }, 503, "PRE_INITIALIZING\n", 0, 2},
		{"initializing", func() { s.SetState(StateInitializing) }, 503, "INITIALIZING\n", 0, 3},
		{"live again", func() { s.SetState(StateLive) }, 200, "LIVE\n", 1, 0},
		{"healthcheck fail drains", func() { do(t, s, "POST", "/healthcheck/fail") }, 503, "DRAINING\n", 0, 1},
		{"healthcheck ok", func() { do(t, s, "POST", "/healthcheck/ok") }, 200, "LIVE\n", 1, 0},
	}
	for _, st := range steps {
		st.act()
		r := do(t, s, "GET", "/ready")
		if r.code != st.code || r.body != st.body {
			t.Errorf("%s: /ready = %d %q, want %d %q", st.name, r.code, r.body, st.code, st.body)
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("%s: content type %q", st.name, ct)
		}
		if got := statValue(t, s, "server.live"); got != st.live {
			t.Errorf("%s: server.live = %d, want %d", st.name, got, st.live)
		}
		if got := statValue(t, s, "server.state"); got != st.stat {
			t.Errorf("%s: server.state = %d, want %d", st.name, got, st.stat)
		}
	}
}

func TestHealthFailed(t *testing.T) {
	s := start(t, Options{})
	for _, tt := range []struct {
		path string
		want bool
	}{{"/healthcheck/fail", true}, {"/healthcheck/fail", true}, {"/healthcheck/ok", false}} {
		r := do(t, s, "POST", tt.path)
		if r.code != 200 || r.body != "OK\n" {
			t.Errorf("POST %s = %d %q", tt.path, r.code, r.body)
		}
		if s.HealthFailed() != tt.want {
			t.Errorf("after %s HealthFailed() = %v, want %v", tt.path, s.HealthFailed(), tt.want)
		}
	}
}

func TestStats(t *testing.T) {
	store := stats.NewStore()
	store.Counter("cluster.web.upstream_rq_101").Add(3)
	store.Counter("cluster.web.upstream_rq_200") // never incremented
	store.Gauge("listener.127.0.0.1_8080.downstream_cx_active").Set(2)
	s := start(t, Options{Stats: store})

	tests := []struct {
		name     string
		path     string
		code     int
		ctype    string
		contains []string
		excludes []string
	}{
		{"text", "/stats", 200, "text/plain",
			[]string{"cluster.web.upstream_rq_101: 3\n", "cluster.web.upstream_rq_200: 0\n",
				"listener.127.0.0.1_8080.downstream_cx_active: 2\n", "server.live: 1\n", "server.state: 0\n", "server.uptime: "},
			nil},
		{"text usedonly", "/stats?usedonly", 200, "text/plain",
			[]string{"cluster.web.upstream_rq_101: 3\n"}, []string{"upstream_rq_200", "server.state"}},
		{"text filter", "/stats?filter=upstream_rq_1", 200, "text/plain",
			[]string{"cluster.web.upstream_rq_101: 3\n"}, []string{"upstream_rq_200", "server."}},
		{"json", "/stats?format=json", 200, "application/json",
			[]string{`{"name":"cluster.web.upstream_rq_101","value":3}`, `{"name":"server.live","value":1}`}, nil},
		{"json filter usedonly", "/stats?format=json&filter=cluster&usedonly", 200, "application/json",
			[]string{`{"stats":[{"name":"cluster.web.upstream_rq_101","value":3}]}`}, nil},
		{"prometheus", "/stats/prometheus", 200, "text/plain; version=0.0.4",
			[]string{
				"# TYPE envoy_cluster_upstream_rq counter\n",
				`envoy_cluster_upstream_rq{envoy_response_code="101",envoy_cluster_name="web"} 3` + "\n",
				"# TYPE envoy_listener_downstream_cx_active gauge\n",
				`envoy_listener_downstream_cx_active{envoy_listener_address="127.0.0.1_8080"} 2` + "\n",
				"# TYPE envoy_server_live gauge\nenvoy_server_live 1\n",
			}, nil},
		{"prometheus via format", "/stats?format=prometheus&filter=listener", 200, "text/plain; version=0.0.4",
			[]string{`envoy_listener_downstream_cx_active{envoy_listener_address="127.0.0.1_8080"} 2`},
			[]string{"envoy_cluster", "envoy_server"}},
		{"invalid filter", "/stats?filter=(", 400, "text/plain", []string{"Invalid regex"}, nil},
		{"invalid filter prometheus", "/stats/prometheus?filter=[", 400, "text/plain", []string{"Invalid regex"}, nil},
		{"unknown format", "/stats?format=xml", 400, "text/plain", []string{"unsupported format"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, s, "GET", tt.path)
			if r.code != tt.code {
				t.Errorf("code = %d, want %d; body %q", r.code, tt.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, tt.ctype) {
				t.Errorf("content type = %q, want %q", ct, tt.ctype)
			}
			for _, c := range tt.contains {
				if !strings.Contains(r.body, c) {
					t.Errorf("body lacks %q:\n%s", c, r.body)
				}
			}
			for _, c := range tt.excludes {
				if strings.Contains(r.body, c) {
					t.Errorf("body has %q:\n%s", c, r.body)
				}
			}
		})
	}

	// A counter incremented after start shows the new value.
	store.Counter("cluster.web.upstream_rq_101").Inc()
	if got := statValue(t, s, "cluster.web.upstream_rq_101"); got != 4 {
		t.Errorf("after Inc, upstream_rq_101 = %d, want 4", got)
	}
}

func TestServerInfo(t *testing.T) {
	s := start(t, Options{Version: "switchyard/1.2.3"})
	s.SetState(StateDraining)
	r := do(t, s, "GET", "/server_info")
	if r.code != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("/server_info = %d %q", r.code, r.header.Get("Content-Type"))
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(r.body), &info); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	want := map[string]any{
		"version":              "switchyard/1.2.3",
		"state":                "DRAINING",
		"hot_restart_version":  "disabled",
		"command_line_options": map[string]any{},
	}
	for k, v := range want {
		got, _ := json.Marshal(info[k])
		exp, _ := json.Marshal(v)
		if string(got) != string(exp) {
			t.Errorf("%s = %s, want %s", k, got, exp)
		}
	}
	// A Duration in proto JSON, whole seconds: the server has just started.
	for _, k := range []string{"uptime_current_epoch", "uptime_all_epochs"} {
		if v, _ := info[k].(string); !regexp.MustCompile(`^[0-9]s$`).MatchString(v) {
			t.Errorf("%s = %q, want a few seconds like \"0s\"", k, v)
		}
	}
}

func TestClusters(t *testing.T) {
	s := start(t, Options{Clusters: func() []ClusterStatus {
		return []ClusterStatus{
			{Name: "web", Hosts: []HostStatus{
				{Address: "127.0.0.1:8081", Healthy: true, ActiveRequests: 2, ActiveConnections: 1, Weight: 1},
				{Address: "[::1]:8082", Healthy: false, Weight: 5},
			}},
			{Name: "empty"},
		}
	}})

	r := do(t, s, "GET", "/clusters")
	wantText := `web::added_via_api::false
web::127.0.0.1:8081::cx_active::1
web::127.0.0.1:8081::rq_active::2
web::127.0.0.1:8081::health_flags::healthy
web::127.0.0.1:8081::weight::1
web::[::1]:8082::cx_active::0
web::[::1]:8082::rq_active::0
web::[::1]:8082::health_flags::/failed_eds_health
web::[::1]:8082::weight::5
empty::added_via_api::false
`
	if r.code != 200 || r.body != wantText || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Errorf("/clusters = %d %q:\n%s\nwant:\n%s", r.code, r.header.Get("Content-Type"), r.body, wantText)
	}

	r = do(t, s, "GET", "/clusters?format=json")
	if r.code != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("/clusters?format=json = %d %q", r.code, r.header.Get("Content-Type"))
	}
	var doc struct {
		ClusterStatuses []struct {
			Name         string `json:"name"`
			HostStatuses []struct {
				Address struct {
					SocketAddress struct {
						Address   string `json:"address"`
						PortValue uint32 `json:"port_value"`
					} `json:"socket_address"`
				} `json:"address"`
				Stats []struct {
					Name, Value, Type string
				} `json:"stats"`
				HealthStatus struct {
					EDSHealthStatus string `json:"eds_health_status"`
				} `json:"health_status"`
				Weight uint32 `json:"weight"`
			} `json:"host_statuses"`
		} `json:"cluster_statuses"`
	}
	if err := json.Unmarshal([]byte(r.body), &doc); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	if len(doc.ClusterStatuses) != 2 || doc.ClusterStatuses[0].Name != "web" || len(doc.ClusterStatuses[0].HostStatuses) != 2 {
		t.Fatalf("unexpected clusters: %s", r.body)
	}
	h0, h1 := doc.ClusterStatuses[0].HostStatuses[0], doc.ClusterStatuses[0].HostStatuses[1]
	if h0.Address.SocketAddress.Address != "127.0.0.1" || h0.Address.SocketAddress.PortValue != 8081 ||
		h0.HealthStatus.EDSHealthStatus != "HEALTHY" || h0.Weight != 1 {
		t.Errorf("host 0 = %+v", h0)
	}
	if len(h0.Stats) != 2 || h0.Stats[0].Name != "cx_active" || h0.Stats[0].Value != "1" ||
		h0.Stats[1].Name != "rq_active" || h0.Stats[1].Value != "2" {
		t.Errorf("host 0 stats = %+v", h0.Stats)
	}
	if h1.Address.SocketAddress.Address != "::1" || h1.Address.SocketAddress.PortValue != 8082 ||
		h1.HealthStatus.EDSHealthStatus != "UNHEALTHY" || h1.Weight != 5 {
		t.Errorf("host 1 = %+v", h1)
	}
}

func TestConfigDump(t *testing.T) {
	boot := &bootstrapv3.Bootstrap{Node: &corev3.Node{Id: "node-1", UserAgentName: "switchyard"}}
	tests := []struct {
		name string
		dump func() proto.Message
		code int
	}{
		{"bootstrap", func() proto.Message { return boot }, 200},
		{"nil func", nil, 404},
		{"nil message", func() proto.Message { return nil }, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, Options{ConfigDump: tt.dump})
			r := do(t, s, "GET", "/config_dump")
			if r.code != tt.code {
				t.Fatalf("code = %d, want %d: %s", r.code, tt.code, r.body)
			}
			if tt.code != 200 {
				return
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type %q", ct)
			}
			var doc struct {
				Configs []struct {
					Type      string `json:"@type"`
					Bootstrap struct {
						Node struct {
							ID            string `json:"id"`
							UserAgentName string `json:"user_agent_name"` // proto field names, as Envoy
						} `json:"node"`
					} `json:"bootstrap"`
				} `json:"configs"`
			}
			if err := json.Unmarshal([]byte(r.body), &doc); err != nil {
				t.Fatalf("%v: %s", err, r.body)
			}
			if len(doc.Configs) != 1 || doc.Configs[0].Type != "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump" ||
				doc.Configs[0].Bootstrap.Node.ID != "node-1" || doc.Configs[0].Bootstrap.Node.UserAgentName != "switchyard" {
				t.Errorf("config_dump = %s", r.body)
			}
		})
	}
}

func TestMethodsAndPaths(t *testing.T) {
	var quits, drains atomic.Int32
	s := start(t, Options{Quit: func() { quits.Add(1) }, Drain: func(bool, bool) { drains.Add(1) }})
	tests := []struct {
		method, path string
		code         int
		body         string // prefix
	}{
		{"GET", "/healthcheck/fail", 405, "Method GET not allowed, POST required."},
		{"GET", "/healthcheck/ok", 405, "Method GET not allowed, POST required."},
		{"GET", "/quitquitquit", 405, "Method GET not allowed, POST required."},
		{"PUT", "/drain_listeners", 405, "Method PUT not allowed, POST required."},
		{"GET", "/nope", 404, "invalid path. admin commands are:\n"},
		{"GET", "/stats/", 404, "invalid path. "},
		{"GET", "/", 200, "admin commands are:\n"},
		{"GET", "/help", 200, "admin commands are:\n"},
	}
	for _, tt := range tests {
		r := do(t, s, tt.method, tt.path)
		if r.code != tt.code || !strings.HasPrefix(r.body, tt.body) {
			t.Errorf("%s %s = %d %q, want %d %q...", tt.method, tt.path, r.code, r.body, tt.code, tt.body)
		}
		if tt.code == 405 && r.header.Get("Allow") != "POST" {
			t.Errorf("%s %s: Allow = %q", tt.method, tt.path, r.header.Get("Allow"))
		}
	}
	if s.HealthFailed() || quits.Load() != 0 || drains.Load() != 0 {
		t.Errorf("a refused request had an effect: health failed %v, quits %d, drains %d",
			s.HealthFailed(), quits.Load(), drains.Load())
	}
	index := do(t, s, "GET", "/").body
	for _, e := range endpoints {
		if !strings.Contains(index, "  "+e.path+": ") {
			t.Errorf("index lacks %s:\n%s", e.path, index)
		}
	}
}

func TestQuitCalledOnceAfterResponse(t *testing.T) {
	var calls atomic.Int32
	called := make(chan struct{})
	self := make(chan *Server, 1)
	s := start(t, Options{Quit: func() {
		calls.Add(1)
		(<-self).Close() // Quit may shut the admin server down
		close(called)
	}})
	self <- s
	r := do(t, s, "POST", "/quitquitquit")
	if r.code != 200 || r.body != "OK\n" {
		t.Fatalf("POST /quitquitquit = %d %q", r.code, r.body)
	}
	select {
	case <-called:
	case <-time.After(5 * time.Second):
		t.Fatal("Quit not called")
	}
	if _, err := client.Get("http://" + s.Addr().String() + "/ready"); err == nil {
		t.Error("server still answers after Quit closed it")
	}
	if calls.Load() != 1 {
		t.Errorf("Quit called %d times", calls.Load())
	}
}

func TestQuitOnce(t *testing.T) {
	var calls atomic.Int32
	s := start(t, Options{Quit: func() { calls.Add(1) }})
	for range 3 {
		if r := do(t, s, "POST", "/quitquitquit"); r.code != 200 {
			t.Fatalf("POST /quitquitquit = %d", r.code)
		}
	}
	deadline := time.Now().Add(time.Second)
	for calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // room for wrong extra calls
	if calls.Load() != 1 {
		t.Errorf("Quit called %d times, want 1", calls.Load())
	}
}

func TestDrain(t *testing.T) {
	type call struct{ graceful, inbound bool }
	calls := make(chan call, 10)
	s := start(t, Options{Drain: func(g, i bool) { calls <- call{g, i} }})
	tests := []struct {
		query string
		code  int
		want  *call
	}{
		{"", 200, &call{false, false}},
		{"?graceful", 200, &call{true, false}},
		{"?inboundonly", 200, &call{false, true}},
		{"?graceful&inboundonly", 200, &call{true, true}},
		{"?graceful&skip_exit", 400, nil},
	}
	for _, tt := range tests {
		r := do(t, s, "POST", "/drain_listeners"+tt.query)
		var got []call // Drain runs before the response is sent
		for len(calls) > 0 {
			got = append(got, <-calls)
		}
		if r.code != tt.code {
			t.Errorf("%s: code %d %q, want %d", tt.query, r.code, r.body, tt.code)
		}
		if tt.want == nil {
			if len(got) != 0 {
				t.Errorf("%s: Drain called %v", tt.query, got)
			}
			continue
		}
		if r.body != "OK\n" || len(got) != 1 || got[0] != *tt.want {
			t.Errorf("%s: body %q, Drain calls %v, want [%v]", tt.query, r.body, got, *tt.want)
		}
	}
}

func TestUnwiredEndpoints(t *testing.T) {
	s := start(t, Options{})
	for _, path := range []string{"/quitquitquit", "/drain_listeners"} {
		if r := do(t, s, "POST", path); r.code != 404 {
			t.Errorf("POST %s without a hook = %d, want 404", path, r.code)
		}
	}
	if r := do(t, s, "GET", "/clusters"); r.code != 200 || r.body != "" {
		t.Errorf("/clusters without a hook = %d %q", r.code, r.body)
	}
}

func TestCloseTwice(t *testing.T) {
	s, err := Start(Options{Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := client.Get("http://" + addr + "/ready"); err == nil {
		t.Error("server answers after Close")
	}
}

func TestStartBadAddress(t *testing.T) {
	if s, err := Start(Options{Address: "256.0.0.1:bad"}); err == nil {
		s.Close()
		t.Fatal("Start on a bad address succeeded")
	}
}
