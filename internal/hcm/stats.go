package hcm

import (
	"strconv"
	"strings"
	"sync"

	"github.com/switchyard-proxy/switchyard/internal/config"
	"github.com/switchyard-proxy/switchyard/internal/stats"
)

// Stats are the connection manager's counters under http.<stat_prefix>., with Envoy's names and
// meanings, plus per-upgrade-type tunnel stats Envoy does not have.
type Stats struct {
	CxTotal, CxHTTP1Total, CxUpgradesTotal, CxDestroy, CxProtocolError *stats.Counter
	CxIdleTimeout, CxMaxRequestsReached, CxRxBytes, CxTxBytes          *stats.Counter
	CxActive, CxHTTP1Active, CxUpgradesActive, RqActive                *stats.Gauge
	CxHTTP2Total, RqHTTP2Total, CxSSLTotal                             *stats.Counter
	CxHTTP2Active                                                      *stats.Gauge

	RqTotal, RqHTTP1Total, RqCompleted, RqWsOnNonWsRoute, RqIdleTimeout      *stats.Counter
	RqTimeout, RqHeaderTimeout, RqMaxDurationReached, RqTooLarge, RsTooLarge *stats.Counter
	RqResponseBeforeComplete, RqOverloadClose                                *stats.Counter
	rqClass                                                                  [6]*stats.Counter // [1..5] = downstream_rq_Nxx

	scope    *stats.Scope
	mu       sync.Mutex
	upgrades map[string]*UpgradeStats
}

// UpgradeStats are per-upgrade-type stats under http.<prefix>.upgrades.<type>. Envoy bundles all
// types together in downstream_cx_upgrades_*; these tell WebSocket apart from other upgrades.
type UpgradeStats struct {
	Accepted    *stats.Counter // passed the upgrade_configs gate
	Rejected    *stats.Counter // answered 403 by the gate
	Established *stats.Counter // the upstream switched protocols (101)
	Active      *stats.Gauge   // tunnels open now
	BytesUp     *stats.Counter // tunnel payload client → upstream (bytes_to_upstream)
	BytesDown   *stats.Counter // tunnel payload upstream → client (bytes_to_downstream)
}

// unconfiguredType is the stats bucket for upgrade tokens no config mentions, so a client cannot
// create stats without bound by inventing tokens.
const unconfiguredType = "unconfigured"

func newStats(st *stats.Store, cfg *config.HCM) *Stats {
	sc := st.Scope("http." + cfg.StatPrefix)
	s := &Stats{
		CxTotal: sc.Counter("downstream_cx_total"), CxHTTP1Total: sc.Counter("downstream_cx_http1_total"),
		CxUpgradesTotal: sc.Counter("downstream_cx_upgrades_total"), CxDestroy: sc.Counter("downstream_cx_destroy"),
		CxProtocolError: sc.Counter("downstream_cx_protocol_error"), CxIdleTimeout: sc.Counter("downstream_cx_idle_timeout"),
		CxMaxRequestsReached: sc.Counter("downstream_cx_max_requests_reached"),
		CxRxBytes:            sc.Counter("downstream_cx_rx_bytes_total"), CxTxBytes: sc.Counter("downstream_cx_tx_bytes_total"),
		CxActive: sc.Gauge("downstream_cx_active"), CxHTTP1Active: sc.Gauge("downstream_cx_http1_active"),
		CxHTTP2Total: sc.Counter("downstream_cx_http2_total"), CxHTTP2Active: sc.Gauge("downstream_cx_http2_active"),
		RqHTTP2Total: sc.Counter("downstream_rq_http2_total"), CxSSLTotal: sc.Counter("downstream_cx_ssl_total"),
		CxUpgradesActive: sc.Gauge("downstream_cx_upgrades_active"), RqActive: sc.Gauge("downstream_rq_active"),
		RqTotal: sc.Counter("downstream_rq_total"), RqHTTP1Total: sc.Counter("downstream_rq_http1_total"),
		RqCompleted: sc.Counter("downstream_rq_completed"), RqWsOnNonWsRoute: sc.Counter("downstream_rq_ws_on_non_ws_route"),
		RqIdleTimeout: sc.Counter("downstream_rq_idle_timeout"), RqTimeout: sc.Counter("downstream_rq_timeout"),
		RqHeaderTimeout: sc.Counter("downstream_rq_header_timeout"), RqMaxDurationReached: sc.Counter("downstream_rq_max_duration_reached"),
		RqTooLarge: sc.Counter("downstream_rq_too_large"), RsTooLarge: sc.Counter("rs_too_large"),
		RqResponseBeforeComplete: sc.Counter("downstream_rq_response_before_rq_complete"),
		RqOverloadClose:          sc.Counter("downstream_rq_overload_close"),
		scope:                    sc,
		upgrades:                 map[string]*UpgradeStats{},
	}
	for i := 1; i <= 5; i++ {
		s.rqClass[i] = sc.Counter("downstream_rq_" + strconv.Itoa(i) + "xx")
	}
	// Create the per-type stats of every configured type up front so they read 0, not absent.
	for _, u := range cfg.Upgrades {
		s.upgrades[u.Type] = s.newUpgradeStats(u.Type)
	}
	if cfg.Routes != nil {
		for _, vh := range cfg.Routes.VirtualHosts {
			for _, r := range vh.Routes {
				if r.Action != nil {
					for t := range r.Action.Upgrades {
						if s.upgrades[t] == nil {
							s.upgrades[t] = s.newUpgradeStats(t)
						}
					}
				}
			}
		}
	}
	return s
}

func (s *Stats) newUpgradeStats(t string) *UpgradeStats {
	sc := s.scope.Scope("upgrades." + statSafe(t))
	return &UpgradeStats{
		Accepted: sc.Counter("accepted"), Rejected: sc.Counter("rejected"), Established: sc.Counter("established"),
		Active: sc.Gauge("active"), BytesUp: sc.Counter("bytes_to_upstream"), BytesDown: sc.Counter("bytes_to_downstream"),
	}
}

// Upgrade returns the stats for a lower-cased upgrade type; types no config names share one bucket.
func (s *Stats) Upgrade(t string) *UpgradeStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.upgrades[t]; u != nil {
		return u
	}
	u := s.upgrades[unconfiguredType]
	if u == nil {
		u = s.newUpgradeStats(unconfiguredType)
		s.upgrades[unconfiguredType] = u
	}
	return u
}

// countResponse charges downstream_rq_Nxx and downstream_rq_completed for the final status sent.
func (s *Stats) countResponse(code int) {
	if c := code / 100; c >= 1 && c <= 5 {
		s.rqClass[c].Inc()
	}
	s.RqCompleted.Inc()
}

// statSafe keeps a stat name segment free of dots and spaces.
func statSafe(t string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r == ' ' || r == ':' {
			return '_'
		}
		return r
	}, t)
}
