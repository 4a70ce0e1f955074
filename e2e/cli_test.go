package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// The command line and the admin endpoint, run the way a user runs them.

// runCLI runs the binary to completion (at most 10 s) and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("switchyard %v did not exit within 10s\nstderr: %s", args, stderr.String())
	}
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// writeConfig writes yaml to a temporary file and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// cliLineOf returns the 1-based number of the first line of s that contains needle.
func cliLineOf(t *testing.T, s, needle string) int {
	t.Helper()
	for i, l := range strings.Split(s, "\n") {
		if strings.Contains(l, needle) {
			return i + 1
		}
	}
	t.Fatalf("%q not in the config", needle)
	return 0
}

// cliProcess is a switchyard started by a test that needs its exit status.
type cliProcess struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr strings.Builder
	done   chan struct{}
}

var (
	cliListenRe = regexp.MustCompile(`msg=listening listener=\S+ address=(\S+)`)
	cliAdminRe  = regexp.MustCompile(`msg="admin address" address=(\S+)`)
)

// launchCLI starts the binary with args and waits until it logged its admin and first listener
// addresses. It is killed at cleanup if still running.
func launchCLI(t *testing.T, args ...string) (pr *cliProcess, admin, listener string) {
	t.Helper()
	pr = &cliProcess{cmd: exec.Command(harness.Binary(t), args...), done: make(chan struct{})}
	stderr, err := pr.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pr.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			pr.mu.Lock()
			pr.stderr.WriteString(sc.Text() + "\n")
			pr.mu.Unlock()
		}
		pr.cmd.Wait()
		close(pr.done)
	}()
	t.Cleanup(func() {
		select {
		case <-pr.done:
		default:
			pr.cmd.Process.Kill()
			<-pr.done
		}
	})
	if !pollUntil(func() bool {
		log := pr.log()
		a, l := cliAdminRe.FindStringSubmatch(log), cliListenRe.FindStringSubmatch(log)
		if a != nil && l != nil {
			admin, listener = a[1], l[1]
			return true
		}
		return false
	}) {
		t.Fatalf("switchyard did not start:\n%s", pr.log())
	}
	return pr, admin, listener
}

func (pr *cliProcess) log() string {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.stderr.String()
}

// adminDo sends one admin request and returns the status and body.
func adminDo(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: ioWait}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var versionRe = regexp.MustCompile(`^switchyard version (\d+\.\d+\.\d+\S*)\n$`)

