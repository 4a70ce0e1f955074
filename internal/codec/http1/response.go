package http1

import (
	"bufio"

	"github.com/switchyard-proxy/switchyard/headers"
)

// Response is a parsed upstream response head, translated into the proxy's header map.
type Response struct {
	// Status is the status code, 100 to 599.
	Status int
	// Reason is the reason phrase as received (possibly empty); the proxy does not forward it.
	Reason string
	// Headers holds :status (the three digits) first, then the fields in wire order.
	Headers *headers.Map
	// Minor is the HTTP/1 minor version: 0 or 1.
	Minor int
	// ContentLength is the declared length, -1 when absent. Whether there is a body at all
	// depends on the request: see ResponseBodyLength.
	ContentLength int64
	// Chunked reports an HTTP/1.1 Transfer-Encoding whose final coding is chunked. Codings
	// before it (say "gzip, chunked") are left in the Transfer-Encoding field.
	Chunked bool
	// KeepAlive reports whether the fields allow the connection to be reused after this
	// response (RFC 9112 §9.3); it is also false when Transfer-Encoding makes the body run
	// until close. A body without framing (ResponseBodyLength's untilClose, which depends on
	// the request method) ends the connection too, whatever KeepAlive says.
	KeepAlive bool
}

// ReadResponse reads one response head from br, leaving br positioned at the first byte after
// it (the body, or the upgraded protocol's first bytes after a 101). Errors are as for
// ReadRequest; the proxy turns a *ParseError here into a 502.
func ReadResponse(br *bufio.Reader, lim Limits) (*Response, error) {
	head, err := readHead(br, lim.maxHeaderBytes(), false)
	if err != nil {
		return nil, err
	}
	resp, perr := parseResponse(head)
	if perr != nil {
		return nil, perr
	}
	return resp, nil
}

func parseResponse(head string) (*Response, *ParseError) {
	fl := fieldLines{head: head}
	line := fl.line()
	// RFC 9112 §4: HTTP-version SP 3DIGIT SP [reason-phrase]. "HTTP/1.1 200" without the
	// second space is accepted, as §4 recommends.
	if len(line) < 12 || line[8] != ' ' {
		return nil, badRequest(detailCodecError)
	}
	minor, err := parseVersion(line[:8])
	if err != nil {
		return nil, err
	}
	code := line[9:12]
	if !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) {
		return nil, badRequest(detailCodecError)
	}
	status := int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if status < 100 || status > 599 {
		return nil, badRequest(detailCodecError)
	}
	reason := ""
	if rest := line[12:]; rest != "" {
		if rest[0] != ' ' {
			return nil, badRequest(detailCodecError)
		}
		reason = rest[1:]
		for i := 0; i < len(reason); i++ {
			if !valueChar[reason[i]] {
				return nil, badRequest(detailInvalidCharacters)
			}
		}
	}

	var arr [2 * 24]string
	pairs := append(arr[:0], headers.Status, code)
	f := framing{contentLength: -1}
	for {
		name, value, done, err := fl.next()
		if err != nil {
			return nil, err
		}
		if done {
			break
		}
		value, keep, err := f.field(name, value)
		if err != nil {
			return nil, err
		}
		if keep {
			pairs = append(pairs, name, value)
		}
	}

	resp := &Response{
		Status:        status,
		Reason:        reason,
		Minor:         minor,
		ContentLength: f.contentLength,
		KeepAlive:     f.keepAlive(minor),
	}
	if f.te {
		switch {
		case f.clValue != "":
			// RFC 9112 §6.3 rule 3: "ought to be handled as an error" (response splitting).
			return nil, badRequest(detailChunkedAndCL)
		case f.teEmpty || f.teChunked > 1:
			return nil, badRequest(detailInvalidTE)
		case minor == 1 && f.teLastChunked:
			resp.Chunked = true
		default:
			// RFC 9112 §6.3 rule 4 (final coding not chunked) and §6.1 (Transfer-Encoding in an
			// HTTP/1.0 message): the body runs until the connection closes.
			resp.KeepAlive = false
		}
	}
	resp.Headers = headers.New(pairs...)
	return resp, nil
}

// ResponseBodyLength says how to read the body of resp, a response to a requestMethod request
// (RFC 9112 §6.3): exactly length bytes (0 means no body), chunked, or untilClose. HEAD, 1xx,
// 204 and 304 responses have no body whatever their fields say, and neither has a 2xx to
// CONNECT (the tunnel starts after the head). length is -1 when chunked or untilClose.
func ResponseBodyLength(resp *Response, requestMethod string) (length int64, chunked, untilClose bool) {
	switch {
	case requestMethod == "HEAD", resp.Status/100 == 1, resp.Status == 204, resp.Status == 304:
		return 0, false, false
	case requestMethod == "CONNECT" && resp.Status/100 == 2:
		return 0, false, false
	case resp.Chunked:
		return -1, true, false
	case resp.Headers != nil && resp.Headers.Has("transfer-encoding"):
		return -1, false, true
	case resp.ContentLength >= 0:
		return resp.ContentLength, false, false
	}
	return -1, false, true
}
