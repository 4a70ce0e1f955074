package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"sigs.k8s.io/yaml"
)

// Type URLs of the built-in filters, used to fill in a missing typed_config.
const (
	routerURL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
	bufferURL = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
	hcmURL    = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)

// legacyFilters are the built-in filter names that Envoy before 1.22 accepted without a
// typed_config (envoyproxy/envoy#20919). We accept them with a warning. required names a field
// without which the default config is invalid, making the omission an error instead.
var legacyFilters = map[protoreflect.FullName]map[string]struct{ url, required string }{
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": {
		RouterFilter:   {url: routerURL},
		"envoy.router": {url: routerURL},
		BufferFilter:   {url: bufferURL, required: "max_request_bytes"},
		"envoy.buffer": {url: bufferURL, required: "max_request_bytes"},
	},
	"envoy.config.listener.v3.Filter": {
		"envoy.filters.network.http_connection_manager": {url: hcmURL},
		"envoy.http_connection_manager":                 {url: hcmURL},
	},
}

// decode turns one YAML or JSON document into a Bootstrap, returning warnings for the fix-ups.
func decode(name string, data []byte) (*bootstrapv3.Bootstrap, *source, []string, error) {
	src := &source{name: name}
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		src.root = scanYAML(data)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, src, nil, yamlError(name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, src, nil, &Error{File: name, Msg: err.Error()}
	}
	if tree == nil {
		tree = map[string]any{}
	}
	obj, ok := tree.(map[string]any)
	if !ok {
		return nil, src, nil, &Error{File: name, Msg: "the bootstrap must be a mapping"}
	}
	b := &bootstrapv3.Bootstrap{}
	e := &encoder{src: src, lines: []path{nil}}
	if err := e.message(obj, b.ProtoReflect().Descriptor(), nil); err != nil {
		return nil, src, nil, err
	}
	if err := protojson.Unmarshal(e.buf.Bytes(), b); err != nil {
		return nil, src, nil, e.protojsonError(err)
	}
	return b, src, e.warnings, nil
}

var yamlLineRE = regexp.MustCompile(`line (\d+): (.*)`)

func yamlError(name string, err error) error {
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: name, Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &Error{File: name, Msg: err.Error()}
}

// encoder re-encodes the generic JSON tree for protojson while walking it alongside the message
// descriptors. On the way it upper-cases enum names, fills in typed_config for legacy filters and
// rejects unknown fields with their path. It puts every object member and list element on its own
// output line and records that line's path, so that a protojson error "(line N:C)" maps back to a
// field path.
type encoder struct {
	src      *source
	buf      bytes.Buffer
	lines    []path // lines[i] is the path of output line i+1
	warnings []string
}

func (e *encoder) errorf(p path, format string, args ...any) error {
	file, line := locate([]*source{e.src}, p)
	return &Error{File: file, Line: line, Path: p.String(), Msg: fmt.Sprintf(format, args...)}
}

func (e *encoder) newline(p path) {
	e.buf.WriteByte('\n')
	e.lines = append(e.lines, p)
}

func (e *encoder) message(obj map[string]any, md protoreflect.MessageDescriptor, p path) error {
	if md.FullName() == "google.protobuf.Any" {
		return e.any(obj, p)
	}
	if md.FullName().Parent() == "google.protobuf" { // well-known types have their own JSON forms
		e.generic(obj, p)
		return nil
	}
	if err := e.legacyFilter(obj, md, p); err != nil {
		return err
	}
	e.buf.WriteByte('{')
	if err := e.members(obj, md, p, false); err != nil {
		return err
	}
	e.buf.WriteByte('}')
	return nil
}

// members writes the fields of obj; inAny means "@type" was already written by any().
func (e *encoder) members(obj map[string]any, md protoreflect.MessageDescriptor, p path, inAny bool) error {
	comma := inAny
	for _, k := range sortedKeys(obj) {
		if k == "@type" && inAny {
			continue
		}
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(k))
		}
		if fd == nil {
			return e.errorf(p.field(k), "unknown field %q in %s", k, md.FullName())
		}
		if comma {
			e.buf.WriteByte(',')
		}
		comma = true
		fp := p.field(string(fd.Name()))
		e.newline(fp)
		e.buf.WriteString(strconv.Quote(string(fd.Name())) + ":")
		if err := e.value(obj[k], fd, fp); err != nil {
			return err
		}
	}
	return nil
}

