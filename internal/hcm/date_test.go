package hcm

import (
	"net/http"
	"testing"
	"time"
)

func TestHTTPDateIsCurrentIMFFixdate(t *testing.T) {
	for range 3 {
		before := time.Now().Truncate(time.Second)
		got := httpDate()
		after := time.Now()
		d, err := http.ParseTime(got)
		if err != nil {
			t.Fatalf("Date %q does not parse: %v", got, err)
		}
		if len(got) != len(http.TimeFormat) || got[len(got)-3:] != "GMT" {
			t.Fatalf("Date %q is not IMF-fixdate", got)
		}
		if d.Before(before) || d.After(after) {
			t.Fatalf("Date %q is outside [%v, %v]", got, before, after)
		}
		time.Sleep(600 * time.Millisecond) // cross a second boundary at least once
	}
}