func TestCLIVersion(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI(t, "--version")
	if code != 0 || !versionRe.MatchString(stdout) {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestCLIValidateOpensNoSocket validates a config whose listener and admin ports are taken: it
// can only succeed without binding them. Serving the same config fails, which shows the ports are
// really in the way.
func TestCLIValidateOpensNoSocket(t *testing.T) {
	t.Parallel()
	var ports []int
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	yaml := harness.Config{UpstreamPort: 1}.YAML()
	yaml = strings.Replace(yaml, "    address: {socket_address: {address: 127.0.0.1, port_value: 0}}",
		fmt.Sprintf("    address: {socket_address: {address: 127.0.0.1, port_value: %d}}", ports[0]), 1)
	yaml = strings.Replace(yaml, "  address: {socket_address: {address: 127.0.0.1, port_value: 0}}",
		fmt.Sprintf("  address: {socket_address: {address: 127.0.0.1, port_value: %d}}", ports[1]), 1)
	path := writeConfig(t, yaml)

	start := time.Now()
	code, stdout, stderr := runCLI(t, "--mode", "validate", "-c", path)
	if code != 0 || strings.TrimSpace(stdout) == "" {
		t.Errorf("validate: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("validate took %v", d)
	}

	code, _, stderr = runCLI(t, "-c", path)
	if code == 0 || !strings.Contains(stderr, "address already in use") {
		t.Errorf("serving on taken ports: exit %d, stderr %q", code, stderr)
	}
}

func TestCLIConfigErrors(t *testing.T) {
	t.Parallel()
	const hcmPath = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
	tests := []struct {
		name   string
		cfg    harness.Config
		path   string // the field path the message names
		msg    string // part of the message
		lineAt string // the line the message names is the first containing this
	}{
		{"unknown cluster", harness.Config{Routes: "- match: {prefix: \"/\"}\n  route: {cluster: bakend}"},
			hcmPath + ".route_config.virtual_hosts[0].routes[0].route.cluster", `unknown cluster "bakend"`, "cluster: bakend"},
		{"misspelled field", harness.Config{Cluster: "conect_timeout: 2s"},
			"static_resources.clusters[0].conect_timeout", `unknown field "conect_timeout"`, "conect_timeout"},
		{"unsupported field", harness.Config{HCM: "tracing: {}"},
			hcmPath + ".tracing", `"tracing" is not supported`, "tracing: {}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.UpstreamPort = 1
			yaml := tt.cfg.YAML()
			path := writeConfig(t, yaml)
			code, _, stderr := runCLI(t, "-c", path)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != 1 {
				t.Errorf("want one message, got %d lines:\n%s", len(lines), stderr)
			}
			want := fmt.Sprintf("%s:%d: %s: ", path, cliLineOf(t, yaml, tt.lineAt), tt.path)
			if !strings.Contains(stderr, want) || !strings.Contains(stderr, tt.msg) {
				t.Errorf("stderr %q\nwant it to contain %q and %q", stderr, want, tt.msg)
			}
		})
	}
}

func TestCLILowerCaseEnums(t *testing.T) {
	t.Parallel()
	a := newEchoApp(t, "app", nil)
	yaml := harness.Config{UpstreamPort: a.port(), HCM: "codec_type: auto", Cluster: "lb_policy: round_robin"}.YAML()
	yaml = strings.Replace(yaml, "type: STATIC", "type: static", 1)
	if !strings.Contains(yaml, "type: static") {
		t.Fatal("template changed: no STATIC cluster type")
	}
	p := harness.Start(t, yaml)
	echoOf(t, getVia(t, p.Addr(""), "app", "/"))
}

func TestCLILegacyRouterWithoutTypedConfig(t *testing.T) {
	t.Parallel()
	a := newEchoApp(t, "app", nil)
	p := harness.Start(t, harness.Config{UpstreamPort: a.port(), Filters: "- name: envoy.filters.http.router"}.YAML())
	echoOf(t, getVia(t, p.Addr(""), "app", "/"))
	var warn string
	for _, l := range strings.Split(p.Log(), "\n") {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, "typed_config") {
			warn = l
		}
	}
	if !strings.Contains(warn, "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router") ||
		!strings.Contains(warn, "http_filters[0]") {
		t.Errorf("want a warning naming the filter and the typed_config to add; got %q\n%s", warn, p.Log())
	}
}

func TestCLIConfigYAMLAlone(t *testing.T) {
	t.Parallel()
	a := newEchoApp(t, "app", nil)
	_, admin, listener := launchCLI(t, "--config-yaml", harness.Config{UpstreamPort: a.port()}.YAML())
	echoOf(t, getVia(t, listener, "app", "/"))
	if code, body := adminDo(t, "GET", "http://"+admin+"/ready"); code != 200 {
		t.Errorf("/ready %d %q", code, body)
	}
}

// TestCLIConfigYAMLMergesOverFile starts from a file whose route names a cluster it does not
// define; the overlay adds it (repeated fields append, as in Envoy).
func TestCLIConfigYAMLMergesOverFile(t *testing.T) {
	t.Parallel()
	a := newEchoApp(t, "app", nil)
	full := harness.Config{UpstreamPort: a.port()}.YAML()
	i := strings.Index(full, "  clusters:\n")
	base, clusters := full[:i], full[i:]
	overlay := "static_resources:\n" + clusters

	code, _, stderr := runCLI(t, "--mode", "validate", "-c", writeConfig(t, base))
	if code != 1 || !strings.Contains(stderr, `unknown cluster "app"`) {
		t.Fatalf("the file alone: exit %d, stderr %q", code, stderr)
	}
	p := harness.Start(t, base, "--config-yaml", overlay)
	echoOf(t, getVia(t, p.Addr(""), "app", "/"))
}

func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	a := newEchoApp(t, "app", nil)
	pr, admin, _ := launchCLI(t, "-c", writeConfig(t, harness.Config{UpstreamPort: a.port()}.YAML()))
	base := "http://" + admin

	if code, body := adminDo(t, "GET", base+"/ready"); code != 200 || body != "LIVE\n" {
		t.Errorf("/ready: %d %q, want 200 LIVE", code, body)
	}

	_, info := adminDo(t, "GET", base+"/server_info")
	var si struct{ Version, State string }
	if err := json.Unmarshal([]byte(info), &si); err != nil {
		t.Fatalf("/server_info: %v: %q", err, info)
	}
	_, out, _ := runCLI(t, "--version")
	if m := versionRe.FindStringSubmatch(out); m == nil || si.Version != m[1] || si.State != "LIVE" {
		t.Errorf("/server_info %+v; --version says %q", si, out)
	}

	if _, body := adminDo(t, "GET", base+"/clusters"); !strings.Contains(body, fmt.Sprintf("app::127.0.0.1:%d::", a.port())) {
		t.Errorf("/clusters does not list the upstream host:\n%s", body)
	}

	_, dump := adminDo(t, "GET", base+"/config_dump")
	var cd struct {
		Configs []struct {
			Bootstrap struct {
				StaticResources struct {
					Clusters []struct{ Name string }
				} `json:"static_resources"`
			}
		}
	}
	if err := json.Unmarshal([]byte(dump), &cd); err != nil || len(cd.Configs) != 1 ||
		len(cd.Configs[0].Bootstrap.StaticResources.Clusters) != 1 || cd.Configs[0].Bootstrap.StaticResources.Clusters[0].Name != "app" {
		t.Errorf("/config_dump (%v): %.300s", err, dump)
	}

	if code, _ := adminDo(t, "GET", base+"/healthcheck/fail"); code != 405 {
		t.Errorf("GET /healthcheck/fail: %d, want 405", code)
	}
	if code, body := adminDo(t, "POST", base+"/healthcheck/fail"); code != 200 {
		t.Errorf("POST /healthcheck/fail: %d %q", code, body)
	}
	if code, body := adminDo(t, "GET", base+"/ready"); code != 503 || body != "DRAINING\n" {
		t.Errorf("/ready after healthcheck/fail: %d %q, want 503 DRAINING", code, body)
	}

	if code, body := adminDo(t, "POST", base+"/quitquitquit"); code != 200 {
		t.Errorf("POST /quitquitquit: %d %q", code, body)
	}
	select {
	case <-pr.done:
		if c := pr.cmd.ProcessState.ExitCode(); c != 0 {
			t.Errorf("exit code %d after /quitquitquit\n%s", c, pr.log())
		}
	case <-time.After(5 * time.Second):
		t.Errorf("still running 5s after /quitquitquit\n%s", pr.log())
	}
}
