package workers

import "sync"

// Demand runs a function on kept goroutines whenever something asks for it, one run at a time,
// so that a side with nothing to do (a pump whose source is empty) holds no goroutine while it
// waits: Ask starts a run unless one is under way, and an Ask that comes during a run makes the
// run go again once it returns, so nothing asked for is missed. A run that reports done ends the
// Demand; so does Stop. Ask never blocks, so it can be called under a lock (a codec's read hook).
type Demand struct {
	mu      sync.Mutex
	ended   sync.Cond // signalled when a run returns; L is &mu
	f       func() (done bool)
	running bool // a run is under way
	again   bool // Ask was called since the run under way began
	done    bool // a run reported done
	stopped bool
}

// Init sets the function to run. Call it once, before the first Ask.
func (d *Demand) Init(f func() (done bool)) {
	d.f = f
	d.ended.L = &d.mu
}

// Ask has f run: now on a kept goroutine, or again after the run under way.
func (d *Demand) Ask() {
	d.mu.Lock()
	d.again = true
	start := !d.running && !d.done && !d.stopped
	if start {
		d.running = true
	}
	d.mu.Unlock()
	if start {
		Go(d.loop)
	}
}

func (d *Demand) loop() {
	for {
		d.mu.Lock()
		d.again = false
		d.mu.Unlock()
		done := d.f()
		d.mu.Lock()
		if done {
			d.done = true
		}
		if d.again && !d.done && !d.stopped {
			d.mu.Unlock()
			continue
		}
		d.running = false
		d.ended.Broadcast()
		d.mu.Unlock()
		return
	}
}

// Stop ends the Demand: later Asks do nothing, and Stop waits for a run under way to return. It
// reports whether a run reported done.
func (d *Demand) Stop() (done bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	for d.running {
		d.ended.Wait()
	}
	return d.done
}
