package stats

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestPrometheusName(t *testing.T) {
	tests := []struct {
		stat   string
		name   string
		labels []Label
	}{
		{"http.ingress.downstream_cx_upgrades_total", "envoy_http_downstream_cx_upgrades_total",
			[]Label{{"envoy_http_conn_manager_prefix", "ingress"}}},
		{"http.ingress.downstream_rq_2xx", "envoy_http_downstream_rq_xx",
			[]Label{{"envoy_response_code_class", "2"}, {"envoy_http_conn_manager_prefix", "ingress"}}},
		{"cluster.web.upstream_cx_total", "envoy_cluster_upstream_cx_total",
			[]Label{{"envoy_cluster_name", "web"}}},
		{"cluster.web.upstream_rq_101", "envoy_cluster_upstream_rq",
			[]Label{{"envoy_response_code", "101"}, {"envoy_cluster_name", "web"}}},
		{"cluster.web.upstream_rq_5xx", "envoy_cluster_upstream_rq_xx",
			[]Label{{"envoy_response_code_class", "5"}, {"envoy_cluster_name", "web"}}},
		// Not a response code: four digits.
		{"cluster.web.upstream_rq_1010", "envoy_cluster_upstream_rq_1010",
			[]Label{{"envoy_cluster_name", "web"}}},
		{"listener.127.0.0.1_8080.downstream_cx_total", "envoy_listener_downstream_cx_total",
			[]Label{{"envoy_listener_address", "127.0.0.1_8080"}}},
		{"listener.0.0.0.0_10000.no_filter_chain_match", "envoy_listener_no_filter_chain_match",
			[]Label{{"envoy_listener_address", "0.0.0.0_10000"}}},
		{"listener.[__1]_8080.downstream_cx_active", "envoy_listener_downstream_cx_active",
			[]Label{{"envoy_listener_address", "[__1]_8080"}}},
		{"listener.127.0.0.1_8080.http.ingress.downstream_rq_2xx", "envoy_listener_http_downstream_rq_xx",
			[]Label{{"envoy_response_code_class", "2"}, {"envoy_http_conn_manager_prefix", "ingress"},
				{"envoy_listener_address", "127.0.0.1_8080"}}},
		// Envoy's admin listener is not an address: no tag.
		{"listener.admin.downstream_cx_total", "envoy_listener_admin_downstream_cx_total", nil},
		{"http.ingress.upgrades.websocket.downstream_cx_upgrades_total", "envoy_http_upgrades_downstream_cx_upgrades_total",
			[]Label{{"upgrade_type", "websocket"}, {"envoy_http_conn_manager_prefix", "ingress"}}},
		{"http.ingress.upgrades.CONNECT.upstream_rq_101", "envoy_http_upgrades_upstream_rq",
			[]Label{{"envoy_response_code", "101"}, {"upgrade_type", "CONNECT"},
				{"envoy_http_conn_manager_prefix", "ingress"}}},
		{"server.uptime", "envoy_server_uptime", nil},
		{"weird-name.with:chars", "envoy_weird_name_with_chars", nil},
	}
	for _, tt := range tests {
		t.Run(tt.stat, func(t *testing.T) {
			name, labels := PrometheusName(tt.stat)
			if name != tt.name || !reflect.DeepEqual(labels, tt.labels) {
				t.Errorf("PrometheusName(%q) = %q %v, want %q %v", tt.stat, name, labels, tt.name, tt.labels)
			}
		})
	}
}

var testSamples = []Sample{
	{Name: "cluster.a.upstream_rq_200", Kind: KindCounter, Value: 3},
	{Name: "cluster.a.upstream_rq_active", Kind: KindGauge, Value: 0},
	{Name: "cluster.b.upstream_rq_200", Kind: KindCounter, Value: 0},
	{Name: "http.ingress.downstream_rq_2xx", Kind: KindCounter, Value: 7},
	{Name: "server.live", Kind: KindGauge, Value: 1},
}

func TestWriteTextAndJSON(t *testing.T) {
	tests := []struct {
		name     string
		filter   string
		usedOnly bool
		want     []string // "name: value"
	}{
		{"all", "", false, []string{"cluster.a.upstream_rq_200: 3", "cluster.a.upstream_rq_active: 0",
			"cluster.b.upstream_rq_200: 0", "http.ingress.downstream_rq_2xx: 7", "server.live: 1"}},
		{"usedonly", "", true, []string{"cluster.a.upstream_rq_200: 3", "http.ingress.downstream_rq_2xx: 7",
			"server.live: 1"}},
		{"filter is a search, not a full match", `upstream_rq_2`, false, []string{"cluster.a.upstream_rq_200: 3",
			"cluster.b.upstream_rq_200: 0"}},
		{"filter and usedonly", `^cluster\.`, true, []string{"cluster.a.upstream_rq_200: 3"}},
		{"nothing matches", `nope`, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var re *regexp.Regexp
			if tt.filter != "" {
				re = regexp.MustCompile(tt.filter)
			}
			var text bytes.Buffer
			if err := WriteText(&text, testSamples, re, tt.usedOnly); err != nil {
				t.Fatal(err)
			}
			want := ""
			for _, l := range tt.want {
				want += l + "\n"
			}
			if text.String() != want {
				t.Errorf("text:\n%s\nwant:\n%s", text.String(), want)
			}

			var js bytes.Buffer
			if err := WriteJSON(&js, testSamples, re, tt.usedOnly); err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Stats []struct {
					Name  string `json:"name"`
					Value *int64 `json:"value"`
				} `json:"stats"`
			}
			if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
				t.Fatalf("bad JSON %q: %v", js.String(), err)
			}
			if doc.Stats == nil {
				t.Fatalf("JSON %q has no stats array", js.String())
			}
			var got []string
			for _, s := range doc.Stats {
				if s.Value == nil {
					t.Fatalf("JSON %q: stat %s has no value", js.String(), s.Name)
				}
				got = append(got, fmt.Sprintf("%s: %d", s.Name, *s.Value))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("json = %v, want %v", got, tt.want)
			}
		})
	}
}

