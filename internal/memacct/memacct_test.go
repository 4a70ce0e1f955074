package memacct

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

func TestClass(t *testing.T) {
	tests := []struct {
		power   uint32
		balance int64
		want    int
	}{
		{12, 0, -1},
		{12, -5, -1},
		{12, 2047, -1},
		{12, 2048, 0}, // Envoy shifts by power-1: tracked from 2^11
		{12, 4095, 0},
		{12, 4096, 1},
		{12, 8192, 2},
		{12, 16384, 3},
		{12, 1<<18 - 1, 6},
		{12, 1 << 18, 7},
		{12, 1 << 40, 7}, // the last class is open-ended
		{10, 511, -1},
		{10, 512, 0},
		{10, 1 << 16, 7},
		{21, 1 << 20, 0}, // Envoy's test: bit_width(1 MiB) = 21 tracks 1 MiB
		{56, 1<<55 - 1, -1},
		{56, 1 << 55, 0},
		{56, 1 << 62, 7},
	}
	for _, tt := range tests {
		if got := NewTracker(tt.power).Class(tt.balance); got != tt.want {
			t.Errorf("power %d: Class(%d) = %d, want %d", tt.power, tt.balance, got, tt.want)
		}
	}
}

// fleet opens one account per balance on a fresh tracker (power 12) and records which are reset.
type fleet struct {
	t     *Tracker
	accts map[string]*Account
	mu    sync.Mutex
	reset []string
}

func newFleet(balances map[string]int64) *fleet {
	f := &fleet{t: NewTracker(12), accts: map[string]*Account{}}
	for name, b := range balances {
		a := f.t.NewAccount(func() {
			f.mu.Lock()
			f.reset = append(f.reset, name)
			f.mu.Unlock()
		})
		a.Charge(int(b))
		f.accts[name] = a
	}
	return f
}

func (f *fleet) resetSoFar() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.reset)
	slices.Sort(out)
	return out
}

// TestResetPicksLargestClasses mirrors Envoy's bucket scheme with power 12: 1 KiB is untracked,
// 4, 8 and 16 KiB sit in classes 1, 2 and 3, 300 KiB in class 7.
func TestResetPicksLargestClasses(t *testing.T) {
	balances := map[string]int64{"1k": 1 << 10, "4k": 4 << 10, "8k": 8 << 10, "16k": 16 << 10, "300k": 300 << 10}
	all := []string{"16k", "300k", "4k", "8k"} // sorted; 1k is never tracked
	tests := []struct {
		pressure float64
		want     []string
	}{
		{0, []string{"300k"}}, // Envoy clears one class even at 0; the server never asks at 0
		{0.001, []string{"300k"}},
		{0.49, []string{"300k"}},               // floor(3.92)+1 = 4 classes: 7..4
		{0.5, []string{"16k", "300k"}},         // 5 classes: 7..3
		{0.6249, []string{"16k", "300k"}},      // still 5
		{0.625, []string{"16k", "300k", "8k"}}, // 6 classes: 7..2
		{0.75, all},                            // 7 classes: 7..1
		{0.875, all},                           // 8 classes
		{1, all},                               // every class
		{7, all},                               // clamped to 1
		{-1, []string{"300k"}},                 // clamped to 0
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.pressure), func(t *testing.T) {
			f := newFleet(balances)
			n := f.t.Reset(tt.pressure)
			if got := f.resetSoFar(); !slices.Equal(got, tt.want) || n != len(tt.want) {
				t.Errorf("Reset(%v) = %d, reset %v; want %v", tt.pressure, n, got, tt.want)
			}
			if again := f.t.Reset(tt.pressure); again != 0 {
				t.Errorf("a second Reset(%v) reset %d more; reset accounts must leave the tracker", tt.pressure, again)
			}
		})
	}
}

// TestResetCap: one call resets at most 50 streams, largest classes first; the next call goes on.
func TestResetCap(t *testing.T) {
	balances := map[string]int64{}
	for i := range 40 {
		balances[fmt.Sprintf("big%02d", i)] = 1 << 20 // class 7
	}
	for i := range 20 {
		balances[fmt.Sprintf("mid%02d", i)] = 32 << 10 // class 4
	}
	f := newFleet(balances)
	if n := f.t.Reset(1); n != MaxResetsPerInvocation {
		t.Fatalf("first Reset = %d, want the cap %d", n, MaxResetsPerInvocation)
	}
	big, mid := 0, 0
	for _, name := range f.resetSoFar() {
		if name[:3] == "big" {
			big++
		} else {
			mid++
		}
	}
	if big != 40 || mid != 10 {
		t.Errorf("first Reset took %d of class 7 and %d of class 4; want all 40 of the larger class first, then 10", big, mid)
	}
	if n := f.t.Reset(1); n != 10 {
		t.Errorf("second Reset = %d, want the 10 left", n)
	}
	if n := f.t.Reset(1); n != 0 {
		t.Errorf("third Reset = %d, want 0", n)
	}
}

