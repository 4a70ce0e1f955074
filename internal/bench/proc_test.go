package bench

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParsePIDs(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"", nil, false},
		{"0", nil, false},
		{"123", []int{123}, false},
		{"123,456", []int{123, 456}, false},
		{" 456 , 123 ", []int{456, 123}, false},
		{"123,456,123", []int{123, 456}, false},
		{"123,", nil, true},
		{"123,0", nil, true},
		{"-5", nil, true},
		{"12a", nil, true},
		{"123;456", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePIDs(tt.in)
			if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
				t.Errorf("ParsePIDs(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestCPUSince: a process seen at both ends is charged its difference, one seen only at the end
// (a respawned worker) all of its CPU, one seen only at the start nothing, and a reused PID is a
// new process. The kernel part (here a quarter of each process's CPU) is charged the same way.
func TestCPUSince(t *testing.T) {
	snap := func(ps map[procKey]time.Duration) snapshot {
		s := snapshot{procs: map[procKey]procSample{}}
		for k, cpu := range ps {
			s.procs[k] = procSample{cpu: cpuUse{total: cpu, kernel: cpu / 4}}
		}
		return s
	}
	ms := time.Millisecond
	tests := []struct {
		name          string
		before, after map[procKey]time.Duration
		want          time.Duration
	}{
		{"none", nil, nil, 0},
		{"same processes", map[procKey]time.Duration{{1, 10}: 100 * ms, {2, 20}: 50 * ms},
			map[procKey]time.Duration{{1, 10}: 130 * ms, {2, 20}: 60 * ms}, 40 * ms},
		{"worker respawned", map[procKey]time.Duration{{1, 10}: 100 * ms, {2, 20}: 50 * ms},
			map[procKey]time.Duration{{1, 10}: 110 * ms, {3, 30}: 20 * ms}, 30 * ms},
		{"pid reused", map[procKey]time.Duration{{2, 20}: 500 * ms},
			map[procKey]time.Duration{{2, 90}: 20 * ms}, 20 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := cpuUse{total: tt.want, kernel: tt.want / 4}
			if got := cpuSince(snap(tt.before), snap(tt.after)); got != want {
				t.Errorf("cpuSince = %+v, want %+v", got, want)
			}
		})
	}
}

// procTree is a shell with two children, a busy loop and a shell that has a sleeping child of its
// own, so the tree is three levels deep.
type procTree struct {
	root, busy, mid, leaf int
}

func startProcTree(t *testing.T) procTree {
	t.Helper()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc:", err)
	}
	cmd := exec.Command("sh", "-c", `while :; do :; done & echo busy $!
sh -c 'sleep 30 & echo leaf $!; wait' & echo mid $!
wait`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skip("cannot start sh:", err)
	}
	tr := procTree{root: cmd.Process.Pid}
	t.Cleanup(func() {
		// Children first, so each parent's wait reaps them and the shells then exit by themselves.
		for _, p := range []int{tr.leaf, tr.busy} {
			if p > 0 {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
		stuck := time.AfterFunc(5*time.Second, func() { _ = cmd.Process.Kill() })
		_ = cmd.Wait()
		stuck.Stop()
	})
	sc := bufio.NewScanner(out)
	for range 3 {
		if !sc.Scan() {
			t.Fatalf("sh printed too little: %v", sc.Err())
		}
		name, num, _ := strings.Cut(sc.Text(), " ")
		n, err := strconv.Atoi(num)
		if err != nil {
			t.Fatalf("sh printed %q", sc.Text())
		}
		switch name {
		case "busy":
			tr.busy = n
		case "mid":
			tr.mid = n
		case "leaf":
			tr.leaf = n
		}
	}
	if tr.busy == 0 || tr.mid == 0 || tr.leaf == 0 {
		t.Fatalf("sh did not print every PID: %+v", tr)
	}
	return tr
}

// TestSampleTree charges real processes: the listed ones and their children and grandchildren,
// each once, with CPU and RSS summed from /proc.
func TestSampleTree(t *testing.T) {
	tr := startProcTree(t)
	all := []int{tr.root, tr.busy, tr.mid, tr.leaf}
	slices.Sort(all)

	pidTests := []struct {
		name  string
		roots []int
		want  []int
	}{
		{"root and descendants", []int{tr.root}, all},
		{"a descendant listed too", []int{tr.mid, tr.root}, all},
		{"a subtree", []int{tr.mid}, []int{min(tr.mid, tr.leaf), max(tr.mid, tr.leaf)}},
		{"a leaf", []int{tr.leaf}, []int{tr.leaf}},
		{"nothing", nil, []int{}},
	}
	for _, tt := range pidTests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := sampleTree(tt.roots)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.pids(); !slices.Equal(got, tt.want) {
				t.Errorf("sampleTree(%v) charged %v, want %v", tt.roots, got, tt.want)
			}
		})
	}

	t.Run("rss summed", func(t *testing.T) {
		s, err := sampleTree([]int{tr.root})
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, p := range all {
			rss, err := readRSS(p)
			if err != nil || rss <= 0 {
				t.Fatalf("VmRSS of %d: %d, %v", p, rss, err)
			}
			sum += rss
		}
		// The processes only sleep or spin in a shell loop, so their RSS holds still.
		if s.rssKiB != sum {
			t.Errorf("tree RSS %d KiB, want the sum of the four processes' VmRSS, %d KiB", s.rssKiB, sum)
		}
	})

	t.Run("cpu of a grandchild", func(t *testing.T) {
		// The root shell and the sleeps use no CPU: what the tree accrues is the busy loop's,
		// two levels below the listed process.
		before, err := sampleTree([]int{tr.root})
		if err != nil {
			t.Fatal(err)
		}
		rootBefore, _ := readStat(tr.root)
		const want = 50 * time.Millisecond
		var got time.Duration
		for deadline := time.Now().Add(10 * time.Second); got < want && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			after, err := sampleTree([]int{tr.root})
			if err != nil {
				t.Fatal(err)
			}
			got = cpuSince(before, after).total
		}
		if got < want {
			t.Fatalf("the tree accrued %v of CPU in 10 s, want at least %v", got, want)
		}
		if rootAfter, _ := readStat(tr.root); rootAfter.ticks-rootBefore.ticks > 2 {
			t.Errorf("the root shell itself used %d ticks: the test does not show the grandchild counted", rootAfter.ticks-rootBefore.ticks)
		}
	})

	t.Run("missing root", func(t *testing.T) {
		gone := exec.Command("true")
		if err := gone.Run(); err != nil {
			t.Skip(err)
		}
		if _, err := sampleTree([]int{tr.root, gone.ProcessState.Pid()}); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("sampleTree with an exited process: %v, want not exist", err)
		}
	})
}

// The machine's busy share counts everything but idle and iowait, steal included.
func TestHostBusy(t *testing.T) {
	before := []byte("cpu  100 0 50 800 10 0 20 20 0 0\ncpu0 50 0 25 400 5 0 10 10 0 0\n")
	after := []byte("cpu  200 0 150 900 10 0 70 30 0 0\ncpu0 100 0 75 450 5 0 35 15 0 0\n")
	b0, t0, err := parseHostTicks(before)
	if err != nil {
		t.Fatal(err)
	}
	b1, t1, err := parseHostTicks(after)
	if err != nil {
		t.Fatal(err)
	}
	// busy: user +100, system +100, softirq +50, steal +10 = 260 of 360 ticks.
	if got := hostBusy(b0, t0, b1, t1); got != 0.722 {
		t.Fatalf("host busy %v, want 0.722", got)
	}
	if got := hostBusy(b1, t1, b0, t0); got != 0 {
		t.Fatalf("host busy with the readings swapped: %v, want 0 (unknown)", got)
	}
	if _, _, err := parseHostTicks([]byte("intr 1 2 3\n")); err == nil {
		t.Fatal("a file without a cpu line parsed")
	}
}
