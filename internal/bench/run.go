// Package bench is switchyard-bench: a WebSocket load generator that measures a proxy the way the
// peers nginx, HAProxy and Caddy were measured (perf-anchors.md): operations counted only inside a
// timed window after a warm-up, latency percentiles, and the proxy's own CPU per operation and
// resident memory per idle tunnel read from /proc. It speaks WebSocket over HTTP/1.1 Upgrade and
// over HTTP/2 extended CONNECT (RFC 8441) with its own framing, so the client allocates nothing
// per message, and it has an echo server to measure against.
package bench

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Workloads, as the load issue defines them.
const (
	WorkloadEcho       = "echo"       // N sockets, closed-loop round trips
	WorkloadBulk       = "bulk"       // a sender and a receiver per socket, as fast as possible
	WorkloadHandshakes = "handshakes" // connect, upgrade, one echo, close, in a loop
	WorkloadIdle       = "idle"       // open N sockets, one echo each, sample RSS
)

// dialParallel is how many sockets are opened at once while setting up a run.
const dialParallel = 64

// stallAfter is how long an echo may stay unanswered at the end of a run before it counts as an
// error rather than as an operation the end of the run interrupted.
const stallAfter = time.Second

// Config is one run; the command's flags fill it in.
type Config struct {
	URL      string        // ws://host:port/path or wss://
	Target   string        // label for the result line; the URL when empty
	Proto    string        // "h1" (Upgrade) or "h2" (extended CONNECT; h2c for ws://, ALPN h2 for wss://)
	Workload string        // echo, bulk, handshakes or idle
	Conns    int           // sockets (echo, bulk, idle) or concurrent workers (handshakes)
	Size     int           // message payload bytes
	Duration time.Duration // the measured window
	Ops      int64         // when > 0, the window ends after this many operations instead
	Warmup   time.Duration // load before the window opens
	Rate     float64       // operations per second over all sockets; 0 is closed loop
	PIDs     []int         // the processes charged with CPU and RSS, each with its descendants; none when empty
	Insecure bool          // skip TLS certificate checks
	Settle   time.Duration // idle: the wait between the last socket opening and the RSS sample
}

// Result is the one JSON line a run prints. Latencies are per round trip for echo and from
// connect to upgraded for handshakes and idle, and 0 for bulk. The throughput counts echoed
// payload once. CPU and RSS cover every process in target_pids: the PIDs given and their
// descendants, as found at the end of the window (target_pid is the first PID given, as when only
// one could be). CPU and RSS fields are 0 without a PID. For idle, duration and ops/s cover opening
// the sockets, CPU per op is the target's CPU from before the first to the RSS sample per socket,
// and target_cpu_cores is 0. client_cpu_cores is this process (the load generator) in the window, and host_cpu_busy the share
// of the whole machine's CPU time that was busy in the window (/proc/stat; steal counts as busy):
// near 1, the machine itself is the limit, whatever the target does.
type Result struct {
	Workload            string  `json:"workload"`
	Target              string  `json:"target"`
	Proto               string  `json:"proto"`
	Conns               int     `json:"conns"`
	MsgBytes            int     `json:"msg_bytes"`
	DurationS           float64 `json:"duration_s"`
	Ops                 int64   `json:"ops"`
	OpsPerS             float64 `json:"ops_per_s"`
	P50US               float64 `json:"p50_us"`
	P99US               float64 `json:"p99_us"`
	P999US              float64 `json:"p999_us"`
	ThroughputMiBS      float64 `json:"throughput_mib_s"`
	TargetPID           int     `json:"target_pid"`
	TargetPIDs          []int   `json:"target_pids"`
	CPUUSPerOp          float64 `json:"cpu_us_per_op"`
	CPUKernelUSPerOp    float64 `json:"cpu_kernel_us_per_op"` // the part of cpu_us_per_op spent in the kernel (stime)
	TargetCPUCores      float64 `json:"target_cpu_cores"`
	ClientCPUCores      float64 `json:"client_cpu_cores"`
	HostCPUBusy         float64 `json:"host_cpu_busy"`
	RSSKiBBefore        int64   `json:"rss_kib_before"`
	RSSKiBAfter         int64   `json:"rss_kib_after"`
	RSSPerIdleTunnelKiB float64 `json:"rss_per_idle_tunnel_kib"`
	Errors              int64   `json:"errors"`
	FirstError          string  `json:"first_error,omitempty"`
}

