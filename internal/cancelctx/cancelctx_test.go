package cancelctx

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func isDone(c context.Context) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

func waitDone(t *testing.T, c context.Context) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not done after 5 s")
	}
}

func TestCancelClosesDoneWhetherAskedBeforeOrAfter(t *testing.T) {
	early := New(context.Background())
	d := early.Done()
	early.Cancel()
	if !isDone(early) || d != early.Done() {
		t.Fatal("the Done channel asked for before Cancel is not closed, or changed")
	}
	late := New(context.Background())
	late.Cancel()
	if !isDone(late) {
		t.Fatal("Done asked for after Cancel is not closed")
	}
	for _, c := range []*Context{early, late} {
		if c.Err() != context.Canceled || c.Cause() != context.Canceled {
			t.Fatalf("Err %v, Cause %v; want context.Canceled for both", c.Err(), c.Cause())
		}
	}
}

func TestNotCancelled(t *testing.T) {
	c := New(context.Background())
	if isDone(c) || c.Err() != nil || c.Cause() != nil {
		t.Fatal("a fresh context is done")
	}
}

func TestCancelCauseKeepsTheFirst(t *testing.T) {
	why := errors.New("peer went away")
	c := New(context.Background())
	c.CancelCause(why)
	c.CancelCause(errors.New("later"))
	c.Cancel()
	if c.Err() != context.Canceled || c.Cause() != why {
		t.Fatalf("Err %v, Cause %v; want Canceled and the first cause", c.Err(), c.Cause())
	}
}

func TestParentOfThisPackageCancelsDescendantsBeforeCancelReturns(t *testing.T) {
	why := errors.New("connection lost")
	root := New(context.Background())
	child := New(root)
	grandchild := New(child)
	std, stdCancel := context.WithCancel(grandchild) // a standard-library child, through AfterFunc
	defer stdCancel()
	root.CancelCause(why)
	for i, c := range []*Context{child, grandchild} {
		if !isDone(c) || c.Err() != context.Canceled || c.Cause() != why {
			t.Fatalf("descendant %d: done %v, Err %v, Cause %v", i, isDone(c), c.Err(), c.Cause())
		}
	}
	waitDone(t, std)
	if std.Err() != context.Canceled {
		t.Fatalf("standard-library child's Err %v, want context.Canceled", std.Err())
	}
}

func TestChildCancelLeavesParentRunning(t *testing.T) {
	root := New(context.Background())
	child := New(root)
	child.Cancel()
	if isDone(root) {
		t.Fatal("cancelling a child cancelled its parent")
	}
	if n := len(root.watchers); n != 0 {
		t.Fatalf("parent still holds %d watchers after its only child was cancelled", n)
	}
}

func TestStandardLibraryParent(t *testing.T) {
	parent, cancel := context.WithCancelCause(context.Background())
	c := New(parent)
	why := errors.New("listener closed")
	cancel(why)
	waitDone(t, c)
	if c.Err() != context.Canceled || c.Cause() != why {
		t.Fatalf("Err %v, Cause %v", c.Err(), c.Cause())
	}

	gone, cancelGone := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancelGone()
	<-gone.Done()
	already := New(gone)
	if !isDone(already) || already.Err() != context.DeadlineExceeded {
		t.Fatalf("a context made from a done parent: done %v, Err %v", isDone(already), already.Err())
	}
	if d, ok := already.Deadline(); !ok || d.IsZero() {
		t.Fatal("Deadline is not the parent's")
	}
}

func TestCancelUnregistersFromStandardLibraryParent(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := New(parent)
	c.Cancel()
	if c.stopParent == nil {
		t.Fatal("no registration with the standard-library parent")
	}
	if c.stopParent() {
		t.Fatal("the registration with the parent was still live after Cancel")
	}
}

func TestValueComesFromParent(t *testing.T) {
	type key struct{}
	c := New(New(context.WithValue(context.Background(), key{}, "v")))
	if c.Value(key{}) != "v" {
		t.Fatal("Value did not reach the parent")
	}
}

func TestAfterFunc(t *testing.T) {
	c := New(context.Background())
	ran := make(chan struct{}, 2)
	AfterFunc(c, func() { ran <- struct{}{} })
	stopped := AfterFunc(c, func() { ran <- struct{}{} })
	if !stopped() {
		t.Fatal("stop before cancel reported false")
	}
	if stopped() {
		t.Fatal("a second stop reported true")
	}
	c.Cancel()
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("AfterFunc's function did not run after Cancel")
	}
	select {
	case <-ran:
		t.Fatal("a stopped function ran")
	case <-time.After(20 * time.Millisecond):
	}
	late := AfterFunc(c, func() { ran <- struct{}{} })
	<-ran // on a done context the function runs at once
	if late() {
		t.Fatal("stop of a function that already ran reported true")
	}
}

// The standard library's context.AfterFunc uses the method rather than a goroutine of its own.
func TestStandardAfterFuncOnThisPackage(t *testing.T) {
	c := New(context.Background())
	ran := make(chan struct{})
	context.AfterFunc(c, func() { close(ran) })
	if len(c.watchers) != 1 {
		t.Fatalf("context.AfterFunc registered %d watchers, want 1", len(c.watchers))
	}
	c.Cancel()
	<-ran
}

