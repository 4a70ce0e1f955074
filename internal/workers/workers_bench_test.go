package workers

import (
	"sync"
	"testing"
)

// deep uses about depth × 256 bytes of stack, as a connection's goroutine does on its way down the
// dialer and the codecs.
//
//go:noinline
func deep(depth int) byte {
	var pad [200]byte
	pad[depth%len(pad)] = byte(depth)
	if depth == 0 {
		return pad[0]
	}
	return deep(depth-1) + pad[depth%len(pad)]
}

var sink byte

// BenchmarkSpawn compares a go statement with Go for work whose stack grows to ~16 KiB: a new
// goroutine starts small and copies its stack on each doubling; a kept one has it already.
func BenchmarkSpawn(b *testing.B) {
	run := map[string]func(func()){
		"go":         func(f func()) { go f() },
		"workers.Go": Go,
	}
	for _, name := range []string{"go", "workers.Go"} {
		spawn := run[name]
		b.Run(name, func(b *testing.B) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			b.ReportAllocs()
			for b.Loop() {
				wg.Add(1)
				spawn(func() {
					v := deep(64)
					mu.Lock()
					sink += v
					mu.Unlock()
					wg.Done()
				})
				wg.Wait()
			}
		})
	}
}
