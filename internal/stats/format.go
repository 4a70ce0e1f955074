package stats

import (
	"bufio"
	"encoding/json"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Select returns the samples whose name matches filter (nil keeps all), dropping unused ones when
// usedOnly is set, as Envoy's admin does for ?filter= and ?usedonly. Envoy calls a stat "used" once
// it has been written; we do not track that, so here "used" means value != 0 (a gauge that went up
// and back down to 0 counts as unused).
func Select(samples []Sample, filter *regexp.Regexp, usedOnly bool) []Sample {
	out := make([]Sample, 0, len(samples))
	for _, s := range samples {
		if usedOnly && s.Value == 0 {
			continue
		}
		if filter != nil && !filter.MatchString(s.Name) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// WriteText writes one "name: value" line per sample, the format of Envoy's /stats. filter and
// usedOnly behave as in Select.
func WriteText(w io.Writer, samples []Sample, filter *regexp.Regexp, usedOnly bool) error {
	bw := bufio.NewWriter(w)
	for _, s := range Select(samples, filter, usedOnly) {
		bw.WriteString(s.Name)
		bw.WriteString(": ")
		bw.WriteString(strconv.FormatInt(s.Value, 10))
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// jsonStat is one entry of Envoy's /stats?format=json.
type jsonStat struct {
	Name  string `json:"name"`
	Value int64  `json:"value"`
}

// WriteJSON writes the shape of Envoy's /stats?format=json: {"stats":[{"name":"...","value":N}]}.
// filter and usedOnly behave as in Select.
func WriteJSON(w io.Writer, samples []Sample, filter *regexp.Regexp, usedOnly bool) error {
	sel := Select(samples, filter, usedOnly)
	doc := struct {
		Stats []jsonStat `json:"stats"`
	}{Stats: make([]jsonStat, len(sel))}
	for i, s := range sel {
		doc.Stats[i] = jsonStat{Name: s.Name, Value: s.Value}
	}
	return json.NewEncoder(w).Encode(doc)
}

// Label is one Prometheus label of a stat after tag extraction.
type Label struct {
	Name, Value string
}

// tagRule is one of Envoy's default tag extractors (source/common/config/well_known_names.cc),
// rewritten for RE2 (no look-ahead). Rules match the full stat name; submatch 1 is the text cut out
// of the name and submatch 2, if present, the tag value (else submatch 1 is both).
type tagRule struct {
	label string
	re    *regexp.Regexp
}

// tagRules are the extractors for the stat families this proxy emits, in Envoy's order. The
// upgrade_type rule is ours: it tags "http.<prefix>.upgrades.<type>.<stat>".
var tagRules = []tagRule{
	// *_rq(_<response_code>)
	{"envoy_response_code", regexp.MustCompile(`_rq(_(\d{3}))$`)},
	// *_rq_(<response_code_class>)xx
	{"envoy_response_code_class", regexp.MustCompile(`_rq_(\d)xx$`)},
	// http.[<stat_prefix>.]upgrades.(<type>.)<stat>
	{"upgrade_type", regexp.MustCompile(`^http\.[^.]*\.upgrades(\.([^.]+))\.`)},
	// cluster.(<cluster_name>.)*
	{"envoy_cluster_name", regexp.MustCompile(`^cluster\.(([^.]*)\.)`)},
	// http.(<stat_prefix>.)* or listener.[<address>.]http.(<stat_prefix>.)*
	{"envoy_http_conn_manager_prefix", regexp.MustCompile(`^(?:listener\..*?\.)?http\.(([^.]*)\.)`)},
	// listener.(<address>.)*: an IPv4 "127.0.0.1_8080" or IPv6 "[__1]_8080" address, so
	// "listener.admin.*" keeps its name untagged, as in Envoy.
	{"envoy_listener_address", regexp.MustCompile(`^listener\.(((?:[_.0-9]*|[_\[\]a-fA-F0-9]*))\.)`)},
}

// PrometheusName applies Envoy's default tag extraction to a stat name and returns the Prometheus
// metric name ("envoy_" + the remaining name with every character outside [a-zA-Z0-9_] turned
// into "_") and the extracted labels, e.g. "cluster.web.upstream_rq_200" →
// envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="web"}.
func PrometheusName(stat string) (string, []Label) {
	var labels []Label
	var cuts [][2]int // byte ranges of stat to remove
	for _, r := range tagRules {
		m := r.re.FindStringSubmatchIndex(stat)
		if m == nil || m[2] < 0 {
			continue
		}
		vs, ve := m[2], m[3]
		if len(m) >= 6 && m[4] >= 0 {
			vs, ve = m[4], m[5]
		}
		labels = append(labels, Label{Name: r.label, Value: stat[vs:ve]})
		cuts = append(cuts, [2]int{m[2], m[3]})
	}
	keep := make([]bool, len(stat))
	for i := range keep {
		keep[i] = true
	}
	for _, c := range cuts {
		for i := c[0]; i < c[1]; i++ {
			keep[i] = false
		}
	}
	var b strings.Builder
	b.WriteString("envoy_")
	for i := 0; i < len(stat); i++ {
		if !keep[i] {
			continue
		}
		c := stat[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String(), labels
}

// promSeries is one sample of a metric family.
type promSeries struct {
	labels []Label
	value  int64
}

// promFamily is every sample sharing one metric name.
type promFamily struct {
	name   string
	kind   Kind
	series []promSeries
}

// WritePrometheus writes the Prometheus text exposition (format 0.0.4) of Envoy's
// /stats/prometheus: names from PrometheusName, one "# TYPE" line per metric family followed by all
// its samples, families sorted by name. If stats of both kinds land in one family (a naming bug),
// the family takes the kind of its first sample so the output stays well formed.
func WritePrometheus(w io.Writer, samples []Sample) error {
	byName := map[string]*promFamily{}
	var families []*promFamily
	for _, s := range samples {
		name, labels := PrometheusName(s.Name)
		f, ok := byName[name]
		if !ok {
			f = &promFamily{name: name, kind: s.Kind}
			byName[name] = f
			families = append(families, f)
		}
		f.series = append(f.series, promSeries{labels: labels, value: s.Value})
	}
	sort.Slice(families, func(i, j int) bool { return families[i].name < families[j].name })

	bw := bufio.NewWriter(w)
	for _, f := range families {
		typ := "counter"
		if f.kind == KindGauge {
			typ = "gauge"
		}
		bw.WriteString("# TYPE " + f.name + " " + typ + "\n")
		for _, s := range f.series {
			bw.WriteString(f.name)
			if len(s.labels) > 0 {
				bw.WriteByte('{')
				for i, l := range s.labels {
					if i > 0 {
						bw.WriteByte(',')
					}
					bw.WriteString(l.Name + `="` + escapeLabelValue(l.Value) + `"`)
				}
				bw.WriteByte('}')
			}
			bw.WriteByte(' ')
			bw.WriteString(strconv.FormatInt(s.value, 10))
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

// labelEscaper escapes a label value as the Prometheus text format requires.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabelValue(v string) string { return labelEscaper.Replace(v) }