// The functions run on goroutines of their own, so one may take a lock that Cancel's caller holds.
func TestAfterFuncDoesNotRunUnderTheCaller(t *testing.T) {
	var mu sync.Mutex
	c := New(context.Background())
	ran := make(chan struct{})
	c.AfterFunc(func() {
		mu.Lock()
		close(ran)
		mu.Unlock()
	})
	mu.Lock()
	c.Cancel()
	mu.Unlock()
	<-ran
}

// Children come and go in any order on a long-lived parent (an HTTP/2 connection's streams): every
// removal keeps the others registered, and the last one empties the list.
func TestManyChildrenRemovedInAnyOrder(t *testing.T) {
	root := New(context.Background())
	kids := make([]*Context, 500)
	for i := range kids {
		kids[i] = New(root)
	}
	stops := make([]func() bool, 100)
	for i := range stops {
		stops[i] = root.AfterFunc(func() {})
	}
	rand.Shuffle(len(kids), func(i, j int) { kids[i], kids[j] = kids[j], kids[i] })
	for i, k := range kids[:250] {
		k.Cancel()
		if i%2 == 0 && i/2 < len(stops) && !stops[i/2]() {
			t.Fatal("stop of a registered function reported false")
		}
	}
	if len(root.watchers) != 250 {
		t.Fatalf("%d watchers left, want the 250 children still running", len(root.watchers))
	}
	for i, w := range root.watchers {
		if w.idx != i || w.owner != root {
			t.Fatalf("watcher %d records index %d", i, w.idx)
		}
	}
	root.Cancel()
	for _, k := range kids[250:] {
		if !isDone(k) {
			t.Fatal("a child still registered was not cancelled with its parent")
		}
	}
	if root.watchers != nil {
		t.Fatal("the parent kept its watchers after Cancel")
	}
}

func TestConcurrentUse(t *testing.T) {
	root := New(context.Background())
	var ran atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				c := New(root)
				stop := c.AfterFunc(func() { ran.Add(1) })
				if i%3 == 0 {
					stop()
				}
				_ = c.Done()
				c.Cancel()
			}
		}()
	}
	go root.Cancel()
	wg.Wait()
	waitDone(t, root)
}

// What a stream's pair of contexts with two watches costs, against the standard library's: run
// with -benchmem.
func BenchmarkStreamContexts(b *testing.B) {
	conn := New(context.Background())
	stdConn, stdCancel := context.WithCancel(context.Background())
	defer stdCancel()
	b.Run("cancelctx", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			codec := New(conn)
			stream := New(codec)
			stream.AfterFunc(func() {})
			stream.AfterFunc(func() {})
			_ = codec.Done()
			stream.Cancel()
			codec.Cancel()
		}
	})
	b.Run("stdlib", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			codec, cancelCodec := context.WithCancel(stdConn)
			stream, cancelStream := context.WithCancel(codec)
			context.AfterFunc(stream, func() {})
			context.AfterFunc(stream, func() {})
			_ = codec.Done()
			cancelStream()
			cancelCodec()
		}
	})
}

func TestDetach(t *testing.T) {
	why := errors.New("client reset")
	c := New(context.Background())
	d, release := Detach(c)
	defer release()
	derived, cancel := context.WithTimeout(d, time.Minute) // what net.Dialer does
	defer cancel()
	if c.done != nil {
		t.Fatal("deriving from the detached context made the Context's Done channel")
	}
	c.CancelCause(why)
	waitDone(t, derived)
	if d.(*Context).Cause() != why {
		t.Fatalf("detached cause %v, want %v", d.(*Context).Cause(), why)
	}
}

func TestDetachReleaseUnregisters(t *testing.T) {
	c := New(context.Background())
	d, release := Detach(c)
	release()
	if len(c.watchers) != 0 {
		t.Fatalf("%d watchers left after release", len(c.watchers))
	}
	if d.Err() == nil {
		t.Fatal("the detached context is still live after release")
	}
	if c.Err() != nil {
		t.Fatal("release cancelled the Context it was detached from")
	}
}

func TestDetachKeepsDeadline(t *testing.T) {
	at := time.Now().Add(time.Hour)
	parent, cancel := context.WithDeadline(context.Background(), at)
	defer cancel()
	d, release := Detach(New(parent))
	defer release()
	if got, ok := d.Deadline(); !ok || !got.Equal(at) {
		t.Fatalf("deadline %v %v, want %v", got, ok, at)
	}
	std, release2 := Detach(parent)
	defer release2()
	if std != parent {
		t.Fatal("a standard-library context was not returned as it is")
	}
}

func TestWait(t *testing.T) {
	c := New(context.Background())
	ready := make(chan struct{})
	go func() { time.Sleep(10 * time.Millisecond); close(ready) }()
	if err := Wait(c, ready); err != nil {
		t.Fatalf("Wait on a channel that closed: %v", err)
	}
	if c.done != nil || len(c.watchers) != 0 {
		t.Fatal("Wait left the Context's Done channel made or its watch registered")
	}

	never := make(chan struct{})
	go func() { time.Sleep(10 * time.Millisecond); c.Cancel() }()
	if err := Wait(c, never); err != context.Canceled {
		t.Fatalf("Wait on a cancelled Context: %v, want context.Canceled", err)
	}

	std, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Wait(std, never); err != context.Canceled {
		t.Fatalf("Wait on a cancelled standard-library context: %v", err)
	}
	if err := Wait(std, ready); err != nil {
		t.Fatalf("Wait on a closed channel with a done context: %v, want nil (the channel first)", err)
	}
}
