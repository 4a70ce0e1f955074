package server

import (
	"context"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/switchyard-proxy/switchyard/internal/rtmetrics"
	"github.com/switchyard-proxy/switchyard/internal/stats"
)

// quietRelease gives memory back to the system once the process has gone quiet after a burst.
// Go's runtime keeps the pages of a burst (thousands of WebSocket handshakes, each leaving its
// garbage) up to the collector's goal, about twice the live heap, and a process that then only
// holds idle tunnels allocates almost nothing, so no collection comes to free the garbage and the
// background scavenger returns nothing below that goal: the RSS stays at the burst's peak for as
// long as the tunnels live. Envoy's allocator, tcmalloc, frees at once and returns free pages in
// the background. So every second the releaser looks at what the process allocated and at the
// heap's mapped pages (objects, garbage included, free pages and fragments: what the heap holds
// of the RSS). When the allocations have stayed under a trickle (1 MiB a second, or 1/64 of the
// heap) for quietFor, and the heap has grown since the last release (from the least it held
// since) by at least a quarter and 2 MiB, it calls debug.FreeOSMemory once: a full collection,
// then every free page back to the system. Growth, not the live heap the last collection saw: a
// collection during the burst may have seen the burst's data live, and until the next one that
// figure says nothing of what is garbage now. A busy process never pays for it (the collector
// runs there anyway and keeps its pages for the next allocations); a quiet one pays once per
// burst: the release brings the heap back to what is live, the new floor to grow from.
type quietRelease struct {
	quietFor time.Duration
	release  func() // debug.FreeOSMemory; a test's counter

	quietSince time.Time
	lastAllocs uint64
	floor      uint64 // the least the heap has held since the last release (or the first look)
	rebase     bool   // a release just ran: the next look sets the floor
	started    bool
}

const (
	quietReleaseAfter = 5 * time.Second
	quietTrickle      = 1 << 20 // bytes allocated per second that still count as quiet
	releaseAtLeast    = 2 << 20 // growth worth a full collection
)

// releaseReading is what one look at the runtime gives the releaser.
type releaseReading struct {
	allocs uint64 // bytes allocated since the process started
	heap   uint64 // the heap's mapped pages: objects (live or garbage), free pages, fragments
}

func readRelease() releaseReading {
	v := rtmetrics.Bytes("/gc/heap/allocs:bytes", "/memory/classes/heap/objects:bytes",
		"/memory/classes/heap/free:bytes", "/memory/classes/heap/unused:bytes")
	return releaseReading{allocs: v[0], heap: v[1] + v[2] + v[3]}
}

// observe takes one reading at now (taken every tick) and reports whether the process has been
// quiet for quietFor after the heap grew enough; it then calls release.
func (q *quietRelease) observe(now time.Time, tick time.Duration, r releaseReading) bool {
	allocated := r.allocs - min(r.allocs, q.lastAllocs)
	first := !q.started
	q.started, q.lastAllocs = true, r.allocs
	if first || q.rebase {
		q.floor, q.rebase = r.heap, false
	}
	q.floor = min(q.floor, r.heap)
	trickle := max(uint64(quietTrickle), r.heap/64) * uint64(max(tick/time.Second, 1))
	if first || allocated > trickle {
		q.quietSince = now
		return false
	}
	grown := r.heap - q.floor
	if now.Sub(q.quietSince) < q.quietFor || grown < max(uint64(releaseAtLeast), q.floor/4) {
		return false
	}
	q.release()
	q.quietSince, q.rebase = now, true
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
