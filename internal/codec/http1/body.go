package http1

import (
	"bufio"
	"io"

	"github.com/switchyard-proxy/switchyard/headers"
)

// BodyReader reads exactly one message body from a bufio.Reader: a fixed length, a chunked body
// (decoded, RFC 9112 §7.1), or everything until EOF. It never consumes a byte past the end of
// the body, so the next message (or nothing) is left in the bufio.Reader. It is not safe for
// concurrent use.
type BodyReader struct {
	br         *bufio.Reader
	chunked    bool
	untilClose bool
	remaining  int64 // bytes left: of the body (length mode) or of the current chunk
	state      chunkState
	err        error // sticky: io.EOF at the end, or the first error
	trailers   *headers.Map
	limit      int
}

type chunkState uint8

const (
	chunkSize chunkState = iota // expecting a chunk-size line
	chunkData                   // inside chunk data, remaining bytes left
	chunkCRLF                   // expecting the CRLF after chunk data
)

// NewBodyReader returns a reader for one body on br. With chunked set, length and untilClose are
// ignored; with untilClose set, the body is everything until br reports EOF; otherwise it is
// length bytes, and a length of 0 or -1 means no body (so a request's ContentLength of -1,
// "absent", can be passed as is: RFC 9112 §6.3 rule 7). A chunk-size line must fit in br's
// buffer. Trailers are bounded by the default Limits; see SetLimits.
func NewBodyReader(br *bufio.Reader, length int64, chunked, untilClose bool) *BodyReader {
	b := &BodyReader{br: br, chunked: chunked, untilClose: untilClose && !chunked, limit: DefaultMaxHeaderBytes}
	if !chunked && !untilClose {
		b.remaining = length
		if length <= 0 {
			b.err = io.EOF
		}
	}
	return b
}

// SetLimits applies lim to the trailer section of a chunked body, which is bounded like a head.
func (b *BodyReader) SetLimits(lim Limits) { b.limit = lim.maxHeaderBytes() }

// Trailers returns the trailer fields of a chunked body once Read has returned io.EOF; nil
// when there were none.
func (b *BodyReader) Trailers() *headers.Map { return b.trailers }

// Read implements io.Reader. It returns io.EOF at the end of the body, io.ErrUnexpectedEOF when
// the connection ends first, and a *ParseError for malformed chunked framing.
func (b *BodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch {
	case b.untilClose:
		n, err := b.br.Read(p)
		if err != nil {
			b.err = err
		}
		return n, err
	case !b.chunked:
		return b.readData(p)
	}
	for {
		switch b.state {
		case chunkData:
			n, err := b.readData(p)
			if b.remaining == 0 && err == nil {
				b.state = chunkCRLF
			}
			return n, err
		case chunkCRLF:
			crlf, err := b.br.Peek(2)
			if err != nil {
				return 0, b.fail(eofIsUnexpected(err))
			}
			if crlf[0] != '\r' || crlf[1] != '\n' {
				return 0, b.fail(badRequest(detailCodecError))
			}
			b.br.Discard(2)
			b.state = chunkSize
		case chunkSize:
			size, err := b.readChunkSize()
			if err != nil {
				return 0, b.fail(err)
			}
			if size == 0 {
				if err := b.readTrailers(); err != nil {
					return 0, b.fail(err)
				}
				b.err = io.EOF
				return 0, io.EOF
			}
			b.remaining = size
			b.state = chunkData
		}
	}
}

// readData reads up to b.remaining bytes of body data.
func (b *BodyReader) readData(p []byte) (int, error) {
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.br.Read(p)
	b.remaining -= int64(n)
	switch {
	case err != nil && b.remaining > 0:
		return n, b.fail(eofIsUnexpected(err))
	case b.remaining == 0 && !b.chunked:
		b.err = io.EOF // the next Read reports the end
	}
	return n, nil
}

// readChunkSize reads "chunk-size [chunk-ext] CRLF" (RFC 9112 §7.1, §7.1.1): at most 16 hex
// digits, then nothing or an extension starting with ';'. Extensions are skipped but must hold
// no control character other than HTAB. We refuse the BWS that §7.1.1 allows before ';', as
// net/http does: whitespace around a chunk size is where parsers disagree.
// The line must fit in br's buffer.
func (b *BodyReader) readChunkSize() (int64, error) {
	line, err := b.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return 0, badRequest(detailCodecError)
	}
	if err != nil {
		return 0, eofIsUnexpected(err)
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return 0, bareLF()
	}
	line = line[:len(line)-2]
	var size int64
	i := 0
	for ; i < len(line) && hexVal[line[i]] >= 0; i++ {
		if i == 16 {
			return 0, badRequest(detailCodecError) // too long to be an int64 we accept
		}
		size = size<<4 | int64(hexVal[line[i]])
	}
	if i == 0 || size < 0 || i < len(line) && line[i] != ';' {
		return 0, badRequest(detailCodecError)
	}
	for _, c := range line[i:] {
		if !valueChar[c] {
			return 0, badRequest(detailCodecError)
		}
	}
	return size, nil
}

// readTrailers reads the trailer section after the last chunk with the head's rules and limit.
func (b *BodyReader) readTrailers() error {
	section, err := readHead(b.br, b.limit, false)
	if err != nil {
		return eofIsUnexpected(err)
	}
	if section == "\r\n" {
		return nil
	}
	fl := fieldLines{head: section}
	var arr [2 * 8]string
	pairs := arr[:0]
	for {
		name, value, done, err := fl.next()
		if err != nil {
			return err
		}
		if done {
			break
		}
		pairs = append(pairs, name, value)
	}
	b.trailers = headers.New(pairs...)
	return nil
}

func (b *BodyReader) fail(err error) error {
	b.err = err
	return err
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
