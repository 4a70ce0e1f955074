// Package memacct is per-stream buffer memory accounting, for the overload action
// envoy.overload_actions.reset_high_memory_stream. It follows Envoy's BufferMemoryAccountImpl and
// WatermarkBufferFactory (source/common/buffer/watermark_buffer.cc): each stream has an Account
// charged with the bytes the proxy holds for it and credited as they go; a Tracker files every
// account holding at least a minimum into one of eight power-of-two size classes, so that under
// memory pressure the largest streams are reset first.
//
// A nil *Tracker tracks nothing and a nil *Account ignores every call, so code that buffers bytes
// charges its account unconditionally.
package memacct

import (
	"math"
	"math/bits"
	"sync"
)

// Classes is the number of size classes (Envoy's NUM_MEMORY_CLASSES_).
const Classes = 8

// MaxResetsPerInvocation bounds the streams one Reset resets (Envoy's
// kMaxNumberOfStreamsToResetPerInvocation): enough to free memory without wiping out all traffic
// in one go.
const MaxResetsPerInvocation = 50

// Tracker files accounts by size class. Class k holds accounts whose balance is in
// [2^(p-1+k), 2^(p+k)), the last class everything above, where p is
// minimum_account_to_track_power_of_two: Envoy's code shifts balances right by p-1, so an account
// is tracked from 2^(p-1) bytes (its proto comment says 2^p; its code and tests say p-1).
type Tracker struct {
	shift uint // Envoy's bitshift_: minimum_account_to_track_power_of_two - 1

	mu      sync.Mutex
	classes [Classes]map[*Account]struct{} // tracked accounts by class
}

// NewTracker returns a tracker for buffer_factory_config.minimum_account_to_track_power_of_two
// (config validation keeps it in Envoy's range, 10 to 56).
func NewTracker(minimumPowerOfTwo uint32) *Tracker {
	t := &Tracker{shift: uint(max(minimumPowerOfTwo, 1)) - 1}
	for i := range t.classes {
		t.classes[i] = map[*Account]struct{}{}
	}
	return t
}

// Class returns the size class a balance falls in, or -1 when it is too small to track
// (Envoy's balanceToClassIndex).
func (t *Tracker) Class(balance int64) int {
	if balance <= 0 {
		return -1
	}
	shifted := uint64(balance) >> t.shift
	if shifted == 0 {
		return -1
	}
	return min(bits.Len64(shifted)-1, Classes-1)
}

// NewAccount opens an account for one stream; reset tears that stream down when Reset picks it.
// A nil tracker returns a nil account.
func (t *Tracker) NewAccount(reset func()) *Account {
	if t == nil {
		return nil
	}
	return &Account{t: t, reset: reset, seen: -1, class: -1}
}

// Reset resets tracked streams the way Envoy's resetAccountsGivenPressure does for an action
// state of pressure (clamped to [0, 1]): it clears the largest floor(pressure*8)+1 classes (all
// eight at 1), largest first, at most MaxResetsPerInvocation streams, and returns how many it
// reset. A reset account leaves its class at once and is never picked again. Streams are reset
// after the tracker's lock is released, so a reset may charge or close accounts.
func (t *Tracker) Reset(pressure float64) int {
	if t == nil {
		return 0
	}
	pressure = min(max(pressure, 0), 1)
	n := min(int(math.Floor(pressure*Classes))+1, Classes)
	var picked []*Account
	t.mu.Lock()
	for i := Classes - 1; i >= Classes-n && len(picked) < MaxResetsPerInvocation; i-- {
		for a := range t.classes[i] {
			if len(picked) == MaxResetsPerInvocation {
				break
			}
			delete(t.classes[i], a)
			a.class, a.gone = -1, true
			picked = append(picked, a)
		}
	}
	t.mu.Unlock()
	for _, a := range picked {
		a.reset()
	}
	return len(picked)
}

// Account is one stream's balance of buffered bytes. It is safe for concurrent use: a stream's
// decode and encode goroutines and its codec charge it independently.
type Account struct {
	t     *Tracker
	reset func()

	mu      sync.Mutex
	balance int64 // guarded by mu
	seen    int   // the class last filed with the tracker; guarded by mu

	class int  // the class the tracker holds the account in, -1 for none; guarded by t.mu
	gone  bool // closed or reset: never filed again; guarded by t.mu
}

// Charge adds n bytes the stream now holds.
func (a *Account) Charge(n int) {
	if a == nil || n <= 0 {
		return
	}
	a.update(int64(n))
}

// Credit removes n bytes the stream no longer holds.
func (a *Account) Credit(n int) {
	if a == nil || n <= 0 {
		return
	}
	a.update(-int64(n))
}

// Balance returns the bytes charged and not yet credited.
func (a *Account) Balance() int64 {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.balance
}

// Close takes the account out of the tracker at the stream's end (Envoy's clearDownstream): it is
// never reset after. Charges and credits still count but file nothing.
func (a *Account) Close() {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.t
	t.mu.Lock()
	t.move(a, -1)
	a.gone = true
	t.mu.Unlock()
	a.seen = -1
}

// update applies a change of balance and refiles the account when its class changed; the
// tracker's lock is taken only then.
func (a *Account) update(delta int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.balance += delta
	c := a.t.Class(a.balance)
	if c == a.seen {
		return
	}
	a.seen = c
	t := a.t
	t.mu.Lock()
	if !a.gone {
		t.move(a, c)
	}
	t.mu.Unlock()
}

// move files a in class c (-1: nowhere). Called with t.mu held.
func (t *Tracker) move(a *Account, c int) {
	if a.class == c {
		return
	}
	if a.class >= 0 {
		delete(t.classes[a.class], a)
	}
	if c >= 0 {
		t.classes[c][a] = struct{}{}
	}
	a.class = c
}
