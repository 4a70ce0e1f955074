package http2

import (
	"context"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestH2Spec runs h2spec (github.com/summerwind/h2spec) in strict mode against a ServerConn
// whose handler reads the request body and answers 200 with a small body. It runs with both
// malformed-message policies. Install with `go install github.com/summerwind/h2spec/cmd/h2spec@latest`.
func TestH2Spec(t *testing.T) {
	bin, err := exec.LookPath("h2spec")
	if err != nil {
		t.Skip("h2spec is not on PATH; install it with: go install github.com/summerwind/h2spec/cmd/h2spec@latest")
	}
	if testing.Short() {
		t.Skip("h2spec takes a while; skipped with -short")
	}
	for _, streamErr := range []bool{false, true} {
		t.Run("streamError="+strconv.FormatBool(streamErr), func(t *testing.T) {
			ts := startServer(t, ServerConfig{StreamErrorOnInvalidMessage: streamErr}, okHandler)
			_, port, _ := net.SplitHostPort(ts.addr())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "-h", "127.0.0.1", "-p", port, "-S", "-o", "10").CombinedOutput()
			m := regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("h2spec: %v\n%s", err, out)
			}
			t.Logf("h2spec: %s", m[0])
			if string(m[4]) != "0" || err != nil {
				t.Fatalf("h2spec failures:\n%s", out)
			}
		})
	}
}
