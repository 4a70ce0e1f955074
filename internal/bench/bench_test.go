package bench

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain runs the tests with GODEBUG=http2xconnect=1, re-executing the test binary if needed,
// so the in-process echo server accepts WebSockets over HTTP/2.
func TestMain(m *testing.M) {
	if err := EnableExtendedConnect(); err != nil {
		panic(err)
	}
	goleak.VerifyTestMain(m)
}

func startEcho(t *testing.T) string {
	t.Helper()
	e, err := NewEchoServer("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Serve() }()
	t.Cleanup(func() {
		e.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "ws://" + e.Addr() + "/echo"
}

// runJSON runs cfg and returns its result as the JSON line decodes, so the test sees what a
// consumer of the output sees.
func runJSON(t *testing.T, cfg Config) map[string]any {
	t.Helper()
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	line, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"workload", "target", "proto", "conns", "msg_bytes", "duration_s", "ops", "ops_per_s",
		"p50_us", "p99_us", "p999_us", "throughput_mib_s", "target_pid", "cpu_us_per_op", "cpu_kernel_us_per_op", "client_cpu_cores", "host_cpu_busy", "rss_kib_before",
		"rss_kib_after", "rss_per_idle_tunnel_kib", "target_pids"} {
		if _, ok := m[k]; !ok {
			t.Errorf("result line lacks %q: %s", k, line)
		}
	}
	if m["errors"].(float64) != 0 {
		t.Errorf("errors in the run: %s", line)
	}
	return m
}

// TestRunWorkloads runs every workload over both protocols against the echo server directly,
// charging CPU and RSS to this process, and checks what each reports.
func TestRunWorkloads(t *testing.T) {
	url := startEcho(t)
	tests := []struct {
		workload    string
		conns, size int
		check       func(t *testing.T, m map[string]any)
	}{
		{WorkloadEcho, 4, 1024, func(t *testing.T, m map[string]any) {
			p50, p99, p999 := m["p50_us"].(float64), m["p99_us"].(float64), m["p999_us"].(float64)
			if !(p50 > 0 && p50 <= p99 && p99 <= p999) {
				t.Errorf("percentiles p50 %v p99 %v p999 %v", p50, p99, p999)
			}
			if m["cpu_us_per_op"].(float64) <= 0 {
				t.Errorf("cpu_us_per_op %v, want > 0 for this busy process", m["cpu_us_per_op"])
			}
			// An echo server's time is mostly system calls: some of it must show as the kernel's.
			if k := m["cpu_kernel_us_per_op"].(float64); k <= 0 || k > m["cpu_us_per_op"].(float64) {
				t.Errorf("cpu_kernel_us_per_op %v, want in (0, cpu_us_per_op %v]", k, m["cpu_us_per_op"])
			}
		}},
		{WorkloadBulk, 1, 65536, func(t *testing.T, m map[string]any) {
			want := m["ops_per_s"].(float64) * 65536 / (1 << 20)
			if got := m["throughput_mib_s"].(float64); got <= 0 || math.Abs(got-want) > 0.01*want {
				t.Errorf("throughput %v MiB/s, want ops_per_s × 64 KiB = %v", got, want)
			}
		}},
		{WorkloadHandshakes, 3, 64, func(t *testing.T, m map[string]any) {
			if m["p50_us"].(float64) <= 0 {
				t.Errorf("no handshake latency: %v", m)
			}
		}},
		{WorkloadIdle, 50, 64, func(t *testing.T, m map[string]any) {
			if m["ops"].(float64) != 50 {
				t.Errorf("opened %v tunnels, want 50", m["ops"])
			}
			if m["rss_kib_before"].(float64) <= 0 || m["rss_kib_after"].(float64) <= 0 {
				t.Errorf("no RSS samples: %v", m)
			}
		}},
	}
	for _, proto := range []string{"h1", "h2"} {
		for _, tt := range tests {
			t.Run(proto+"/"+tt.workload, func(t *testing.T) {
				m := runJSON(t, Config{URL: url, Proto: proto, Workload: tt.workload, Conns: tt.conns, Size: tt.size,
					Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond, Settle: 10 * time.Millisecond, PIDs: []int{os.Getpid()}})
				if m["ops"].(float64) <= 0 || m["ops_per_s"].(float64) <= 0 {
					t.Errorf("no operations: %v", m)
				}
				if m["workload"] != tt.workload || m["proto"] != proto || m["target"] != url || m["target_pid"].(float64) != float64(os.Getpid()) ||
					!slices.Contains(m["target_pids"].([]any), any(float64(os.Getpid()))) {
					t.Errorf("labels: %v", m)
				}
				tt.check(t, m)
			})
		}
	}
}

// TestRunOpsAndRate: -ops ends the window after that many operations; -rate paces them.
func TestRunOpsAndRate(t *testing.T) {
	url := startEcho(t)
	m := runJSON(t, Config{URL: url, Proto: "h1", Workload: WorkloadEcho, Conns: 2, Size: 16, Ops: 200, Duration: time.Hour})
	if ops := m["ops"].(float64); ops != 200 {
		t.Errorf("-ops 200 counted %v", ops)
	}
	m = runJSON(t, Config{URL: url, Proto: "h1", Workload: WorkloadEcho, Conns: 2, Size: 16, Rate: 100, Duration: time.Second})
	if ops := m["ops"].(float64); ops < 20 || ops > 110 {
		t.Errorf("-rate 100 for 1 s counted %v operations", ops)
	}
}

// TestEchoSizes sends messages across every RFC 6455 length encoding and past the HTTP/2 initial
// window (65535) and frame size (16384), then runs the closing handshake.
func TestEchoSizes(t *testing.T) {
	url := startEcho(t)
	tgt, err := parseTarget(url)
	if err != nil {
		t.Fatal(err)
	}
	for _, proto := range []string{"h1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			c, err := newDialer(tgt, proto == "h2", false, 1024).dial()
			if err != nil {
				t.Fatal(err)
			}
			if err := c.writeMessage(opPing, []byte("ping"), false); err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{0, 1, 125, 126, 65535, 65536, 200000} {
				msg := make([]byte, n)
				for i := range msg {
					msg[i] = byte(i * 7)
				}
				if err := c.echo(msg); err != nil { // the pong to the ping is skipped
					t.Fatalf("%d bytes: %v", n, err)
				}
			}
			if err := c.close(); err != nil {
				t.Errorf("closing handshake: %v", err)
			}
		})
	}
}

