package http1

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

const afterBody = "NEXT MESSAGE"

func TestBodyReader(t *testing.T) {
	tests := []struct {
		name       string
		in         string // the body's wire bytes; afterBody is appended
		length     int64
		chunked    bool
		untilClose bool
		want       string
		trailers   []string
	}{
		{name: "length", in: "hello", length: 5, want: "hello"},
		{name: "zero length", in: "", length: 0, want: ""},
		{name: "chunked", in: "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n", chunked: true, want: "hello, world"},
		{name: "chunked upper-case hex and leading zeros", in: "000000000000000A\r\n0123456789\r\n00\r\n\r\n", chunked: true, want: "0123456789"},
		{
			name:    "chunk extensions are skipped",
			in:      "5;name=value\r\nhello\r\n1; a=\"q s\";b\r\n!\r\n0;last\r\n\r\n",
			chunked: true, want: "hello!",
		},
		{
			name:    "trailers",
			in:      "3\r\nabc\r\n0\r\nX-Checksum: 123\r\nServer-Timing:  db;dur=5 \r\nx-checksum: 456\r\n\r\n",
			chunked: true, want: "abc",
			trailers: []string{"x-checksum", "123", "server-timing", "db;dur=5", "x-checksum", "456"},
		},
		{name: "empty chunked body", in: "0\r\n\r\n", chunked: true, want: ""},
	}
	for _, tt := range tests {
		for _, small := range []bool{false, true} {
			name := tt.name
			if small {
				name += "/one byte at a time"
			}
			t.Run(name, func(t *testing.T) {
				var r io.Reader = strings.NewReader(tt.in + afterBody)
				if small {
					r = iotest.OneByteReader(r)
				}
				br := bufio.NewReaderSize(r, 32) // smaller than the trailer section
				body := NewBodyReader(br, tt.length, tt.chunked, tt.untilClose)
				got, err := readAllSmall(body, small)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if string(got) != tt.want {
					t.Errorf("body %q, want %q", got, tt.want)
				}
				if n, err := body.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Errorf("Read after the end = %d, %v", n, err)
				}
				if gotT := pairsOf(body.Trailers()); !reflect.DeepEqual(gotT, tt.trailers) {
					t.Errorf("trailers %q, want %q", gotT, tt.trailers)
				}
				if rest, _ := io.ReadAll(br); string(rest) != afterBody {
					t.Errorf("left %q, want %q: the body reader read past its body", rest, afterBody)
				}
			})
		}
	}
}

// readAllSmall is io.ReadAll, or a loop of 1-byte reads that exercises every state change.
func readAllSmall(r io.Reader, small bool) ([]byte, error) {
	if !small {
		return io.ReadAll(r)
	}
	var out []byte
	p := make([]byte, 1)
	for {
		n, err := r.Read(p)
		out = append(out, p[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func TestBodyReaderUntilClose(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("everything until EOF"))
	got, err := io.ReadAll(NewBodyReader(br, -1, false, true))
	if err != nil || string(got) != "everything until EOF" {
		t.Errorf("got %q, %v", got, err)
	}
}

func TestBodyReaderErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		length  int64
		chunked bool
		want    error // nil: any *ParseError with status 400
	}{
		{name: "length, short", in: "hel", length: 5, want: io.ErrUnexpectedEOF},
		{name: "chunked, short data", in: "5\r\nhel", chunked: true, want: io.ErrUnexpectedEOF},
		{name: "chunked, no last chunk", in: "5\r\nhello\r\n", chunked: true, want: io.ErrUnexpectedEOF},
		{name: "chunked, no end of trailers", in: "0\r\nX: y\r\n", chunked: true, want: io.ErrUnexpectedEOF},
		{name: "chunked, nothing after last chunk", in: "0\r\n", chunked: true, want: io.ErrUnexpectedEOF},
		{name: "empty size", in: "\r\nhello\r\n0\r\n\r\n", chunked: true},
		{name: "non-hex size", in: "g\r\n", chunked: true},
		{name: "negative size", in: "-5\r\nhello\r\n0\r\n\r\n", chunked: true},
		{name: "0x prefix", in: "0x5\r\nhello\r\n0\r\n\r\n", chunked: true},
		{name: "leading whitespace", in: " 5\r\nhello\r\n0\r\n\r\n", chunked: true},
		{name: "trailing whitespace", in: "5 \r\nhello\r\n0\r\n\r\n", chunked: true},
		{name: "size overflow", in: "8000000000000000\r\n", chunked: true},
		{name: "size overflow, many digits", in: "fffffffffffffffff\r\n", chunked: true},
		{name: "17 digits with leading zeros", in: "00000000000000005\r\nhello\r\n0\r\n\r\n", chunked: true},
		{name: "whitespace before extension", in: "5 ;a\r\nhello\r\n0\r\n\r\n", chunked: true},
		{name: "bare LF after size", in: "5\nhello\r\n0\r\n\r\n", chunked: true},
		{name: "control byte in extension", in: "5;a\x01\r\nhello\r\n0\r\n\r\n", chunked: true},
		{name: "bare CR in extension", in: "5;a\rb\r\nhello\r\n0\r\n\r\n", chunked: true},
		{name: "data longer than size", in: "5\r\nhello!\r\n0\r\n\r\n", chunked: true},
		{name: "LF only after data", in: "5\r\nhello\n0\r\n\r\n", chunked: true},
		{name: "bad trailer name", in: "0\r\nX Y: z\r\n\r\n", chunked: true},
		{name: "obs-fold in trailers", in: "0\r\nX: y\r\n z\r\n\r\n", chunked: true},
		{name: "NUL in trailer value", in: "0\r\nX: \x00\r\n\r\n", chunked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := NewBodyReader(bufio.NewReader(strings.NewReader(tt.in)), tt.length, tt.chunked, false)
			_, err := io.ReadAll(body)
			if tt.want != nil {
				if err != tt.want {
					t.Fatalf("err = %v, want %v", err, tt.want)
				}
			} else {
				var pe *ParseError
				if !errors.As(err, &pe) || pe.Status != 400 {
					t.Fatalf("err = %v, want a 400 ParseError", err)
				}
			}
			if _, again := body.Read(make([]byte, 8)); again != err {
				t.Errorf("error is not sticky: %v then %v", err, again)
			}
		})
	}
}

func TestBodyReaderTrailerLimit(t *testing.T) {
	in := "0\r\nX-Big: " + strings.Repeat("a", 100) + "\r\n\r\n"
	body := NewBodyReader(bufio.NewReader(strings.NewReader(in)), 0, true, false)
	body.SetLimits(Limits{MaxHeaderBytes: 50})
	var pe *ParseError
	if _, err := io.ReadAll(body); !errors.As(err, &pe) || pe.Status != 431 {
		t.Errorf("err = %v, want 431", err)
	}
	body = NewBodyReader(bufio.NewReader(strings.NewReader(in)), 0, true, false)
	if _, err := io.ReadAll(body); err != nil {
		t.Errorf("default limit: %v", err)
	}
}

func TestBodyReaderZeroLengthRead(t *testing.T) {
	body := NewBodyReader(bufio.NewReader(strings.NewReader("abc")), 3, false, false)
	if n, err := body.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v", n, err)
	}
}
