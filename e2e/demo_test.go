package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// demoProcess is a running `switchyard demo` and the addresses it printed.
type demoProcess struct {
	cmd                            *exec.Cmd
	exited                         chan error // receives cmd.Wait's result once
	chat, frontAdmin, sidecarAdmin string
}

// demoURLRe matches the demo's labelled URL lines, e.g. "  front admin:   http://127.0.0.1:9901/...".
var demoURLRe = regexp.MustCompile(`^\s*(chat|front admin|sidecar admin)\b[^:]*:\s+http://([^/\s]+)/`)

// startDemo runs the README's first command on free ports and reads the URLs it prints. The
// process is killed at cleanup if the test did not stop it.
func startDemo(t *testing.T) *demoProcess {
	t.Helper()
	cmd := exec.Command(harness.Binary(t), "demo", "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0",
		"-sidecar-admin", "127.0.0.1:0", "-log-level", "error")
	cmd.Stderr = os.Stderr
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &demoProcess{cmd: cmd, exited: make(chan error, 1)}
	go func() {
		err := cmd.Wait()
		pw.Close()
		d.exited <- err
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	sc := bufio.NewScanner(pr)
	var printed strings.Builder
	for (d.chat == "" || d.frontAdmin == "" || d.sidecarAdmin == "") && sc.Scan() {
		printed.WriteString(sc.Text() + "\n")
		if m := demoURLRe.FindStringSubmatch(sc.Text()); m != nil {
			switch m[1] {
			case "chat":
				d.chat = m[2]
			case "front admin":
				d.frontAdmin = m[2]
			case "sidecar admin":
				d.sidecarAdmin = m[2]
			}
		}
	}
	go io.Copy(io.Discard, pr)
	if d.chat == "" || d.frontAdmin == "" || d.sidecarAdmin == "" {
		t.Fatalf("demo did not print its three URLs:\n%s", printed.String())
	}
	if !strings.Contains(printed.String(), "—HTTP/2 extended CONNECT→ sidecar") {
		t.Errorf("demo did not explain its hops:\n%s", printed.String())
	}
	return d
}

// waitExit fails the test unless the demo exits with status 0 within 10 s.
func (d *demoProcess) waitExit(t *testing.T) {
	t.Helper()
	select {
	case err := <-d.exited:
		if err != nil {
			t.Errorf("demo exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("demo did not exit")
	}
}

// demoStats reads an admin's /stats text ("name: value" lines) into name → value.
func demoStats(t *testing.T, admin string) map[string]int64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	out := map[string]int64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, val, ok := strings.Cut(line, ": ")
		var v int64
		if _, err := fmt.Sscan(val, &v); ok && err == nil {
			out[name] = v
		}
	}
	return out
}

// TestDemo runs the README's first command the way a user would and chats through it: the page
// comes through both proxies, two WebSocket clients see each other's messages, both admins count
// the tunnels (the front's stat_prefix is "demo", the sidecar's "sidecar"), and SIGTERM exits 0.
func TestDemo(t *testing.T) {
	d := startDemo(t)
	defer func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.waitExit(t)
	}()

	resp, err := http.Get("http://" + d.chat + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "new WebSocket(") ||
		!strings.Contains(string(page), "HTTP/2 extended CONNECT") || resp.Header.Get("Server") != "switchyard" {
		t.Fatalf("page: %d, server %q, %d bytes", resp.StatusCode, resp.Header.Get("Server"), len(page))
	}

	a, _, err := websocket.DefaultDialer.Dial("ws://"+d.chat+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, _, err := websocket.DefaultDialer.Dial("ws://"+d.chat+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The app registers a socket just after its 101, so b may miss a message sent at once: a
	// keeps saying hello until b hears it, as a person in the chat would.
	got := make(chan string, 1)
	go func() {
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, m, _ := b.ReadMessage()
		got <- string(m)
	}()
	var heard string
	for deadline := time.Now().Add(5 * time.Second); heard == "" && time.Now().Before(deadline); {
		if err := a.WriteMessage(websocket.TextMessage, []byte("hello from a")); err != nil {
			t.Fatal(err)
		}
		select {
		case heard = <-got:
		case <-time.After(200 * time.Millisecond):
		}
	}
	if heard != "hello from a" {
		t.Fatalf("b heard %q", heard)
	}
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, m, err := a.ReadMessage(); err != nil || string(m) != "hello from a" {
		t.Fatalf("a heard %q, %v", m, err)
	}

	// Both tunnels are open; each proxy counted them on its own admin.
	for _, c := range []struct {
		admin, stat string
		min, max    int64
	}{
		{d.frontAdmin, "http.demo.downstream_cx_upgrades_active", 2, 2},
		{d.frontAdmin, "http.demo.upgrades.websocket.established", 2, 2},
		{d.frontAdmin, "http.demo.downstream_cx_http2_total", 0, 0},
		{d.sidecarAdmin, "http.sidecar.downstream_cx_http2_total", 1, 1 << 62},
		{d.sidecarAdmin, "http.sidecar.downstream_cx_upgrades_active", 2, 2},
		{d.sidecarAdmin, "http.sidecar.upgrades.websocket.established", 2, 2},
		{d.sidecarAdmin, "http.demo.downstream_cx_upgrades_active", 0, 0},
	} {
		if v := demoStats(t, c.admin)[c.stat]; v < c.min || v > c.max {
			t.Errorf("%s %s = %d, want %d..%d", c.admin, c.stat, v, c.min, c.max)
		}
	}
}

// TestDemoQuitquitquit: /quitquitquit on either proxy's admin stops the whole demo with status 0.
func TestDemoQuitquitquit(t *testing.T) {
	for _, which := range []string{"front", "sidecar"} {
		t.Run(which, func(t *testing.T) {
			d := startDemo(t)
			admin := d.frontAdmin
			if which == "sidecar" {
				admin = d.sidecarAdmin
			}
			resp, err := http.Post("http://"+admin+"/quitquitquit", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("quitquitquit: %d", resp.StatusCode)
			}
			d.waitExit(t)
		})
	}
}
