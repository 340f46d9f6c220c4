package signal

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/bits"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// Frames are checked with JSON v2's tokenizer (jsontext, from
// github.com/go-json-experiment/json, what encoding/json/v2 is without
// GOEXPERIMENT): the relay forwards the client's bytes, so it must refuse
// exactly what the peer's strict kotlinx decoder would choke on. jsontext
// refuses malformed JSON, bad escapes, control characters in strings and
// trailing data; the walk below refuses unknown, wrongly cased, duplicate
// and missing members and values of the wrong type. Each document (the
// frame, then its data) is read in one pass of one reused jsontext.Decoder,
// without reflection, and the values the relay keeps are sliced out of the
// decoder's input where no escape forces a copy, so checking a frame
// allocates nothing once warm. A frame laid out as the app writes it needs
// no walk at all: only its data string is checked, while it is unquoted
// (appLayout).

// kind is what a frame's "id" names.
type kind uint8

const (
	kindInvalid kind = iota // not a protocol frame at all
	kindUnknown             // a well-formed frame whose id icebox does not know
	kindInit
	kindIceServers
	kindOffer
	kindAnswer
	kindCandidates
	kindError
	kindPresence // server to opted-in clients only
	numKinds
)

func (k kind) String() string {
	switch k {
	case kindInit:
		return "WsInit"
	case kindIceServers:
		return "WsIceServers"
	case kindOffer:
		return "WsSDPOffer"
	case kindAnswer:
		return "WsSDPAnswer"
	case kindCandidates:
		return "WsIceCandidates"
	case kindError:
		return "WsError"
	case kindPresence:
		return "WsPresence"
	case kindUnknown:
		return "unknown"
	}
	return "invalid"
}

func kindOf(id []byte) kind {
	for k := kindInit; k < numKinds; k++ {
		if string(id) == k.String() {
			return k
		}
	}
	return kindUnknown
}

// Limits on the values the relay keeps; longer ones are refused as malformed.
const (
	maxControllerID = 256
	maxToken        = 512
)

// frame is what the relay needs from a decoded client frame. The byte
// slices point into the frameDecoder that decoded it and are valid until
// it decodes the next frame.
type frame struct {
	kind         kind
	controllerID []byte // nil when absent, null or ""
	token        []byte // WsInit only; nil when absent
	presence     bool   // WsInit only: the client opts in to WsPresence
}

// tokenOptions skip the checks the walk makes cheaper itself.
// decodeOuter refuses a frame that is not valid UTF-8, and unquoting a
// valid frame's data gives valid UTF-8, so AllowInvalidUTF8 only lets an
// escaped lone surrogate through, which unquoting turns into U+FFFD as
// encoding/json does. Each walked object keeps a bit per known member,
// which refuses a duplicate (and an unknown name refuses the frame), so
// jsontext need not keep a set of the names it has seen.
var tokenOptions = []jsontext.Options{
	jsontext.AllowInvalidUTF8(true),
	jsontext.AllowDuplicateNames(true),
}

// The members of the frame and of each kind's data, as docs/protocol.md
// gives them; the index of a name is its bit in a walked object's set.
var (
	frameMembers     = []string{"id", "data"}
	initMembers      = []string{"controllerId", "token", "presence"}
	sdpMembers       = []string{"type", "sdp", "controllerId"}
	candidateMembers = []string{"controllerId", "iceCandidates"}
	candidateEntry   = []string{"candidate", "sdpMLineIndex", "sdpMid"}
)

// frameDecoder checks client frames; one per reader at a time, reused.
type frameDecoder struct {
	dec jsontext.Decoder
	// in is what dec reads: the frame, then its data. From a bytes.Buffer
	// jsontext reads in place, without copying or marking the bytes it
	// has returned (it does both for other readers), so the values
	// ReadValue returns stay valid as long as in's bytes do.
	in    bytes.Buffer
	data  []byte // the unescaped data, which dec reads second
	name  []byte // an unescaped name or id, when it holds escapes
	room  []byte // the unescaped controllerId, when it holds escapes
	token []byte // the unescaped token, when it holds escapes
}

// decode checks msg against docs/protocol.md: a JSON object with exactly
// "id" and "data", data a string holding the kind's JSON document with
// only the keys the app knows. code is 0 when msg is acceptable,
// errBadFrame or errUnknownKind otherwise.
func (d *frameDecoder) decode(msg []byte) (f frame, code errCode) {
	var ok bool
	if f.kind, ok = d.decodeOuter(msg); !ok {
		return frame{}, errBadFrame
	}
	switch f.kind {
	case kindUnknown:
		return f, errUnknownKind
	case kindInit:
		if len(d.data) == 0 { // what the app sends
			return f, 0
		}
		return f, okCode(d.decodeInit(&f))
	case kindOffer, kindAnswer:
		return f, okCode(d.decodeSDP(&f))
	case kindCandidates:
		return f, okCode(d.decodeCandidates(&f))
	}
	// WsIceServers, WsError and WsPresence are refused whatever they hold.
	return f, 0
}

