package e2e

import (
	"bufio"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchyard-proxy/switchyard/internal/testing/harness"
)

// TestDemo runs the README's first command the way a user would and chats through it: the page
// comes through the proxy, two WebSocket clients see each other's messages, and the admin counts
// the tunnels.
func TestDemo(t *testing.T) {
	cmd := exec.Command(harness.Binary(t), "demo", "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-log-level", "error")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("demo exited with %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("demo did not exit on SIGTERM")
		}
	}()
	urls := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/`)
	sc := bufio.NewScanner(out)
	var chat, admin string
	for sc.Scan() && (chat == "" || admin == "") {
		line := sc.Text()
		if m := urls.FindStringSubmatch(line); m != nil {
			switch {
			case strings.Contains(line, "chat"):
				chat = m[1]
			case strings.Contains(line, "admin"):
				admin = m[1]
			}
		}
	}
	go io.Copy(io.Discard, out)
	if chat == "" || admin == "" {
		t.Fatalf("demo did not print its URLs (chat %q admin %q)", chat, admin)
	}

	resp, err := http.Get("http://" + chat + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "new WebSocket(") || resp.Header.Get("Server") != "switchyard" {
		t.Fatalf("page: %d, server %q, %d bytes", resp.StatusCode, resp.Header.Get("Server"), len(page))
	}

	a, _, err := websocket.DefaultDialer.Dial("ws://"+chat+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, _, err := websocket.DefaultDialer.Dial("ws://"+chat+"/ws", nil)
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
	resp, err = http.Get("http://" + admin + "/stats?filter=upgrades")
	if err != nil {
		t.Fatal(err)
	}
	stats, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"http.demo.downstream_cx_upgrades_active: 2", "http.demo.upgrades.websocket.established: 2"} {
		if !strings.Contains(string(stats), want) {
			t.Errorf("admin stats lack %q:\n%s", want, stats)
		}
	}
}
