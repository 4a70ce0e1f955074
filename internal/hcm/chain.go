package hcm

import (
	"github.com/switchyard-proxy/switchyard/buffer"
	"github.com/switchyard-proxy/switchyard/filter"
	"github.com/switchyard-proxy/switchyard/headers"
	"github.com/switchyard-proxy/switchyard/internal/memacct"
)

// stage is one filter as one direction sees it: exactly one of dec and enc is set. The filter is
// kept as its interface, not as method values, which would cost an allocation each per stream.
type stage struct {
	name string
	dec  filter.DecoderFilter
	enc  filter.EncoderFilter
	held *buffer.Buffer // data this filter asked to keep (StopAndBuffer) or has not been given yet
}

func (st *stage) headers(h *headers.Map, end bool) filter.Status {
	if st.dec != nil {
		return st.dec.DecodeHeaders(h, end)
	}
	return st.enc.EncodeHeaders(h, end)
}

func (st *stage) data(b *buffer.Buffer, end bool) filter.Status {
	if st.dec != nil {
		return st.dec.DecodeData(b, end)
	}
	return st.enc.EncodeData(b, end)
}

// iterHost is what an iterator asks of its stream, for the direction it runs (decode or not):
// one interface rather than a closure per question, which cost an allocation each per stream.
type iterHost interface {
	stageLimit(decode bool) int                        // bytes a stage may hold
	stageOverflow(decode bool)                         // a stage holds more than stageLimit
	directionAborted(decode bool) bool                 // a local reply or reset ended the direction
	sinkHeaders(decode bool, h *headers.Map, end bool) // after the last stage
	sinkData(decode bool, b *buffer.Buffer, end bool)  // after the last stage
}

// iterator runs one direction of a stream through its stages with Envoy's iteration rules:
// StopIteration on headers holds them (and later data) at that filter until one of its data calls
// returns Continue; StopAndBuffer keeps the data at the filter and hands it everything held on the
// next call. It is owned by one goroutine at a time (decode: the connection's; encode: whoever holds
// the stream's encode lock).
type iterator struct {
	stages  []stage
	seen    int // stages[:seen] have been given the headers
	stopped int // index of the stage holding the headers, or -1
	h       *headers.Map
	hEnd    bool
	host    iterHost
	decode  bool // the direction, as host's methods are told
	// sinkIgnoresHeaders: the sink does nothing with the headers (the decode direction's), so
	// once the last stage has them the iterator need not keep them for a resume.
	sinkIgnoresHeaders bool
	acct               *memacct.Account // charged with what stages hold; nil: no accounting
}

func (it *iterator) init(stages []stage, host iterHost, decode bool) {
	*it = iterator{stages: stages, stopped: -1, host: host, decode: decode}
}

func (it *iterator) aborted() bool { return it.host.directionAborted(it.decode) }

// pushHeaders starts the direction.
func (it *iterator) pushHeaders(h *headers.Map, end bool) {
	it.h, it.hEnd = h, end
	it.resumeHeaders(0)
}

// resumeHeaders gives the headers to stages[from:], stopping at a stage that says StopIteration.
// A stop on headers that end the stream cannot be resumed by data, so it is treated as Continue.
func (it *iterator) resumeHeaders(from int) bool {
	for i := from; i < len(it.stages); i++ {
		it.seen = i + 1
		st := it.stages[i].headers(it.h, it.hEnd)
		if it.aborted() {
			return false
		}
		if st == filter.StopIteration && !it.hEnd {
			it.stopped = i
			if i == len(it.stages)-1 && it.sinkIgnoresHeaders {
				it.h = nil // a resume goes to the sink only (the router holds a tunnel's headers)
			}
			return false
		}
	}
	it.stopped = -1
	h := it.h
	it.h = nil // the sink has them now: a tunnel that stays open for hours does not keep them
	it.host.sinkHeaders(it.decode, h, it.hEnd)
	return true
}

// pushData runs data through the stages that have seen the headers. Data never passes the stage
// holding the headers: when that stage continues its data, the headers go on first.
func (it *iterator) pushData(b *buffer.Buffer, end bool) {
	if it.aborted() {
		return
	}
	owned := false // b is a stage's held buffer, not the caller's
	for i := 0; i < len(it.stages) && i < it.seen; i++ {
		s := &it.stages[i]
		if s.held != nil && s.held.Len() > 0 {
			it.acct.Credit(s.held.Len())
			s.held.Append(b)
			b = s.held
			s.held = nil
			owned = true
		}
		st := s.data(b, end)
		if it.aborted() {
			return
		}
		if st == filter.StopAndBuffer && !end {
			if !owned {
				// The caller's Buffer (a pump reuses one per message) and its bytes (a pooled
				// slab) are not ours to keep: hold a copy.
				held := &buffer.Buffer{}
				held.Append(b)
				b = held
			}
			s.held = b
			it.acct.Charge(b.Len())
			if b.Len() > it.host.stageLimit(it.decode) {
				it.host.stageOverflow(it.decode)
			}
			return
		}
		if i == it.stopped && !it.resumeHeaders(i+1) && it.aborted() {
			return
		}
	}
	if it.stopped >= 0 {
		return // cannot happen: the loop stops at the stage holding the headers
	}
	it.host.sinkData(it.decode, b, end)
}
