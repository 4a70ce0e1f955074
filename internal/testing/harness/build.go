package harness

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	noRaceOnce sync.Once
	noRacePath string
	noRaceErr  error
)

// BinaryNoRace returns a build of cmd/switchyard without the race detector, even when the tests
// run with -race. Load tests need it: a -race process dies past 8128 live goroutines, and every
// tunnel keeps two. Without -race it is the same binary as Binary.
func BinaryNoRace(t testing.TB) string {
	t.Helper()
	if !raceEnabled {
		return Binary(t)
	}
	noRaceOnce.Do(func() {
		readSources()
		dir, err := os.MkdirTemp("", "switchyard-e2e-norace-")
		if err != nil {
			noRaceErr = err
			return
		}
		noRacePath = filepath.Join(dir, "switchyard")
		cmd := exec.Command("go", "build", "-o", noRacePath, "./cmd/switchyard")
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			noRaceErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if noRaceErr != nil {
		t.Fatal(noRaceErr)
	}
	return noRacePath
}

// readSources reads every file the proxy's build reads (Go sources, go.mod, go.sum, embedded
// files), so that the go command's test cache, which records the files a test opens, drops a
// cached result when the proxy's code changes: the build runs in a child process the cache does
// not see, and without this a package of end-to-end tests passed from the cache against code it
// had never run.
func readSources() {
	root := moduleRoot()
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || path == filepath.Join(root, "bench")) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(name, "_test.go") || strings.HasSuffix(name, ".test") || strings.HasSuffix(name, ".md") {
			return nil
		}
		os.ReadFile(path)
		return nil
	})
}

// StartNoRace is Start with the BinaryNoRace build, for tests that hold thousands of tunnels.
func StartNoRace(t testing.TB, yaml string, extraArgs ...string) *Proxy {
	t.Helper()
	return startBinary(t, BinaryNoRace(t), yaml, extraArgs...)
}

// startBinary is Start for a given binary.
func startBinary(t testing.TB, bin, yaml string, extraArgs ...string) *Proxy {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	// A short drain time bounds how long a failed test's leftover connections can hold the
	// process at SIGTERM; tests of draining pass their own.
	args := append([]string{"-c", cfg, "-l", "debug", "--drain-time-s", "5"}, extraArgs...)
	cmd := exec.Command(bin, args...)
	// A -race binary sleeps a second at exit by default; the tests stop many proxies.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Proxy{t: t, cmd: cmd, Listeners: map[string]string{}, exited: make(chan struct{})}
	ready := make(chan struct{})
	var readyOnce sync.Once
	wantListeners := strings.Count(yaml, "filter_chains:")
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			if m := listenRe.FindStringSubmatch(line); m != nil {
				p.Listeners[m[1]] = m[2]
			}
			if m := adminRe.FindStringSubmatch(line); m != nil {
				p.Admin = m[1]
			}
			done := p.Admin != "" && len(p.Listeners) >= wantListeners
			p.mu.Unlock()
			if done {
				readyOnce.Do(func() { close(ready) })
			}
		}
	}()
	go func() {
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("switchyard exited at start: %v\n%s", p.exitErr, p.Log())
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("switchyard did not start in time\n%s", p.Log())
	}
	p.baseline = p.Stat("server.goroutines")
	t.Cleanup(p.Stop)
	return p
}

// FDs is the number of descriptors the proxy has open, for tests that bound what a tunnel holds
// (a process's descriptor limit caps its tunnels).
func (p *Proxy) FDs() int {
	p.t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatalf("proxy descriptors: %v", err)
	}
	return len(ents)
}

// RSS is the proxy's resident set size in bytes (VmRSS in /proc/<pid>/status), for tests that
// bound the memory a tunnel costs.
func (p *Proxy) RSS() int64 {
	p.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatalf("proxy status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				p.t.Fatalf("VmRSS %q: %v", line, err)
			}
			return kb << 10
		}
	}
	p.t.Fatalf("no VmRSS in /proc/%d/status", p.cmd.Process.Pid)
	return 0
}

// Goroutines is the proxy's count of goroutines at work: server.goroutines less the idle ones
// kept for the next connection (server.workers_idle, package workers), which no tunnel or stream
// holds. Both stats are set at the same moment.
func (p *Proxy) Goroutines() int64 {
	p.t.Helper()
	st := p.Stats()
	return st["server.goroutines"] - st["server.workers_idle"]
}