// TestRunRefused: a bad configuration or a target that does not upgrade fails the run at once.
func TestRunRefused(t *testing.T) {
	url := startEcho(t)
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	ok := Config{URL: url, Proto: "h1", Workload: WorkloadEcho, Conns: 1, Duration: time.Second}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"proto", func(c *Config) { c.Proto = "h3" }, "proto"},
		{"workload", func(c *Config) { c.Workload = "soak" }, "workload"},
		{"conns", func(c *Config) { c.Conns = 0 }, "conns"},
		{"scheme", func(c *Config) { c.URL = "ftp://127.0.0.1/" }, "scheme"},
		{"no window", func(c *Config) { c.Duration = 0 }, "duration"},
		{"not websocket h1", func(c *Config) { c.URL = "ws" + strings.TrimPrefix(plain.URL, "http") }, "404"},
		{"no h2c", func(c *Config) { c.URL = "ws" + strings.TrimPrefix(plain.URL, "http"); c.Proto = "h2" }, "first connection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.edit(&cfg)
			_, err := Run(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run = %v, want an error about %q", err, tt.want)
			}
		})
	}
}

// TestH2ThroughProxy runs the h2 echo workload against a proxy given in SWITCHYARD_BENCH_H2_URL
// (a listener with allow_connect in front of `switchyard-bench -serve`).
func TestH2ThroughProxy(t *testing.T) {
	url := os.Getenv("SWITCHYARD_BENCH_H2_URL")
	if url == "" {
		t.Skip("set SWITCHYARD_BENCH_H2_URL to an HTTP/2 (allow_connect) proxy in front of the echo server")
	}
	m := runJSON(t, Config{URL: url, Proto: "h2", Workload: WorkloadEcho, Conns: 4, Size: 1024, Duration: 300 * time.Millisecond})
	if m["ops"].(float64) <= 0 {
		t.Errorf("no operations: %v", m)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values []int64
		q      float64
		want   float64
	}{
		{"empty", nil, 0.5, 0},
		{"exact small", []int64{1, 2, 3, 4, 5}, 0.5, 3},
		{"one value", []int64{65000}, 0.99, 65000},
		{"tail", append(make([]int64, 99), 1e6), 0.999, 1e6},
		{"median of a spread", []int64{10e3, 20e3, 30e3, 40e3, 1e9}, 0.5, 30e3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h histogram
			for _, v := range tt.values {
				h.record(v)
			}
			if got := h.quantile(tt.q); math.Abs(got-tt.want) > tt.want/32 {
				t.Errorf("quantile(%v) = %v, want %v ± 1/32", tt.q, got, tt.want)
			}
		})
	}
}

func TestParseProc(t *testing.T) {
	tests := []struct {
		name string
		stat string
		want statFields
	}{
		{"plain", "42 (sy) S 1 42 42 0 -1 4194304 100 0 0 0 150 25 0 0 20 0 8 0 1000 123456 789", statFields{ppid: 1, ticks: 175, sysTicks: 25, start: 1000}},
		{"name with spaces and parens", "43 (a b) c)) R 42 43 43 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 555", statFields{ppid: 42, ticks: 10, sysTicks: 3, start: 555}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.stat))
			if err != nil || got != tt.want {
				t.Errorf("parseStat = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"42 (sy) S 1", "42 (sy) S x 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 555", "no name"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) did not fail", bad)
		}
	}
	rss, err := parseStatusRSS([]byte("Name:\tsy\nVmPeak:\t  9000 kB\nVmRSS:\t    8136 kB\nThreads:\t8\n"))
	if err != nil || rss != 8136 {
		t.Errorf("parseStatusRSS = %d, %v; want 8136", rss, err)
	}
}
