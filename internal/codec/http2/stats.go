package http2

import (
	"reflect"

	"github.com/switchyard-proxy/switchyard/internal/stats"
)

// Stats are the HTTP/2 codec stats Envoy keeps under <scope>.http2. (http.<prefix>.http2. for a
// listener's connection manager, cluster.<name>.http2. for an upstream), with Envoy's names. The
// server and client codecs share them. Fields are filled by NewStats and never nil.
type Stats struct {
	RxMessagingError                *stats.Counter `stat:"rx_messaging_error"`
	RxReset                         *stats.Counter `stat:"rx_reset"`
	TxReset                         *stats.Counter `stat:"tx_reset"`
	HeaderOverflow                  *stats.Counter `stat:"header_overflow"`
	GoawaySent                      *stats.Counter `stat:"goaway_sent"`
	OutboundFlood                   *stats.Counter `stat:"outbound_flood"`
	OutboundControlFlood            *stats.Counter `stat:"outbound_control_flood"`
	InboundEmptyFramesFlood         *stats.Counter `stat:"inbound_empty_frames_flood"`
	InboundPriorityFramesFlood      *stats.Counter `stat:"inbound_priority_frames_flood"`
	InboundWindowUpdateFramesFlood  *stats.Counter `stat:"inbound_window_update_frames_flood"`
	TooManyHeaderFrames             *stats.Counter `stat:"too_many_header_frames"`
	Trailers                        *stats.Counter `stat:"trailers"`
	StreamRefusedErrors             *stats.Counter `stat:"stream_refused_errors"`
	KeepaliveTimeout                *stats.Counter `stat:"keepalive_timeout"`
	StreamsActive                   *stats.Gauge   `stat:"streams_active"`
	PendingSendBytes                *stats.Gauge   `stat:"pending_send_bytes"`
	DroppedHeadersWithUnderscores   *stats.Counter `stat:"dropped_headers_with_underscores"`
	RequestsRejectedWithUnderscores *stats.Counter `stat:"requests_rejected_with_underscores_in_headers"`
}

// NewStats fills every field from scope, which should end in "http2" (e.g.
// store.Scope("http.ingress.http2")). A nil scope gives stats that count into a private store.
func NewStats(scope *stats.Scope) *Stats {
	if scope == nil {
		scope = stats.NewStore().Scope("http2")
	}
	s := &Stats{}
	v := reflect.ValueOf(s).Elem()
	for i := range v.NumField() {
		name := v.Type().Field(i).Tag.Get("stat")
		switch v.Field(i).Interface().(type) {
		case *stats.Counter:
			v.Field(i).Set(reflect.ValueOf(scope.Counter(name)))
		case *stats.Gauge:
			v.Field(i).Set(reflect.ValueOf(scope.Gauge(name)))
		}
	}
	return s
}