func (cfg *Config) check() error {
	switch {
	case cfg.Proto != "h1" && cfg.Proto != "h2":
		return fmt.Errorf("proto %q: want h1 or h2", cfg.Proto)
	case cfg.Workload != WorkloadEcho && cfg.Workload != WorkloadBulk && cfg.Workload != WorkloadHandshakes && cfg.Workload != WorkloadIdle:
		return fmt.Errorf("workload %q: want echo, bulk, handshakes or idle", cfg.Workload)
	case cfg.Conns < 1:
		return errors.New("conns must be at least 1")
	case cfg.Size < 0 || cfg.Size > maxEchoFrame:
		return fmt.Errorf("size must be 0..%d", maxEchoFrame)
	case cfg.Duration <= 0 && cfg.Ops <= 0 && cfg.Workload != WorkloadIdle:
		return errors.New("give a duration or a number of ops")
	case cfg.Rate < 0:
		return errors.New("rate must not be negative")
	case slices.ContainsFunc(cfg.PIDs, func(p int) bool { return p <= 0 }):
		return fmt.Errorf("pids %v: want positive process IDs", cfg.PIDs)
	}
	return nil
}

// Run performs one run and returns its result; it fails only when the run cannot start (bad
// config, first socket refused, unreadable /proc). Errors during the run are counted.
func Run(cfg Config) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	t, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, d: newDialer(t, cfg.Proto == "h2", cfg.Insecure, cfg.Size), base: time.Now(),
		msg: make([]byte, cfg.Size), opsDone: make(chan struct{})}
	for i := range r.msg {
		r.msg[i] = byte('a' + i%26)
	}
	r.t0.Store(math.MaxInt64)
	r.t1.Store(math.MaxInt64)
	if _, err := sampleTree(cfg.PIDs); err != nil {
		return nil, err
	}
	// One socket first, so a wrong URL or a target without upgrades is a plain error.
	first, err := r.d.dial()
	if err != nil {
		return nil, fmt.Errorf("first connection: %w", err)
	}
	if err := first.echo(r.msg); err != nil {
		first.s.Close()
		return nil, fmt.Errorf("first echo: %w", err)
	}
	_ = first.s.SetDeadline(time.Time{})
	if cfg.Workload == WorkloadIdle {
		return r.idle(first)
	}
	return r.load(first)
}

// runner is one run's shared state.
type runner struct {
	cfg  Config
	d    *dialer
	msg  []byte
	base time.Time

	t0, t1 atomic.Int64 // the window, in ns since base; MaxInt64 until set
	stop   atomic.Bool
	ops    atomic.Int64
	errs   atomic.Int64

	opsDone  chan struct{} // closed when Ops operations were counted
	doneOnce sync.Once

	mu       sync.Mutex
	firstErr error
	conns    []*wsConn // the persistent sockets, closed at the end
	hists    []*histogram
}

func (r *runner) now() int64 { return int64(time.Since(r.base)) }

// count records an operation that started at start and ended at end, if both lie in the window.
func (r *runner) count(start, end int64, h *histogram, latency int64) {
	if start < r.t0.Load() || end > r.t1.Load() {
		return
	}
	n := r.ops.Add(1)
	if r.cfg.Ops > 0 && n > r.cfg.Ops {
		r.ops.Add(-1) // the window closed with the Ops-th operation
		return
	}
	if h != nil {
		h.record(latency)
	}
	if n == r.cfg.Ops {
		r.t1.Store(end)
		r.doneOnce.Do(func() { close(r.opsDone) })
	}
}

// fail counts an error that happened before the run was stopping: after that, errors on the
// persistent sockets are the ones shutdown causes by closing them.
func (r *runner) fail(err error) {
	if r.stop.Load() {
		return
	}
	r.countErr(err)
}

// countErr counts an error whenever it happened.
func (r *runner) countErr(err error) {
	r.errs.Add(1)
	r.mu.Lock()
	if r.firstErr == nil {
		r.firstErr = err
	}
	r.mu.Unlock()
}

func (r *runner) newHist() *histogram {
	h := new(histogram)
	r.mu.Lock()
	r.hists = append(r.hists, h)
	r.mu.Unlock()
	return h
}

// dialAll opens n sockets, dialParallel at a time, with one echo each (so each tunnel has carried
// data), calling got for each; failures are counted.
func (r *runner) dialAll(n int, got func(c *wsConn, latency int64, h *histogram)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, dialParallel) {
		h := r.newHist()
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				start := r.now()
				c, err := r.d.dial()
				up := r.now()
				if err == nil {
					if err = c.echo(r.msg); err != nil {
						c.s.Close()
					}
				}
				if err != nil {
					r.fail(err)
					continue
				}
				_ = c.s.SetDeadline(time.Time{})
				got(c, up-start, h)
			}
		})
	}
	wg.Wait()
}

