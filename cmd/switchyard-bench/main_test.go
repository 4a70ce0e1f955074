package main

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/switchyard-proxy/switchyard/internal/bench"
)

// TestRun drives the command as a user would: flags in, exit code and one JSON line out.
func TestRun(t *testing.T) {
	e, err := bench.NewEchoServer("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.Serve()
	defer e.Close()
	url := "ws://" + e.Addr() + "/"
	self := strconv.Itoa(os.Getpid())
	echo := []string{"-url", url, "-workload", "echo", "-conns", "2", "-size", "128", "-duration", "300ms", "-warmup", "50ms", "-target", "direct"}
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"echo", echo, 0, ""},
		{"echo pid list", append([]string{"-pid", self + "," + self}, echo...), 0, ""},
		{"bad pid list", append([]string{"-pid", self + ",x"}, echo...), 2, "positive process ID"},
		{"help", []string{"-h"}, 0, "-workload"},
		{"no url", nil, 2, "give -url"},
		{"bad flag", []string{"-conn", "3"}, 2, "-conn"},
		{"extra argument", []string{"-url", url, "now"}, 2, "unexpected argument"},
		{"refused", []string{"-url", url, "-proto", "h3"}, 1, "proto"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.stderr)
			}
			if tt.code != 0 || tt.name == "help" {
				return
			}
			lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
			if len(lines) != 1 {
				t.Fatalf("want one line, got %q", stdout.String())
			}
			var res bench.Result
			if err := json.Unmarshal([]byte(lines[0]), &res); err != nil {
				t.Fatal(err)
			}
			if res.Ops <= 0 || res.Workload != "echo" || res.Target != "direct" || res.Conns != 2 || res.MsgBytes != 128 {
				t.Errorf("result %+v", res)
			}
			if strings.Contains(tt.name, "pid") {
				// This process, listed twice, is charged once; it has no children.
				if res.TargetPID != os.Getpid() || !slices.Equal(res.TargetPIDs, []int{os.Getpid()}) || res.RSSKiBAfter <= 0 || res.CPUUSPerOp <= 0 {
					t.Errorf("charged %d %v, RSS %d KiB, %v us/op", res.TargetPID, res.TargetPIDs, res.RSSKiBAfter, res.CPUUSPerOp)
				}
			}
		})
	}
}