// any resolves "@type" and walks the object with the named message type.
func (e *encoder) any(obj map[string]any, p path) error {
	if len(obj) == 0 {
		e.buf.WriteString("{}")
		return nil
	}
	url, ok := obj["@type"].(string)
	if !ok {
		return e.errorf(p, `missing "@type"`)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if err != nil {
		return e.errorf(p.field("@type"), "type %q is unknown or not supported by switchyard", url)
	}
	md := mt.Descriptor()
	if md.FullName().Parent() == "google.protobuf" {
		e.generic(obj, p)
		return nil
	}
	if err := e.legacyFilter(obj, md, p); err != nil {
		return err
	}
	e.buf.WriteByte('{')
	e.newline(p.field("@type"))
	e.buf.WriteString(`"@type":` + strconv.Quote(url))
	if err := e.members(obj, md, p, true); err != nil {
		return err
	}
	e.buf.WriteByte('}')
	return nil
}

func (e *encoder) value(v any, fd protoreflect.FieldDescriptor, p path) error {
	switch {
	case fd.IsMap():
		m, ok := v.(map[string]any)
		if !ok {
			break
		}
		e.buf.WriteByte('{')
		for i, k := range sortedKeys(m) {
			if i > 0 {
				e.buf.WriteByte(',')
			}
			kp := p.key(k)
			e.newline(kp)
			e.buf.WriteString(strconv.Quote(k) + ":")
			if err := e.single(m[k], fd.MapValue(), kp); err != nil {
				return err
			}
		}
		e.buf.WriteByte('}')
		return nil
	case fd.IsList():
		a, ok := v.([]any)
		if !ok {
			break
		}
		e.buf.WriteByte('[')
		for i, x := range a {
			if i > 0 {
				e.buf.WriteByte(',')
			}
			ip := p.index(i)
			e.newline(ip)
			if err := e.single(x, fd, ip); err != nil {
				return err
			}
		}
		e.buf.WriteByte(']')
		return nil
	default:
		return e.single(v, fd, p)
	}
	e.generic(v, p) // wrong JSON kind: let protojson report it
	return nil
}

func (e *encoder) single(v any, fd protoreflect.FieldDescriptor, p path) error {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if obj, ok := v.(map[string]any); ok {
			return e.message(obj, fd.Message(), p)
		}
	case protoreflect.StringKind:
		if b, ok := v.(bool); ok {
			return e.errorf(p, "got the boolean %v where a string is expected; YAML 1.1 reads y, yes, on, n, no and off as booleans, so quote the value", b)
		}
	case protoreflect.EnumKind:
		// Envoy accepts enum names in any case (type: strict_dns); protojson does not.
		if s, ok := v.(string); ok && fd.Enum().Values().ByName(protoreflect.Name(s)) == nil {
			if up := strings.ToUpper(s); fd.Enum().Values().ByName(protoreflect.Name(up)) != nil {
				v = up
			}
		}
	}
	e.generic(v, p)
	return nil
}

func (e *encoder) generic(v any, p path) {
	switch x := v.(type) {
	case map[string]any:
		e.buf.WriteByte('{')
		for i, k := range sortedKeys(x) {
			if i > 0 {
				e.buf.WriteByte(',')
			}
			e.newline(p.field(k))
			e.buf.WriteString(strconv.Quote(k) + ":")
			e.generic(x[k], p.field(k))
		}
		e.buf.WriteByte('}')
	case []any:
		e.buf.WriteByte('[')
		for i, y := range x {
			if i > 0 {
				e.buf.WriteByte(',')
			}
			e.newline(p.index(i))
			e.generic(y, p.index(i))
		}
		e.buf.WriteByte(']')
	default:
		b, _ := json.Marshal(x) // string, json.Number, bool or nil: cannot fail
		e.buf.Write(b)
	}
}

// legacyFilter fills in the default typed_config of a built-in filter that has none.
func (e *encoder) legacyFilter(obj map[string]any, md protoreflect.MessageDescriptor, p path) error {
	known, ok := legacyFilters[md.FullName()]
	if !ok {
		return nil
	}
	for _, k := range []string{"typed_config", "typedConfig", "config_discovery", "configDiscovery"} {
		if _, ok := obj[k]; ok {
			return nil
		}
	}
	name, _ := obj["name"].(string)
	f, ok := known[name]
	switch {
	case !ok:
		return e.errorf(p, "filter %q has no typed_config", name)
	case f.required != "":
		return e.errorf(p, "filter %q has no typed_config, and its %s is required: add typed_config: {\"@type\": %s, %s: ...}",
			name, f.required, f.url, f.required)
	}
	obj["typed_config"] = map[string]any{"@type": f.url}
	file, line := locate([]*source{e.src}, p)
	w := &Error{File: file, Line: line, Path: p.String(), Msg: fmt.Sprintf(
		"filter %q has no typed_config; add typed_config: {\"@type\": %s} (Envoy 1.22 and later reject it, envoyproxy/envoy#20919)",
		name, f.url)}
	e.warnings = append(e.warnings, w.Error())
	return nil
}

var protojsonLineRE = regexp.MustCompile(`\(line (\d+):\d+\): (.*)`)

// protojsonError maps protojson's "(line N:C)" position in our encoding back to a field path.
func (e *encoder) protojsonError(err error) error {
	m := protojsonLineRE.FindStringSubmatch(err.Error())
	if m == nil {
		return e.errorf(nil, "%v", err)
	}
	var p path
	if n, _ := strconv.Atoi(m[1]); n >= 1 && n <= len(e.lines) {
		p = e.lines[n-1]
	}
	return e.errorf(p, "%s", m[2])
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
