// Package harness runs the built switchyard binary from a YAML string against upstreams the test
// owns, over real sockets, and reads its stats from the admin endpoint — the way a user sees it.
package harness

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// moduleRoot finds the repository root from this file's location.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// Binary builds cmd/switchyard once per test process (with -race when the tests run with it) and
// returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		readSources()
		dir, err := os.MkdirTemp("", "switchyard-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "switchyard")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/switchyard")
		cmd := exec.Command("go", args...)
		cmd.Dir = moduleRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Proxy is one running switchyard process.
type Proxy struct {
	t         testing.TB
	cmd       *exec.Cmd
	Admin     string            // host:port of the admin endpoint
	Listeners map[string]string // listener name → host:port
	mu        sync.Mutex
	log       strings.Builder
	exited    chan struct{}
	exitErr   error
	baseline  int64 // server.goroutines right after start
}

// statsClient never keeps admin connections open, so they do not count as proxy goroutines.
var statsClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

var (
	listenRe = regexp.MustCompile(`msg=listening listener=(\S+) address=(\S+)`)
	adminRe  = regexp.MustCompile(`msg="admin address" address=(\S+)`)
)

// Start runs switchyard with yaml as its config. Use port_value: 0 for listeners and admin; the
// bound addresses are read from the log. The process is stopped at test cleanup, and the test
// fails if it wrote a data race report.
func Start(t testing.TB, yaml string, extraArgs ...string) *Proxy {
	t.Helper()
	return startBinary(t, Binary(t), yaml, extraArgs...)
}

// CheckNoLeaks fails the test unless the proxy's goroutine count returns to what it was right
// after start within a few seconds: every stream, tunnel and upstream attempt must end with its
// connections. Stop calls it, so every test that lets its clients and upstreams close gets it.
func (p *Proxy) CheckNoLeaks() {
	p.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := p.Stats()
		got := st["server.goroutines"]
		// A pooled HTTP/2 upstream connection is not a leak: it keeps a reader, a writer and a
		// watcher while it is open.
		// Goroutines kept idle for the next connection (package workers) are not leaks either.
		allowed := p.baseline + st["server.workers_idle"]
		for name, v := range st {
			if strings.HasSuffix(name, ".upstream_cx_http2_active") {
				allowed += 3 * v
			}
		}
		if got <= allowed {
			return
		}
		if time.Now().After(deadline) {
			p.t.Errorf("proxy goroutines: %d, %d allowed: something was left running\n%s", got, allowed, p.Log())
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Addr returns the address of the listener called name, or of the only listener when name is "".
func (p *Proxy) Addr(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if name == "" && len(p.Listeners) == 1 {
		for _, a := range p.Listeners {
			return a
		}
	}
	a, ok := p.Listeners[name]
	if !ok {
		p.t.Fatalf("no listener %q in %v", name, p.Listeners)
	}
	return a
}

// Signal sends sig to the proxy process.
func (p *Proxy) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal: %v", err)
	}
}

// WaitExit waits for the process to exit and returns its error (nil for exit status 0); it fails
// the test after timeout.
func (p *Proxy) WaitExit(timeout time.Duration) error {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.exitErr
	case <-time.After(timeout):
		p.t.Fatalf("switchyard still running after %v\n%s", timeout, p.Log())
		return nil
	}
}

// Exited reports whether the process has exited.
func (p *Proxy) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Log returns everything the proxy has logged so far.
func (p *Proxy) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Stop sends SIGTERM and waits for the process; it fails the test on a race report or a hang.
func (p *Proxy) Stop() {
	select {
	case <-p.exited:
	default:
		if !p.t.Failed() {
			p.CheckNoLeaks()
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
			p.t.Errorf("switchyard did not exit on SIGTERM\n%s", p.Log())
		}
	}
	if log := p.Log(); strings.Contains(log, "WARNING: DATA RACE") || strings.Contains(log, "panic:") {
		p.t.Errorf("switchyard reported a race or panic:\n%s", log)
	}
}

// Stats returns every stat as name → value from /stats?format=json.
func (p *Proxy) Stats() map[string]int64 {
	p.t.Helper()
	resp, err := statsClient.Get("http://" + p.Admin + "/stats?format=json")
	if err != nil {
		p.t.Fatalf("admin /stats: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Stats []struct {
			Name  string          `json:"name"`
			Value json.RawMessage `json:"value"`
		} `json:"stats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		p.t.Fatalf("admin /stats json: %v", err)
	}
	out := make(map[string]int64, len(body.Stats))
	for _, s := range body.Stats {
		var v int64
		if err := json.Unmarshal(s.Value, &v); err != nil {
			var str string
			json.Unmarshal(s.Value, &str)
			fmt.Sscan(str, &v)
		}
		out[s.Name] = v
	}
	return out
}

// Stat returns one stat's value (0 when absent).
func (p *Proxy) Stat(name string) int64 {
	p.t.Helper()
	return p.Stats()[name]
}

// WaitStat waits until stat equals want, failing the test after timeout.
func (p *Proxy) WaitStat(name string, want int64, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := p.Stat(name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("stat %s = %d, want %d", name, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
