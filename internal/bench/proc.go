package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ParsePIDs reads the -pid flag: a comma-separated list of process IDs, each charged together
// with all its descendants, so a target that is several processes (nginx's master and workers,
// a front proxy and its sidecar) is measured whole. "" and "0" mean no process, as -pid 0 did when
// the flag took one PID. Duplicates are dropped; the order is kept, so the first PID stays first.
func ParsePIDs(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return nil, nil
	}
	var pids []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("pid %q: want a positive process ID", f)
		}
		if !slices.Contains(pids, n) {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// procSample is what /proc says about one process at one instant.
type procSample struct {
	cpu    cpuUse // utime + stime, all threads
	rssKiB int64  // VmRSS; 0 for a zombie, which has no memory left
}

// cpuUse is CPU time with its kernel part: where a proxy's time goes (its own code or the
// system calls it makes) says more about what could make it cheaper than the total alone.
type cpuUse struct {
	total  time.Duration // utime + stime
	kernel time.Duration // stime
}

func (c cpuUse) minus(d cpuUse) cpuUse {
	return cpuUse{total: c.total - d.total, kernel: c.kernel - d.kernel}
}

// procKey names a process across two samples: the kernel may hand an exited process's PID to a
// new one within the window, and the start time tells them apart.
type procKey struct {
	pid   int
	start int64 // starttime, clock ticks after boot
}

// snapshot is the charged processes (the listed ones and all their descendants) at one instant.
type snapshot struct {
	procs  map[procKey]procSample
	rssKiB int64 // the sum of VmRSS over procs
}

// pids lists the processes in the snapshot, in ascending order.
func (s snapshot) pids() []int {
	pids := make([]int, 0, len(s.procs))
	for k := range s.procs {
		pids = append(pids, k.pid)
	}
	slices.Sort(pids)
	return pids
}

// cpuSince is the CPU the charged processes used between two snapshots, summed over the union of
// the processes in either. A process in both is charged its difference. A process only in after
// started during the window (a respawned worker), so all its CPU is charged. A process only in
// before exited during the window; its CPU after before was taken is unknown (it went into its
// parent's cutime, mixed with its earlier CPU), so it is charged nothing: the figure can only be
// low, by what exited workers used in the window. A process born and gone within the window is not
// seen at all.
func cpuSince(before, after snapshot) cpuUse {
	var d cpuUse
	for k, a := range after.procs {
		u := a.cpu.minus(before.procs[k].cpu) // the zero cpuUse when k is not in before
		d.total += u.total
		d.kernel += u.kernel
	}
	return d
}

// sampleTree reads the processes roots and all their descendants (children, grandchildren...),
// found by scanning every /proc/PID/stat for its parent PID, which needs no kernel option, unlike
// /proc/PID/task/TID/children. A root that does not exist is an error; a descendant that exits
// while the scan reads it is left out. RSS is VmRSS summed over the processes, so memory they share
// (libraries, pages a worker still shares with its master) counts once per process; differences
// between two snapshots, as the idle workload takes, are not affected by what stays shared.
func sampleTree(roots []int) (snapshot, error) {
	s := snapshot{procs: make(map[procKey]procSample)}
	if len(roots) == 0 {
		return s, nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return snapshot{}, err
	}
	stats := make(map[int]statFields, len(ents))
	children := make(map[int][]int)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue // exited since ReadDir
		}
		stats[pid] = st
		children[st.ppid] = append(children[st.ppid], pid)
	}
	queue := make([]int, 0, len(roots))
	for _, pid := range roots {
		if _, ok := stats[pid]; !ok {
			// Not listed: gone, or a thread ID, which /proc resolves but does not list.
			st, err := readStat(pid)
			if err != nil {
				return snapshot{}, fmt.Errorf("process %d: %w", pid, err)
			}
			stats[pid] = st
		}
		queue = append(queue, pid)
	}
	seen := make(map[int]bool)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue // listed twice, or a listed process is a descendant of another
		}
		seen[pid] = true
		queue = append(queue, children[pid]...)
		st := stats[pid]
		rss, _ := readRSS(pid) // 0 if it exited or is a zombie: it holds no memory
		perTick := time.Second / time.Duration(clockTick())
		s.procs[procKey{pid, st.start}] = procSample{
			cpu:    cpuUse{total: time.Duration(st.ticks) * perTick, kernel: time.Duration(st.sysTicks) * perTick},
			rssKiB: rss,
		}
		s.rssKiB += rss
	}
	return s, nil
}

// clockTick is sysconf(_SC_CLK_TCK) as `getconf CLK_TCK` prints it, 100 when that fails (the value
// on every Linux architecture Go supports).
var clockTick = sync.OnceValue(func() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 100
})

// selfCPU is this process's user plus system time, to show how much of the machine the load
// generator itself takes.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hostTicks is the whole machine's CPU time from /proc/stat, in clock ticks: busy (user, nice,
// system, irq, softirq, steal) and the total with idle and iowait. Zero where it cannot be read.
func hostTicks() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	busy, total, _ = parseHostTicks(b)
	return busy, total
}

// parseHostTicks reads the first line of /proc/stat ("cpu  user nice system idle iowait irq
// softirq steal ..."); guest time is already inside user and nice.
func parseHostTicks(stat []byte) (busy, total uint64, err error) {
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("bench: unexpected /proc/stat line %q", line)
	}
	var v [8]uint64
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("bench: /proc/stat field %d: %w", i+1, err)
		}
		total += v[i]
	}
	return total - v[3] - v[4], total, nil
}

// hostBusy is the share of the machine's CPU time that was busy between two hostTicks readings,
// rounded to a thousandth; 0 when unknown.
func hostBusy(busy0, total0, busy1, total1 uint64) float64 {
	if total1 <= total0 || busy1 < busy0 {
		return 0
	}
	return round(float64(busy1-busy0)/float64(total1-total0), 3)
}

func readStat(pid int) (statFields, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return statFields{}, err
	}
	return parseStat(b)
}

func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseStatusRSS(b)
}

// statFields is what the charging needs from /proc/PID/stat.
type statFields struct {
	ppid     int   // field 4
	ticks    int64 // utime + stime, fields 14 and 15, in clock ticks
	sysTicks int64 // stime, field 15
	start    int64 // starttime, field 22, in clock ticks after boot
}

// parseStat reads proc(5)'s /proc/PID/stat. The command name, field 2, may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStat(stat []byte) (statFields, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return statFields{}, errors.New("/proc stat: no command name")
	}
	f := strings.Fields(string(stat[i+1:])) // f[0] is field 3, the state
	if len(f) < 20 {
		return statFields{}, errors.New("/proc stat: too few fields")
	}
	ppid, err1 := strconv.Atoi(f[1])
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	start, err4 := strconv.ParseInt(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return statFields{}, fmt.Errorf("/proc stat: %w", err)
	}
	return statFields{ppid: ppid, ticks: utime + stime, sysTicks: stime, start: start}, nil
}

// parseStatusRSS returns VmRSS in KiB.
func parseStatusRSS(status []byte) (int64, error) {
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, errors.New("/proc status: no VmRSS")
}
