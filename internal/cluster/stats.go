package cluster

import (
	"reflect"
	"strconv"
	"sync/atomic"

	"github.com/switchyard-proxy/switchyard/internal/stats"
)

// Stats are one cluster's stats under cluster.<name>., with Envoy's names (the `stat` tags are the
// one list). The cluster counts connections, breakers and membership; the router counts the
// upstream_rq_* request outcomes. Fields are set by NewStats and never nil.
type Stats struct {
	// Connections and circuit breakers, counted by this package.
	UpstreamCxTotal           *stats.Counter `stat:"upstream_cx_total"`
	UpstreamCxConnectFail     *stats.Counter `stat:"upstream_cx_connect_fail"`
	UpstreamCxConnectTimeout  *stats.Counter `stat:"upstream_cx_connect_timeout"`
	UpstreamCxDestroy         *stats.Counter `stat:"upstream_cx_destroy"`
	UpstreamCxIdleTimeout     *stats.Counter `stat:"upstream_cx_idle_timeout"`
	UpstreamCxOverflow        *stats.Counter `stat:"upstream_cx_overflow"`
	UpstreamCxNoneHealthy     *stats.Counter `stat:"upstream_cx_none_healthy"`
	UpstreamRqPendingOverflow *stats.Counter `stat:"upstream_rq_pending_overflow"`
	UpstreamRqPendingTotal    *stats.Counter `stat:"upstream_rq_pending_total"`
	UpstreamCxActive          *stats.Gauge   `stat:"upstream_cx_active"`
	UpstreamCxHTTP2Total      *stats.Counter `stat:"upstream_cx_http2_total"`
	UpstreamCxHTTP2Active     *stats.Gauge   `stat:"upstream_cx_http2_active"` // not in Envoy: pooled multiplexed connections (each holds reader, writer and watcher goroutines)
	UpstreamRqActive          *stats.Gauge   `stat:"upstream_rq_active"`
	UpstreamRqPendingActive   *stats.Gauge   `stat:"upstream_rq_pending_active"`
	MembershipTotal           *stats.Gauge   `stat:"membership_total"`
	MembershipHealthy         *stats.Gauge   `stat:"membership_healthy"`

	// Requests, counted by the router.
	UpstreamRqTotal         *stats.Counter `stat:"upstream_rq_total"`
	UpstreamRqCompleted     *stats.Counter `stat:"upstream_rq_completed"`
	UpstreamRqTimeout       *stats.Counter `stat:"upstream_rq_timeout"`
	UpstreamRqPerTryTimeout *stats.Counter `stat:"upstream_rq_per_try_timeout"`
	UpstreamRqRetry         *stats.Counter `stat:"upstream_rq_retry"`
	UpstreamRqRetrySuccess  *stats.Counter `stat:"upstream_rq_retry_success"`
	UpstreamRqRetryOverflow *stats.Counter `stat:"upstream_rq_retry_overflow"`
	UpstreamRqRxReset       *stats.Counter `stat:"upstream_rq_rx_reset"`
	UpstreamRqTxReset       *stats.Counter `stat:"upstream_rq_tx_reset"`
	UpstreamCxProtocolError *stats.Counter `stat:"upstream_cx_protocol_error"`

	scope *stats.Scope
	codes [600]atomic.Pointer[stats.Counter] // upstream_rq_<code>, created on first use
	class [6]atomic.Pointer[stats.Counter]   // upstream_rq_<N>xx, created on first use
}

var (
	counterType = reflect.TypeFor[*stats.Counter]()
	gaugeType   = reflect.TypeFor[*stats.Gauge]()
)

// NewStats fills every tagged field from scope (normally cluster.<name>). Asking the store twice
// returns the same stats, so clusters rebuilt on a reload keep counting.
func NewStats(scope *stats.Scope) *Stats {
	s := &Stats{scope: scope}
	v := reflect.ValueOf(s).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		name, ok := f.Tag.Lookup("stat")
		switch {
		case !ok:
		case f.Type == counterType:
			v.Field(i).Set(reflect.ValueOf(scope.Counter(name)))
		case f.Type == gaugeType:
			v.Field(i).Set(reflect.ValueOf(scope.Gauge(name)))
		}
	}
	return s
}

// CountResponse counts one upstream response: upstream_rq_<code>, upstream_rq_<N>xx and
// upstream_rq_completed. Codes outside 100..599 only count as completed.
func (s *Stats) CountResponse(code int) {
	s.UpstreamRqCompleted.Inc()
	if code < 100 || code > 599 {
		return
	}
	s.lazy(&s.codes[code], code, "").Inc()
	s.lazy(&s.class[code/100], code/100, "xx").Inc()
}

// lazy returns the counter upstream_rq_<n><suffix>, creating it once. Two goroutines racing here
// get the same counter from the store, so either Store is fine.
func (s *Stats) lazy(p *atomic.Pointer[stats.Counter], n int, suffix string) *stats.Counter {
	if c := p.Load(); c != nil {
		return c
	}
	c := s.scope.Counter("upstream_rq_" + strconv.Itoa(n) + suffix)
	p.Store(c)
	return c
}