func okCode(ok bool) errCode {
	if ok {
		return 0
	}
	return errBadFrame
}

// decodeOuter reads {"id": "...", "data": "..."} from msg, in either
// order, and leaves data unescaped in d.data. A frame laid out as the app
// and the page write it is read without the walk (appLayout); the walk
// reads any other layout the same way, and is what the decoder's tests
// hold appLayout to.
func (d *frameDecoder) decodeOuter(msg []byte) (k kind, ok bool) {
	if k := d.appLayout(msg); k != kindInvalid {
		return k, true
	}
	d.start(msg)
	seen, ok := d.object(frameMembers, func(i int) bool {
		v, err := d.dec.ReadValue()
		if err != nil || v.Kind() != '"' {
			return false
		}
		if i == 0 {
			k = kindOf(d.unescaped(v))
			return true
		}
		// jsontext has checked the string: unquoting cannot fail but on
		// an escaped lone surrogate, which it has replaced by U+FFFD.
		d.data = unquoteChecked(d.data[:0], v)
		return true
	})
	// msg must be valid UTF-8, which the walk does not check
	// (tokenOptions): that is checked last, once.
	return k, ok && seen == 0b11 && d.end() && utf8.Valid(msg)
}

// appLayout reads msg when it is laid out as kotlinx and JSON.stringify
// write a frame: {"id":"<a kind icebox knows>","data": then a string that
// ends the frame. Only that string needs checking (unquoteLast), in the
// one pass that unquotes it, so a frame costs little more than its data.
// It returns kindInvalid for anything else (another order or spacing, an
// unknown or escaped id, a bad string), which the walk then reads.
func (d *frameDecoder) appLayout(msg []byte) kind {
	rest, ok := bytes.CutPrefix(msg, []byte(`{"id":"`))
	if !ok {
		return kindInvalid
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return kindInvalid
	}
	k := kindOf(rest[:end])
	if k == kindUnknown {
		return kindInvalid
	}
	if rest, ok = bytes.CutPrefix(rest[end:], []byte(`","data"`)); !ok || !d.unquoteLast(rest) {
		return kindInvalid
	}
	return k
}

// unquoteLast unquotes into d.data the value of the member whose name dec
// has just read, when that value is a string that ends the document: rest,
// what follows the name, is ':', the string, then '}', with whitespace
// anywhere between. appendUnquoted checks and unquotes in one pass and
// fails on anything but exactly one valid string, so a '"' inside cannot
// end the string early. It reports whether it did; otherwise (another
// member follows, trailing data, a bad string, or an escaped lone
// surrogate, which jsontext.AppendUnquote, appendUnquoted's path for \u
// escapes, reports as an error, allocated) the walk reads the member as
// before, and refuses or accepts the frame as it always did.
func (d *frameDecoder) unquoteLast(rest []byte) bool {
	rest = bytes.Trim(rest, jsonSpace)
	if len(rest) < 2 || rest[0] != ':' || rest[len(rest)-1] != '}' {
		return false
	}
	var ok bool
	d.data, ok = appendUnquoted(d.data[:0], bytes.Trim(rest[1:len(rest)-1], jsonSpace))
	return ok
}