// TestAccountFollowsBalance: an account is refiled as its balance moves, leaves the tracker when
// it drops below the minimum or closes, and is reset only while tracked.
func TestAccountFollowsBalance(t *testing.T) {
	steps := []struct {
		name    string
		do      func(a *Account)
		tracked bool
	}{
		{"new", func(*Account) {}, false},
		{"just below the minimum", func(a *Account) { a.Charge(2047) }, false},
		{"at the minimum", func(a *Account) { a.Charge(1) }, true},
		{"grown", func(a *Account) { a.Charge(1 << 20) }, true},
		{"drained below the minimum", func(a *Account) { a.Credit(1<<20 + 1) }, false},
		{"charged again", func(a *Account) { a.Charge(10 << 10) }, true},
		{"closed", func(a *Account) { a.Close() }, false},
		{"charged after close", func(a *Account) { a.Charge(1 << 20) }, false},
	}
	tr := NewTracker(12)
	resets := 0
	a := tr.NewAccount(func() { resets++ })
	for _, s := range steps {
		s.do(a)
		if got := trackedIn(tr, a); (got >= 0) != s.tracked || s.tracked && got != tr.Class(a.Balance()) {
			t.Errorf("%s (balance %d): filed in class %d, want tracked %v in class %d", s.name, a.Balance(), got, s.tracked, tr.Class(a.Balance()))
		}
	}
	if tr.Reset(1) != 0 || resets != 0 {
		t.Errorf("a closed account was reset")
	}
	if want := int64(2047 + 10<<10 + 1<<20); a.Balance() != want {
		t.Errorf("balance %d after close, want %d: charges keep counting", a.Balance(), want)
	}
}

// trackedIn returns the class the tracker files a in, or -1.
func trackedIn(t *Tracker, a *Account) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, c := range t.classes {
		if _, ok := c[a]; ok {
			return i
		}
	}
	return -1
}

func tracked(t *Tracker) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.classes {
		if len(c) > 0 {
			return true
		}
	}
	return false
}

// TestResetMayTouchItsAccount: a reset tears its stream down, which credits and closes the
// account; that must not deadlock on the tracker.
func TestResetMayTouchItsAccount(t *testing.T) {
	tr := NewTracker(10)
	var a *Account
	a = tr.NewAccount(func() {
		a.Credit(int(a.Balance()))
		a.Close()
	})
	a.Charge(1 << 20)
	if n := tr.Reset(1); n != 1 || a.Balance() != 0 || tracked(tr) {
		t.Errorf("Reset = %d, balance %d, tracked %v; want 1, 0, false", n, a.Balance(), tracked(tr))
	}
}

// TestConcurrentCharges: charges and credits from several goroutines leave the exact balance and
// the account in the class of that balance.
func TestConcurrentCharges(t *testing.T) {
	tr := NewTracker(10)
	a := tr.NewAccount(func() {})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				n := (g*1000 + i) % 5000
				a.Charge(n)
				if i%2 == 1 {
					a.Credit(n)
				}
			}
		}()
	}
	wg.Wait()
	var want int64
	for g := range 8 {
		for i := 0; i < 1000; i += 2 {
			want += int64((g*1000 + i) % 5000)
		}
	}
	if a.Balance() != want {
		t.Fatalf("balance %d, want %d", a.Balance(), want)
	}
	tr.mu.Lock()
	_, in := tr.classes[tr.Class(want)][a]
	tr.mu.Unlock()
	if !in {
		t.Errorf("account not filed in class %d of its balance %d", tr.Class(want), want)
	}
}

func TestNil(t *testing.T) {
	var tr *Tracker
	a := tr.NewAccount(func() { t.Error("reset through a nil tracker") })
	if a != nil {
		t.Fatal("a nil tracker must give a nil account")
	}
	a.Charge(1 << 30)
	a.Credit(1)
	a.Close()
	if a.Balance() != 0 || tr.Reset(1) != 0 {
		t.Error("a nil account or tracker must do nothing")
	}
}
