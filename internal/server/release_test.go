package server

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/stats"
)

// TestQuietReleaseDecides: a release only after quietFor of allocations under the trickle, only
// when the heap has grown by a quarter and 2 MiB from the least it held since the last release,
// once per burst; a busy process never releases.
func TestQuietReleaseDecides(t *testing.T) {
	const mib = 1 << 20
	type step struct {
		allocs uint64 // allocated since the last step, MiB
		heap   uint64 // the heap's mapped pages, MiB
		want   bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"quiet after a burst: one release, at the fifth quiet second", []step{
			{0, 20, false}, {200, 120, false},
			{0, 120, false}, {0, 120, false}, {0, 120, false}, {0, 120, false},
			{0, 120, true},
			{0, 30, false}, {0, 30, false}, {0, 30, false}, {0, 30, false}, {0, 30, false}, {0, 30, false},
		}},
		{"a trickle is quiet (1/64 of the heap a second)", []step{
			{0, 400, false}, {9, 640, false}, {9, 640, false}, {9, 640, false}, {9, 640, false},
			{9, 640, true},
		}},
		{"busy: never", []step{
			{0, 20, false}, {2, 120, false}, {2, 120, false}, {2, 120, false}, {2, 120, false},
			{2, 120, false}, {2, 120, false}, {2, 120, false},
		}},
		{"a new burst restarts the count", []step{
			{0, 20, false}, {100, 120, false}, {0, 120, false}, {0, 120, false}, {50, 120, false},
			{0, 120, false}, {0, 120, false}, {0, 120, false}, {0, 120, false}, {0, 120, true},
		}},
		{"too little growth: under a quarter", []step{
			{0, 100, false}, {30, 124, false}, {0, 124, false}, {0, 124, false}, {0, 124, false},
			{0, 124, false}, {0, 124, false}, {0, 124, false},
		}},
		{"too little growth: under 2 MiB", []step{
			{0, 4, false}, {3, 5, false}, {0, 5, false}, {0, 5, false}, {0, 5, false},
			{0, 5, false}, {0, 5, false}, {0, 5, false},
		}},
		{"growth counts from the least the heap held", []step{
			{0, 100, false}, {0, 60, false}, {30, 80, false},
			{0, 80, false}, {0, 80, false}, {0, 80, false}, {0, 80, false}, {0, 80, true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			released := 0
			q := &quietRelease{quietFor: 5 * time.Second, release: func() { released++ }}
			now := time.Unix(1000, 0)
			var total uint64
			for i, s := range tc.steps {
				total += s.allocs * mib
				got := q.observe(now, time.Second, releaseReading{allocs: total, heap: s.heap * mib})
				if got != s.want {
					t.Fatalf("second %d: release %v, want %v", i, got, s.want)
				}
				now = now.Add(time.Second)
			}
			wantReleases := 0
			for _, s := range tc.steps {
				if s.want {
					wantReleases++
				}
			}
			if released != wantReleases {
				t.Fatalf("released %d times, want %d", released, wantReleases)
			}
		})
	}
}

// TestQuietReleaseGivesMemoryBack: with Go's real collector and the runtime's own readings, a
// burst (64 MiB held at once, then dropped) is found worth releasing once the process has been
// quiet, and the release returns it to the system. It starts from a heap with nothing to give
// back, whatever the tests before it left.
func TestQuietReleaseGivesMemoryBack(t *testing.T) {
	released := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	var gave uint64
	q := &quietRelease{quietFor: 300 * time.Millisecond, release: func() {
		before := released()
		debug.FreeOSMemory()
		gave = released() - min(released(), before)
	}}
	debug.FreeOSMemory()
	q.observe(time.Now(), 100*time.Millisecond, readRelease())

	keep := make([][]byte, 0, 64)
	for range 64 {
		keep = append(keep, make([]byte, 1<<20))
	}
	runtime.KeepAlive(keep)
	keep = nil

	did := false
	for deadline := time.Now().Add(10 * time.Second); !did && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		did = q.observe(time.Now(), 100*time.Millisecond, readRelease())
	}
	if !did {
		t.Fatalf("no release within 10 s of quiet (reading %+v, floor %d)", readRelease(), q.floor)
	}
	if gave < 32<<20 {
		t.Fatalf("the release gave %d MiB back to the system, want at least 32 of the burst's 64", gave>>20)
	}
}

// TestHoldQuietRelease: the servers of one process share one releaser, which the last to let go
// stops and waits for; letting go twice counts once; with GOGC=off there is none.
func TestHoldQuietRelease(t *testing.T) {
	r := &quietReleases
	users := func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.users
	}
	ca, cb := stats.NewStore().Counter("a"), stats.NewStore().Counter("b")
	a, b := holdQuietRelease(ca), holdQuietRelease(cb)
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	if users() != 2 {
		t.Fatalf("%d users, want 2", users())
	}
	releaseCounted()
	if ca.Value() != 1 || cb.Value() != 1 {
		t.Fatalf("a release counted %d and %d, want 1 for each holder", ca.Value(), cb.Value())
	}
	a()
	a()
	releaseCounted()
	if ca.Value() != 1 || cb.Value() != 2 {
		t.Fatalf("a release after a let go counted %d and %d, want 1 and 2", ca.Value(), cb.Value())
	}
	if users() != 1 {
		t.Fatalf("after one let go (twice): %d users, want 1", users())
	}
	select {
	case <-done:
		t.Fatal("the releaser stopped while a server still holds it")
	default:
	}
	b()
	select {
	case <-done:
	default:
		t.Fatal("the last let go did not wait for the releaser to stop")
	}

	t.Setenv("GOGC", "off")
	c := holdQuietRelease(nil)
	if users() != 0 {
		t.Fatal("a releaser with the collector off")
	}
	c()
}