// load runs echo, bulk or handshakes: sockets, warm-up, the window, then everything closed.
func (r *runner) load(first *wsConn) (*Result, error) {
	var wg sync.WaitGroup
	switch r.cfg.Workload {
	case WorkloadEcho, WorkloadBulk:
		r.conns = append(r.conns, first)
		if n := r.cfg.Conns - 1; n > 0 {
			r.dialAll(n, func(c *wsConn, _ int64, _ *histogram) {
				r.mu.Lock()
				r.conns = append(r.conns, c)
				r.mu.Unlock()
			})
		}
		for i, c := range r.conns {
			if r.cfg.Workload == WorkloadBulk {
				wg.Go(func() { r.bulkSender(c) })
				wg.Go(func() { r.bulkReceiver(c) })
			} else {
				h := r.newHist()
				p := r.pacer(i)
				wg.Go(func() { r.echoWorker(c, h, p) })
			}
		}
	case WorkloadHandshakes:
		first.s.Close()
		for i := range r.cfg.Conns {
			h := r.newHist()
			p := r.pacer(i)
			wg.Go(func() { r.handshakeWorker(h, p) })
		}
	}

	time.Sleep(r.cfg.Warmup)
	before, err := r.sample()
	if err != nil {
		r.shutdown(&wg)
		return nil, err
	}
	clientBefore := selfCPU()
	hostBusy0, hostTotal0 := hostTicks()
	start := r.now()
	r.t0.Store(start)
	if r.cfg.Ops > 0 {
		dead := make(chan struct{}) // every worker gave up: the count cannot grow
		go func() { wg.Wait(); close(dead) }()
		select {
		case <-r.opsDone:
		case <-dead:
		}
	} else {
		time.Sleep(r.cfg.Duration)
	}
	end := r.now()
	if r.cfg.Ops > 0 && r.ops.Load() == r.cfg.Ops {
		end = r.t1.Load() // the end of the Ops-th operation
	}
	r.t1.Store(end)
	clientCPU := selfCPU() - clientBefore
	hostBusy1, hostTotal1 := hostTicks()
	after, err := r.sample()
	r.shutdown(&wg)
	if err != nil {
		return nil, err
	}
	res := r.result(time.Duration(end-start), before, after)
	res.ClientCPUCores = round(clientCPU.Seconds()/time.Duration(end-start).Seconds(), 3)
	res.HostCPUBusy = hostBusy(hostBusy0, hostTotal0, hostBusy1, hostTotal1)
	return res, nil
}

// shutdown stops the workers and closes every persistent socket, which unblocks them.
func (r *runner) shutdown(wg *sync.WaitGroup) {
	r.stop.Store(true)
	r.mu.Lock()
	for _, c := range r.conns {
		c.s.Close()
	}
	r.mu.Unlock()
	wg.Wait()
}

// sample reads the charged processes, discovering their descendants anew each time, so workers a
// target respawned during the window are found.
func (r *runner) sample() (snapshot, error) {
	return sampleTree(r.cfg.PIDs)
}

// pacer spaces one worker's operations for -rate; nil means closed loop.
type pacer struct {
	interval time.Duration
	next     int64 // ns since base
}

func (r *runner) pacer(i int) *pacer {
	if r.cfg.Rate <= 0 {
		return nil
	}
	iv := time.Duration(float64(r.cfg.Conns) / r.cfg.Rate * float64(time.Second))
	// Stagger the workers' phases across one interval.
	return &pacer{interval: iv, next: r.now() + int64(iv)*int64(i)/int64(r.cfg.Conns)}
}