// promFamilyText is one parsed family of a Prometheus text exposition.
type promFamilyText struct {
	typ     string
	samples map[string]string // series ("name{labels}") → value
}

// parsePrometheus is a small strict parser of the text format: every sample must follow the TYPE
// line of its family, and a family may appear only once.
func parsePrometheus(t *testing.T, text string) map[string]*promFamilyText {
	t.Helper()
	sampleRE := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (-?[0-9]+)$`)
	fams := map[string]*promFamilyText{}
	var cur string
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(line, "# TYPE ") {
			f := strings.Fields(line)
			if len(f) != 4 || (f[3] != "counter" && f[3] != "gauge") {
				t.Fatalf("line %d: bad TYPE line %q", i+1, line)
			}
			if _, dup := fams[f[2]]; dup {
				t.Fatalf("line %d: family %s appears twice", i+1, f[2])
			}
			cur = f[2]
			fams[cur] = &promFamilyText{typ: f[3], samples: map[string]string{}}
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("line %d: malformed sample %q", i+1, line)
		}
		if m[1] != cur {
			t.Fatalf("line %d: sample of %s outside its family (current %s)", i+1, m[1], cur)
		}
		series := m[1] + m[2]
		if _, dup := fams[cur].samples[series]; dup {
			t.Fatalf("line %d: duplicate series %s", i+1, series)
		}
		fams[cur].samples[series] = m[3]
	}
	return fams
}

func TestWritePrometheus(t *testing.T) {
	samples := append([]Sample{
		{Name: "cluster.a.upstream_rq_101", Kind: KindCounter, Value: 2},
		{Name: "cluster.a.upstream_rq_5xx", Kind: KindCounter, Value: 1},
		{Name: "cluster.b.upstream_rq_2xx", Kind: KindCounter, Value: 4},
		{Name: "http.in\"g\\ress.downstream_cx_active", Kind: KindGauge, Value: -1},
		{Name: "listener.127.0.0.1_8080.downstream_cx_total", Kind: KindCounter, Value: 9},
	}, testSamples...)
	var buf bytes.Buffer
	if err := WritePrometheus(&buf, samples); err != nil {
		t.Fatal(err)
	}
	fams := parsePrometheus(t, buf.String())

	want := map[string]struct {
		typ     string
		samples map[string]string
	}{
		"envoy_cluster_upstream_rq": {"counter", map[string]string{
			`envoy_cluster_upstream_rq{envoy_response_code="101",envoy_cluster_name="a"}`: "2",
			`envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="a"}`: "3",
			`envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="b"}`: "0",
		}},
		"envoy_cluster_upstream_rq_xx": {"counter", map[string]string{
			`envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="a"}`: "1",
			`envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="b"}`: "4",
		}},
		"envoy_cluster_upstream_rq_active": {"gauge", map[string]string{
			`envoy_cluster_upstream_rq_active{envoy_cluster_name="a"}`: "0",
		}},
		"envoy_http_downstream_cx_active": {"gauge", map[string]string{
			`envoy_http_downstream_cx_active{envoy_http_conn_manager_prefix="in\"g\\ress"}`: "-1",
		}},
		"envoy_http_downstream_rq_xx": {"counter", map[string]string{
			`envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress"}`: "7",
		}},
		"envoy_listener_downstream_cx_total": {"counter", map[string]string{
			`envoy_listener_downstream_cx_total{envoy_listener_address="127.0.0.1_8080"}`: "9",
		}},
		"envoy_server_live": {"gauge", map[string]string{"envoy_server_live": "1"}},
	}
	if len(fams) != len(want) {
		t.Errorf("got %d families, want %d:\n%s", len(fams), len(want), buf.String())
	}
	for name, w := range want {
		f := fams[name]
		if f == nil {
			t.Errorf("family %s missing:\n%s", name, buf.String())
			continue
		}
		if f.typ != w.typ || !reflect.DeepEqual(f.samples, w.samples) {
			t.Errorf("family %s = %s %v, want %s %v", name, f.typ, f.samples, w.typ, w.samples)
		}
	}

	// Families are sorted by name.
	var order []string
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.HasPrefix(line, "# TYPE ") {
			order = append(order, strings.Fields(line)[2])
		}
	}
	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Errorf("families out of order: %v", order)
		}
	}
}

func TestWritePrometheusEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := WritePrometheus(&buf, nil); err != nil || buf.Len() != 0 {
		t.Errorf("WritePrometheus(nil) = %q, %v; want empty", buf.String(), err)
	}
}