// appendUnquoted appends the value of s, which must be exactly one JSON
// string, quotes included, to dst, and reports whether s is one. It keeps
// jsontext.AppendUnquote's contract (FuzzAppendUnquoted holds the two to
// the same answers) at less of its cost on a frame's data, where an escape
// stands every few dozen bytes: AppendUnquote tests each byte four times,
// while this tests eight bytes at once (wordSpecial) and copies the runs
// between escapes whole. A \u escape, rare in frames and the one with
// subtle cases (a lone surrogate), is left to AppendUnquote.
func appendUnquoted(dst, s []byte) ([]byte, bool) {
	start, whole := len(dst), s
	if len(s) < 2 || s[0] != '"' {
		return dst, false
	}
	var high uint64 // the high bits of the bytes copied: non-zero means UTF-8 to check
	i, from := 1, 1 // s[from:i] is plain text not yet appended
	for {
		for i+8 <= len(s) {
			x := binary.LittleEndian.Uint64(s[i:])
			if m := wordSpecial(x); m != 0 {
				k := bits.TrailingZeros64(m) &^ 7 // bit offset of the first special byte
				high |= x & (1<<k - 1)
				i += k / 8
				break
			}
			high |= x
			i += 8
		}
		if i == len(s) {
			return dst, false // no closing quote
		}
		switch c := s[i]; {
		case c == '"':
			dst = append(dst, s[from:i]...)
			return dst, i == len(s)-1 && (high&highBits == 0 || utf8.Valid(whole))
		case c < 0x20:
			return dst, false
		case c != '\\':
			high |= uint64(c)
			i++
			continue
		}
		if i+1 == len(s) {
			return dst, false
		}
		dst = append(dst, s[from:i]...)
		c, ok := escapeMeaning(s[i+1])
		switch {
		case s[i+1] == 'u':
			out, err := jsontext.AppendUnquote(dst[:start], whole)
			return out, err == nil
		case !ok:
			return dst, false
		}
		dst = append(dst, c)
		i += 2
		from = i
	}
}

const (
	lowBits  = 0x0101010101010101
	highBits = 0x8080808080808080
)

// wordSpecial marks, by its high bit, each byte of the eight in x that
// cannot stand as itself in a JSON string: '"', '\\' and control
// characters. A byte b is zero exactly when (b-1) &^ b has its high bit
// set; bytes above a marked one may be marked wrongly (a borrow), so only
// the lowest mark is exact, which is the one appendUnquoted reads.
func wordSpecial(x uint64) uint64 {
	quote, backslash := x^('"'*lowBits), x^('\\'*lowBits)
	return ((quote-lowBits)&^quote | (backslash-lowBits)&^backslash | (x-0x20*lowBits)&^x) & highBits
}

// jsonSpace is what JSON counts as whitespace.
const jsonSpace = " \t\r\n"

// decodeInit reads {"controllerId": "...", "token": "...", "presence": true},
// all optional.
func (d *frameDecoder) decodeInit(f *frame) bool {
	d.start(d.data)
	_, ok := d.object(initMembers, func(i int) (ok bool) {
		switch i {
		case 0:
			f.controllerID, d.room, ok = d.keptString(d.room, maxControllerID)
		case 1:
			f.token, d.token, ok = d.keptString(d.token, maxToken)
		default:
			f.presence, ok = d.boolean()
		}
		return ok
	})
	return ok && d.end()
}

// decodeSDP reads {"type": "...", "sdp": "...", "controllerId": "..."};
// controllerId may be absent or null (answers from the device carry none).
func (d *frameDecoder) decodeSDP(f *frame) bool {
	d.start(d.data)
	seen, ok := d.object(sdpMembers, func(i int) (ok bool) {
		if i < 2 {
			return d.isString()
		}
		f.controllerID, d.room, ok = d.keptString(d.room, maxControllerID)
		return ok
	})
	return ok && seen&0b11 == 0b11 && d.end()
}

// decodeCandidates reads {"controllerId": "...", "iceCandidates": [...]}.
func (d *frameDecoder) decodeCandidates(f *frame) bool {
	d.start(d.data)
	seen, ok := d.object(candidateMembers, func(i int) (ok bool) {
		if i == 1 {
			return d.candidateList()
		}
		f.controllerID, d.room, ok = d.keptString(d.room, maxControllerID)
		return ok
	})
	return ok && seen&0b10 != 0 && d.end()
}

// candidateList reads [{"candidate":"...","sdpMLineIndex":0,"sdpMid":"0"}, ...],
// a list, never null; sdpMid may be absent or null.
func (d *frameDecoder) candidateList() bool {
	if tok, err := d.dec.ReadToken(); err != nil || tok.Kind() != '[' {
		return false
	}
	for d.dec.PeekKind() != ']' {
		seen, ok := d.object(candidateEntry, func(i int) bool {
			switch i {
			case 0:
				return d.isString()
			case 1:
				return d.mLineIndex()
			}
			return d.isNullOrString()
		})
		if !ok || seen&0b11 != 0b11 {
			return false
		}
	}
	_, err := d.dec.ReadToken() // the ']', or an error PeekKind met
	return err == nil
}

// start points the decoder at doc.
func (d *frameDecoder) start(doc []byte) {
	d.in = *bytes.NewBuffer(doc)
	d.dec.Reset(&d.in, tokenOptions...)
}

// end reports whether the document has ended after its one value.
func (d *frameDecoder) end() bool {
	_, err := d.dec.ReadToken()
	return err == io.EOF
}

