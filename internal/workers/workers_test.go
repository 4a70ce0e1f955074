package workers

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// waitIdle waits until n goroutines wait for work.
func waitIdle(t *testing.T, n int) {
	t.Helper()
	waitIdleCount(t, fmt.Sprint(n), func(idle int) bool { return idle == n })
}

// waitIdleCount waits until the number of goroutines waiting for work satisfies ok.
func waitIdleCount(t *testing.T, want string, ok func(idle int) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok(Idle()) {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle goroutines, want %s", Idle(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// drain ends every idle goroutine, so each test starts from none, and waits until they are gone
// (a test that counts goroutines would see them leave).
func drain(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	mu.Lock()
	n := len(idle)
	for _, w := range idle {
		w.next <- nil
	}
	idle = nil
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before-n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after ending %d idle ones of %d", runtime.NumGoroutine(), n, before)
		}
		time.Sleep(time.Millisecond)
	}
}

// A second function runs on the goroutine the first one left: no goroutine is added.
func TestGoReusesGoroutine(t *testing.T) {
	drain(t)
	defer drain(t)
	done := make(chan struct{})
	Go(func() { done <- struct{}{} })
	<-done
	waitIdle(t, 1)
	before := runtime.NumGoroutine()
	release := make(chan struct{})
	Go(func() { done <- struct{}{}; <-release })
	<-done
	if Idle() != 0 {
		t.Fatalf("%d idle goroutines while the only one runs a function", Idle())
	}
	if got := runtime.NumGoroutine(); got != before {
		t.Fatalf("goroutines: %d, %d before: the idle one was not used", got, before)
	}
	close(release)
	waitIdle(t, 1)
}

// Functions run concurrently, like go statements; after a burst at most maxIdle goroutines stay.
func TestGoBoundsIdle(t *testing.T) {
	drain(t)
	defer drain(t)
	base := runtime.NumGoroutine()
	var started, wg sync.WaitGroup
	release := make(chan struct{})
	const n = maxIdle + 50
	started.Add(n)
	wg.Add(n)
	for range n {
		Go(func() { started.Done(); <-release; wg.Done() })
	}
	started.Wait() // all n run at once: none waited for another
	close(release)
	wg.Wait()
	waitIdle(t, maxIdle)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base+maxIdle {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d, want at most %d", runtime.NumGoroutine(), base+maxIdle)
		}
		time.Sleep(time.Millisecond)
	}
}

// A goroutine idle past maxWait ends when another goes idle (or by the trim timer).
func TestIdleGoroutinesExpire(t *testing.T) {
	drain(t)
	defer drain(t)
	defer func(d time.Duration) { maxWait = d }(maxWait)
	maxWait = 20 * time.Millisecond
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	Go(func() { <-release; wg.Done() })
	Go(func() { <-release; wg.Done() })
	close(release)
	wg.Wait()
	waitIdle(t, 2)
	time.Sleep(50 * time.Millisecond)
	done := make(chan struct{})
	Go(func() { close(done) }) // takes the newest, and ends the oldest when it parks again
	<-done
	// (The trim timer may end the newest too, maxWait after it parked.)
	waitIdleCount(t, "at most 1: the one idle past maxWait ends", func(idle int) bool { return idle <= 1 })
}

// Goroutines idle past maxWait end even when no other goroutine goes idle (a process quiet after a
// burst), and the pool fills again when work comes back.
func TestIdleGoroutinesExpireWithoutWork(t *testing.T) {
	drain(t)
	defer drain(t)
	defer func(d time.Duration) { maxWait = d }(maxWait)
	maxWait = 20 * time.Millisecond
	burst := func() {
		release := make(chan struct{})
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			Go(func() { <-release; wg.Done() })
		}
		close(release)
		wg.Wait()
	}
	burst()
	waitIdle(t, 0)
	burst()
	waitIdle(t, 0)
}
