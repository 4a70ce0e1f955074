package hcm

import (
	"regexp"
	"testing"
)

// TestNewRequestID: a random UUID version 4 (RFC 9562 §5.4) in its lower-case text form, as
// Envoy's x-request-id, and a new one each time.
func TestNewRequestID(t *testing.T) {
	uuid4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := newRequestID()
		if !uuid4.MatchString(id) {
			t.Fatalf("%q is not a UUID v4", id)
		}
		if seen[id] {
			t.Fatalf("%q twice", id)
		}
		seen[id] = true
	}
}
