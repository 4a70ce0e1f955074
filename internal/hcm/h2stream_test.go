package hcm

import (
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/codec/http2"
)

// TestH2ConfigDrainTimeout: the HCM's drain_timeout reaches the codec, and an explicit 0s means no
// grace at all (the codec's zero is its 5 s default).
func TestH2ConfigDrainTimeout(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{{7 * time.Second, 7 * time.Second}, {0, -1}} {
		if got := h2Config(nil, 60, tc.in, http2.NewStats(nil)).DrainTimeout; got != tc.want {
			t.Errorf("drain_timeout %v: codec DrainTimeout %v, want %v", tc.in, got, tc.want)
		}
	}
}
