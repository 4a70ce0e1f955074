package server

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/stats"
)

// quietRelease gives memory back to the system once the process has gone quiet after a burst.
// Go's runtime keeps the pages of a burst (thousands of WebSocket handshakes, each leaving its
// garbage) up to the collector's goal, about twice the live heap, and a process that then only
// holds idle tunnels allocates almost nothing, so no collection comes to free the garbage and the
// background scavenger returns nothing below that goal: the RSS stays at the burst's peak for as
// long as the tunnels live. Envoy's allocator, tcmalloc, frees at once and returns free pages in
// the background. So every second the releaser looks at what the process allocated: when that has
// stayed under a trickle (1 MiB, or 1/64 of the live heap) for quietFor, and what a collection and
// a release would give back (the garbage not yet collected plus the free pages still mapped) is
// at least a quarter of the live heap and 2 MiB, it calls debug.FreeOSMemory once: a full
// collection, then every free page back to the system. A busy process never pays for it (the
// collector runs there anyway and keeps its pages for the next allocations), and a quiet one pays
// once per burst: after the release there is nothing left to give back until it allocates again.
type quietRelease struct {
	quietFor time.Duration
	release  func() // debug.FreeOSMemory; a test's counter

	quietSince time.Time
	lastAllocs uint64
	started    bool
}

const (
	quietReleaseAfter = 5 * time.Second
	quietTrickle      = 1 << 20 // bytes allocated per second that still count as quiet
	releaseAtLeast    = 2 << 20 // bytes worth a full collection
)

// releaseReading is what one look at the runtime gives the releaser.
type releaseReading struct {
	allocs      uint64 // bytes allocated since the process started
	live        uint64 // the live heap at the last collection
	reclaimable uint64 // heap objects beyond live (garbage) plus free pages still mapped
}

func readRelease() releaseReading {
	s := []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return s[i].Value.Uint64()
		}
		return 0
	}
	live, objects := v(1), v(2)
	return releaseReading{allocs: v(0), live: live, reclaimable: objects - min(objects, live) + v(3)}
}

// observe takes one reading at now (taken every tick, a second apart) and reports whether the
// process has been quiet for quietFor with enough to give back; it then calls release.
func (q *quietRelease) observe(now time.Time, tick time.Duration, r releaseReading) bool {
	allocated := r.allocs - min(r.allocs, q.lastAllocs)
	first := !q.started
	q.started, q.lastAllocs = true, r.allocs
	trickle := max(uint64(quietTrickle), r.live/64) * uint64(max(tick/time.Second, 1))
	if first || allocated > trickle {
		q.quietSince = now
		return false
	}
	if now.Sub(q.quietSince) < q.quietFor || r.reclaimable < max(uint64(releaseAtLeast), r.live/4) {
		return false
	}
	q.release()
	q.quietSince = now
	return true
}

// quietReleases is the process's one releaser, shared by its servers (the demo runs two in one
// process): one look per second, one release per burst, whoever asked.
var quietReleases struct {
	mu       sync.Mutex
	counters map[*stats.Counter]int // each holder's server.memory_quiet_releases, by holds
	users    int
	stop     context.CancelFunc
	done     chan struct{}
}

// holdQuietRelease starts the process's releaser if this is its first user and returns the
// function that lets go of it; the last to let go stops it and waits for it to end. Each release
// counts in every holder's releases counter (server.memory_quiet_releases; nil: none). With the
// collector off (GOGC=off) there is no releaser: whoever turned it off does not want collections
// the process did not ask for.
func holdQuietRelease(releases *stats.Counter) (letGo func()) {
	if os.Getenv("GOGC") == "off" {
		return func() {}
	}
	r := &quietReleases
	r.mu.Lock()
	defer r.mu.Unlock()
	if releases != nil {
		if r.counters == nil {
			r.counters = map[*stats.Counter]int{}
		}
		r.counters[releases]++
	}
	r.users++
	if r.users == 1 {
		ctx, stop := context.WithCancel(context.Background())
		r.stop, r.done = stop, make(chan struct{})
		q := &quietRelease{quietFor: quietReleaseAfter, release: releaseCounted}
		go q.run(ctx, time.Second, r.done)
	}
	return sync.OnceFunc(func() {
		r.mu.Lock()
		if releases != nil {
			if r.counters[releases]--; r.counters[releases] == 0 {
				delete(r.counters, releases)
			}
		}
		r.users--
		last := r.users == 0
		stop, done := r.stop, r.done
		r.mu.Unlock()
		if last { // outside the lock, which a release in progress takes to count itself
			stop()
			<-done
		}
	})
}

// releaseCounted is the process releaser's release: debug.FreeOSMemory, counted by every holder.
func releaseCounted() {
	debug.FreeOSMemory()
	r := &quietReleases
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.counters {
		c.Inc()
	}
}

// run looks every tick until ctx ends, then closes done.
func (q *quietRelease) run(ctx context.Context, tick time.Duration, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			q.observe(now, tick, readRelease())
		}
	}
}