// object reads an object whose member names must be among names, each at
// most once. member reads the value of names[i]; object returns the set
// of the members seen.
func (d *frameDecoder) object(names []string, member func(i int) bool) (seen uint, ok bool) {
	if tok, err := d.dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return 0, false
	}
	for d.dec.PeekKind() != '}' {
		// The name is a string: jsontext refuses anything else there.
		v, err := d.dec.ReadValue()
		if err != nil {
			return 0, false
		}
		name, i := d.unescaped(v), 0
		for i < len(names) && string(name) != names[i] {
			i++
		}
		if i == len(names) || seen&(1<<i) != 0 || !member(i) {
			return 0, false
		}
		seen |= 1 << i
	}
	_, err := d.dec.ReadToken() // the '}', or an error PeekKind met
	return seen, err == nil
}

// unescaped is the value of the string v, which jsontext has checked:
// sliced from v when it holds no escape, else unquoted into d.name.
func (d *frameDecoder) unescaped(v jsontext.Value) []byte {
	s := v[1 : len(v)-1]
	if bytes.IndexByte(s, '\\') < 0 {
		return s
	}
	d.name = unquoteChecked(d.name[:0], v)
	return d.name
}

func (d *frameDecoder) isString() bool {
	v, err := d.dec.ReadValue()
	return err == nil && v.Kind() == '"'
}

func (d *frameDecoder) isNullOrString() bool {
	v, err := d.dec.ReadValue()
	return err == nil && (v.Kind() == '"' || v.Kind() == 'n')
}

// boolean reads true, false or null (false).
func (d *frameDecoder) boolean() (v, ok bool) {
	t, err := d.dec.ReadValue()
	if err != nil {
		return false, false
	}
	switch t.Kind() {
	case 't':
		return true, true
	case 'f', 'n':
		return false, true
	}
	return false, false
}

// mLineIndex reads an m-line index: a JSON integer from 0 to 65535,
// written without sign, fraction or exponent, as kotlinx wants for an Int
// (jsontext has already refused a leading zero).
func (d *frameDecoder) mLineIndex() bool {
	v, err := d.dec.ReadValue()
	if err != nil || v.Kind() != '0' {
		return false
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
		if n = n*10 + int(c-'0'); n > 65535 {
			return false
		}
	}
	return true
}

// keptString reads null or a string of at most max bytes; "" and null
// give a nil val. The value is sliced from the data when it holds no
// escape, else unquoted into buf, which is returned for reuse.
func (d *frameDecoder) keptString(buf []byte, max int) (val, _ []byte, ok bool) {
	v, err := d.dec.ReadValue()
	if err != nil {
		return nil, buf, false
	}
	switch v.Kind() {
	case 'n':
		return nil, buf, true
	case '"':
	default:
		return nil, buf, false
	}
	val = v[1 : len(v)-1]
	if bytes.IndexByte(val, '\\') >= 0 {
		buf = unquoteChecked(buf[:0], v)
		val = buf
	}
	if len(val) > max {
		return nil, buf, false
	}
	if len(val) == 0 {
		return nil, buf, true
	}
	return val, buf, true
}

// unquoteChecked appends the value of the string v, which jsontext has
// checked, to dst. jsontext.AppendUnquote checks again, rune by rune,
// what ReadValue proved; here runs between escapes are copied whole, which
// halves what unquoting a frame's data costs (an SDP has two escaped
// backslashes on every line). A \u escape, rare in frames and the one
// with a subtle case (a lone surrogate becomes U+FFFD), is left to
// AppendUnquote. FuzzUnquoteChecked holds the two to the same result.
func unquoteChecked(dst []byte, v jsontext.Value) []byte {
	start, s := len(dst), v[1:len(v)-1]
	for {
		i := bytes.IndexByte(s, '\\')
		if i < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:i]...)
		// A checked string does not end in a backslash, and its escapes
		// are valid.
		if s[i+1] == 'u' {
			dst, _ = jsontext.AppendUnquote(dst[:start], v)
			return dst
		}
		c, _ := escapeMeaning(s[i+1])
		dst = append(dst, c)
		s = s[i+2:]
	}
}

// escapeMeaning is the byte a two-character escape \c stands for; ok is
// false for \u, which takes four hex digits more, and for what is no
// escape.
func escapeMeaning(c byte) (_ byte, ok bool) {
	switch c {
	case '"', '\\', '/':
		return c, true
	case 'b':
		return '\b', true
	case 'f':
		return '\f', true
	case 'n':
		return '\n', true
	case 'r':
		return '\r', true
	case 't':
		return '\t', true
	}
	return 0, false
}