// start waits for the operation's slot and returns its intended start, so latency includes any
// time spent behind schedule (no coordinated omission).
func (r *runner) start(p *pacer) int64 {
	if p == nil {
		return r.now()
	}
	s := p.next
	p.next += int64(p.interval)
	if d := s - r.now(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	return s
}

func (r *runner) echoWorker(c *wsConn, h *histogram, p *pacer) {
	for !r.stop.Load() {
		s := r.start(p)
		if err := c.echo(r.msg); err != nil {
			if r.stop.Load() && r.now()-s > int64(stallAfter) {
				// Shutdown closed a socket whose echo had long been due: a stall, not an
				// artefact of closing.
				r.countErr(fmt.Errorf("no echo for %v (%w)", stallAfter, err))
				return
			}
			r.fail(err)
			return
		}
		e := r.now()
		r.count(s, e, h, e-s)
	}
}

func (r *runner) bulkSender(c *wsConn) {
	for !r.stop.Load() {
		if err := c.writeMessage(opBinary, r.msg, false); err != nil {
			r.fail(err)
			return
		}
	}
}

// bulkReceiver counts the messages that arrive back inside the window.
func (r *runner) bulkReceiver(c *wsConn) {
	for {
		if _, err := c.readMessage(r.msg); err != nil {
			r.fail(err)
			return
		}
		e := r.now()
		r.count(e, e, nil, 0)
	}
}

// handshakeWorker loops connect, upgrade, one echo, close; latency is connect to upgraded. Its
// sockets are its own, bounded by handshakeTimeout, so every failure counts, even one that ends
// after the window: that is a cycle the target left hanging.
func (r *runner) handshakeWorker(h *histogram, p *pacer) {
	for !r.stop.Load() {
		s := r.start(p)
		c, err := r.d.dial()
		up := r.now()
		if err == nil {
			if err = c.echo(r.msg); err == nil {
				err = c.close()
			} else {
				c.s.Close()
			}
		}
		if err != nil {
			r.countErr(err)
			time.Sleep(10 * time.Millisecond) // do not spin against a target that refuses
			continue
		}
		r.count(s, r.now(), h, up-s)
	}
}

// idle opens Conns sockets, waits Settle, and charges the target's RSS growth to them.
func (r *runner) idle(first *wsConn) (*Result, error) {
	first.s.Close()
	before, err := r.sample()
	if err != nil {
		return nil, err
	}
	r.t0.Store(r.now())
	start := r.now()
	r.dialAll(r.cfg.Conns, func(c *wsConn, latency int64, h *histogram) {
		h.record(latency)
		r.ops.Add(1)
		r.mu.Lock()
		r.conns = append(r.conns, c)
		r.mu.Unlock()
	})
	opened := time.Duration(r.now() - start)
	time.Sleep(r.cfg.Settle)
	after, err := r.sample()
	var wg sync.WaitGroup
	r.shutdown(&wg)
	if err != nil {
		return nil, err
	}
	res := r.result(opened, before, after)
	if res.Ops > 0 && len(r.cfg.PIDs) > 0 {
		res.RSSPerIdleTunnelKiB = round(float64(after.rssKiB-before.rssKiB)/float64(res.Ops), 2)
	}
	res.ThroughputMiBS = 0
	res.TargetCPUCores = 0 // the CPU is spread over opening and settling; per op is what counts
	return res, nil
}

func (r *runner) result(window time.Duration, before, after snapshot) *Result {
	ops := r.ops.Load()
	secs := window.Seconds()
	target := r.cfg.Target
	if target == "" {
		target = r.cfg.URL
	}
	res := &Result{
		Workload: r.cfg.Workload, Target: target, Proto: r.cfg.Proto, Conns: r.cfg.Conns, MsgBytes: r.cfg.Size,
		DurationS: round(secs, 3), Ops: ops, Errors: r.errs.Load(), TargetPIDs: after.pids(),
		RSSKiBBefore: before.rssKiB, RSSKiBAfter: after.rssKiB,
	}
	if secs > 0 {
		res.OpsPerS = round(float64(ops)/secs, 1)
		res.ThroughputMiBS = round(float64(ops)*float64(r.cfg.Size)/secs/(1<<20), 2)
	}
	var h histogram
	for _, w := range r.hists {
		h.merge(w)
	}
	res.P50US = round(h.quantile(0.5)/1e3, 1)
	res.P99US = round(h.quantile(0.99)/1e3, 1)
	res.P999US = round(h.quantile(0.999)/1e3, 1)
	if len(r.cfg.PIDs) > 0 {
		res.TargetPID = r.cfg.PIDs[0]
		cpu := cpuSince(before, after)
		if secs > 0 {
			res.TargetCPUCores = round(cpu.total.Seconds()/secs, 3)
		}
		if ops > 0 {
			res.CPUUSPerOp = round(float64(cpu.total.Microseconds())/float64(ops), 2)
			res.CPUKernelUSPerOp = round(float64(cpu.kernel.Microseconds())/float64(ops), 2)
		}
	}
	r.mu.Lock()
	if r.firstErr != nil {
		res.FirstError = r.firstErr.Error()
	}
	r.mu.Unlock()
	return res
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}
