package hcm

import (
	"fmt"
	"strings"
	"testing"

	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/filter"
	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/memacct"
)

// scripted is a stage whose answers are fixed and which records what it was given.
type scripted struct {
	name    string
	hStatus filter.Status
	dStatus func(b *buffer.Buffer, end bool) filter.Status
	log     *[]string
}

func (f *scripted) DecodeHeaders(_ *headers.Map, end bool) filter.Status {
	*f.log = append(*f.log, fmt.Sprintf("%s:H(%v)", f.name, end))
	return f.hStatus
}

func (f *scripted) DecodeData(b *buffer.Buffer, end bool) filter.Status {
	*f.log = append(*f.log, fmt.Sprintf("%s:D(%s,%v)", f.name, b.Bytes(), end))
	if f.dStatus == nil {
		return filter.Continue
	}
	return f.dStatus(b, end)
}

func (f *scripted) stage() stage { return stage{name: f.name, dec: f} }

// testHost is an iterator's host that records what reaches the sink; a stage over the limit
// overflows, and an overflow aborts the direction.
type testHost struct {
	limit      int
	overflowed bool
	onOverflow func()
	log        *[]string
}

func (h *testHost) stageLimit(bool) int { return h.limit }
func (h *testHost) stageOverflow(bool) {
	h.overflowed = true
	if h.onOverflow != nil {
		h.onOverflow()
	}
}
func (h *testHost) directionAborted(bool) bool { return h.overflowed }
func (h *testHost) sinkHeaders(_ bool, _ *headers.Map, end bool) {
	if h.log != nil {
		*h.log = append(*h.log, fmt.Sprintf("sink:H(%v)", end))
	}
}
func (h *testHost) sinkData(_ bool, b *buffer.Buffer, end bool) {
	if h.log != nil {
		*h.log = append(*h.log, fmt.Sprintf("sink:D(%s,%v)", b.Bytes(), end))
	}
}

func runChain(t *testing.T, fs []*scripted, limit int, steps func(it *iterator)) (log []string, overflowed bool) {
	t.Helper()
	var stages []stage
	for _, f := range fs {
		f.log = &log
		stages = append(stages, f.stage())
	}
	host := &testHost{limit: limit, log: &log}
	var it iterator
	it.init(stages, host, true)
	steps(&it)
	return log, host.overflowed
}

func bufferUntilEnd(_ *buffer.Buffer, end bool) filter.Status {
	if end {
		return filter.Continue
	}
	return filter.StopAndBuffer
}

func TestIteratorOrderAndHolding(t *testing.T) {
	tests := []struct {
		name     string
		filters  []*scripted
		limit    int
		steps    func(it *iterator)
		want     string
		overflow bool
	}{
		{
			name:    "all continue",
			filters: []*scripted{{name: "a"}, {name: "b"}},
			limit:   100,
			steps: func(it *iterator) {
				it.pushHeaders(headers.New(), false)
				it.pushData(buffer.Wrap([]byte("x")), false)
				it.pushData(&buffer.Buffer{}, true)
			},
			want: "a:H(false) b:H(false) sink:H(false) a:D(x,false) b:D(x,false) sink:D(x,false) a:D(,true) b:D(,true) sink:D(,true)",
		},
		{
			name:    "buffer filter holds headers and data until the end",
			filters: []*scripted{{name: "buf", hStatus: filter.StopIteration, dStatus: bufferUntilEnd}, {name: "router"}},
			limit:   100,
			steps: func(it *iterator) {
				it.pushHeaders(headers.New(), false)
				it.pushData(buffer.Wrap([]byte("ab")), false)
				it.pushData(buffer.Wrap([]byte("cd")), true)
			},
			want: "buf:H(false) buf:D(ab,false) buf:D(abcd,true) router:H(false) sink:H(false) router:D(abcd,true) sink:D(abcd,true)",
		},
		{
			name:    "held data over the limit overflows",
			filters: []*scripted{{name: "buf", hStatus: filter.StopIteration, dStatus: bufferUntilEnd}, {name: "router"}},
			limit:   3,
			steps: func(it *iterator) {
				it.pushHeaders(headers.New(), false)
				it.pushData(buffer.Wrap([]byte("ab")), false)
				it.pushData(buffer.Wrap([]byte("cd")), false)
				it.pushData(buffer.Wrap([]byte("ef")), false)
			},
			want:     "buf:H(false) buf:D(ab,false) buf:D(abcd,false)",
			overflow: true,
		},
		{
			name:    "stop on headers that end the stream is a continue",
			filters: []*scripted{{name: "a", hStatus: filter.StopIteration}, {name: "b"}},
			limit:   100,
			steps:   func(it *iterator) { it.pushHeaders(headers.New(), true) },
			want:    "a:H(true) b:H(true) sink:H(true)",
		},
		{
			name: "second filter stops headers after the first released them",
			filters: []*scripted{
				{name: "a", hStatus: filter.StopIteration},
				{name: "b", hStatus: filter.StopIteration, dStatus: bufferUntilEnd},
				{name: "router"},
			},
			limit: 100,
			steps: func(it *iterator) {
				it.pushHeaders(headers.New(), false)
				it.pushData(buffer.Wrap([]byte("1")), false)
				it.pushData(buffer.Wrap([]byte("2")), true)
			},
			want: "a:H(false) a:D(1,false) b:H(false) b:D(1,false) a:D(2,true) b:D(12,true) router:H(false) sink:H(false) router:D(12,true) sink:D(12,true)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, overflowed := runChain(t, tc.filters, tc.limit, tc.steps)
			if got := strings.Join(log, " "); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
			if overflowed != tc.overflow {
				t.Errorf("overflow = %v, want %v", overflowed, tc.overflow)
			}
		})
	}
}

// TestIteratorChargesHeldBytes: what a StopAndBuffer stage holds is charged to the stream's
// account while it is held, and credited when the stage lets it go on.
func TestIteratorChargesHeldBytes(t *testing.T) {
	acct := memacct.NewTracker(10).NewAccount(func() {})
	var log []string
	buf := &scripted{name: "buf", hStatus: filter.StopIteration, dStatus: bufferUntilEnd, log: &log}
	var it iterator
	it.init([]stage{buf.stage()}, &testHost{limit: 1 << 20, onOverflow: func() { t.Error("overflow") }}, true)
	it.acct = acct
	it.pushHeaders(headers.New(), false)
	steps := []struct {
		data string
		end  bool
		want int64
	}{
		{"aaaa", false, 4},
		{"bbbbbb", false, 10},
		{"cc", true, 0}, // the stage continues: everything held goes on
	}
	for _, s := range steps {
		it.pushData(buffer.Wrap([]byte(s.data)), s.end)
		if got := acct.Balance(); got != s.want {
			t.Errorf("after %q (end %v): balance %d, want %d", s.data, s.end, got, s.want)
		}
	}
}
