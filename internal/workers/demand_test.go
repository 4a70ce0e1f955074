package workers

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every Ask is answered by a run that begins after it (nothing asked for is missed), runs never
// overlap, and a quiet Demand holds no goroutine.
func TestDemandRunsAfterEveryAsk(t *testing.T) {
	defer drain(t)
	var d Demand
	var inRun, overlap atomic.Int32
	var asked, seen atomic.Int64 // the last Ask's number, and the last number a run began after
	d.Init(func() bool {
		if inRun.Add(1) > 1 {
			overlap.Add(1)
		}
		seen.Store(asked.Load())
		time.Sleep(10 * time.Microsecond)
		inRun.Add(-1)
		return false
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				asked.Store(int64(g*1000 + i + 1))
				d.Ask()
			}
		}()
	}
	wg.Wait()
	last := asked.Load()
	deadline := time.Now().Add(5 * time.Second)
	for seen.Load() != last && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if seen.Load() != last {
		t.Fatalf("the last Ask (%d) was not followed by a run (the last run saw %d)", last, seen.Load())
	}
	if overlap.Load() != 0 {
		t.Fatalf("runs overlapped %d times", overlap.Load())
	}
	if d.Stop() {
		t.Fatal("Stop reported done, but no run did")
	}
}

// A run that reports done ends the Demand: later Asks start nothing, and Stop says so.
func TestDemandDone(t *testing.T) {
	defer drain(t)
	var d Demand
	var runs atomic.Int32
	d.Init(func() bool { runs.Add(1); return true })
	d.Ask()
	if !d.Stop() {
		t.Fatal("Stop did not report the run's done")
	}
	d.Ask()
	time.Sleep(10 * time.Millisecond)
	if n := runs.Load(); n != 1 {
		t.Fatalf("%d runs, want 1: an Ask after done ran again", n)
	}
}

// Stop waits for the run under way, and no run starts after it.
func TestDemandStopWaits(t *testing.T) {
	defer drain(t)
	var d Demand
	started, release := make(chan struct{}), make(chan struct{})
	var runs atomic.Int32
	d.Init(func() bool {
		if runs.Add(1) == 1 {
			close(started)
			<-release
		}
		return false
	})
	d.Ask()
	<-started
	d.Ask() // asks for a second run, which Stop must prevent
	stopped := make(chan struct{})
	go func() { d.Stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned while a run was under way")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-stopped
	time.Sleep(10 * time.Millisecond)
	if n := runs.Load(); n != 1 {
		t.Fatalf("%d runs, want 1: a run started after Stop", n)
	}
}
