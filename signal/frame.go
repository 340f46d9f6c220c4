package signal

import (
	"unicode/utf16"
	"unicode/utf8"
)

// Frames are checked by hand rather than with encoding/json: the relay
// forwards the client's bytes, so it must refuse exactly what the peer's
// strict kotlinx decoder would choke on (unknown or wrongly cased keys,
// duplicates, invalid UTF-8), and the forwarding path should not allocate.

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
// slices point into the scratch buffer given to decodeFrame and are valid
// until it is reused.
type frame struct {
	kind         kind
	controllerID []byte // nil when absent, null or ""
	token        []byte // WsInit only; nil when absent
	presence     bool   // WsInit only: the client opts in to WsPresence
}

// decodeFrame checks msg against docs/protocol.md: a JSON object with
// exactly "id" and "data", data a string holding the kind's JSON document
// with only the keys the app knows. scratch receives the unescaped data and
// is returned, possibly grown, for the next call. code is 0 when msg is
// acceptable, errBadFrame or errUnknownKind otherwise.
func decodeFrame(msg, scratch []byte) (f frame, _ []byte, code errCode) {
	scratch = scratch[:0]
	if !utf8.Valid(msg) {
		return f, scratch, errBadFrame
	}
	s := scanner{b: msg}
	seen, ok := s.object([]string{"id", "data"}, func(i int) (ok bool) {
		if i == 0 {
			var ib [24]byte
			var id []byte
			id, ok = s.str(ib[:0], true)
			f.kind = kindOf(id)
			return ok
		}
		scratch, ok = s.str(scratch, true)
		return ok
	})
	if !ok || seen != 0b11 || !s.end() {
		return frame{}, scratch, errBadFrame
	}
	if f.kind == kindUnknown {
		return f, scratch, errUnknownKind
	}
	data := scratch
	switch f.kind {
	case kindInit:
		if len(data) == 0 { // what the app sends
			return f, scratch, 0
		}
		scratch, ok := decodeInit(data, &f, scratch)
		return f, scratch, okCode(ok)
	case kindOffer, kindAnswer:
		scratch, ok := decodeSDP(data, &f, scratch)
		return f, scratch, okCode(ok)
	case kindCandidates:
		scratch, ok := decodeCandidates(data, &f, scratch)
		return f, scratch, okCode(ok)
	}
	// WsIceServers, WsError and WsPresence are refused whatever they hold.
	return f, scratch, 0
}

func okCode(ok bool) errCode {
	if ok {
		return 0
	}
	return errBadFrame
}

// decodeInit reads {"controllerId": "...", "token": "...", "presence": true},
// all optional.
func decodeInit(data []byte, f *frame, scratch []byte) ([]byte, bool) {
	d := scanner{b: data}
	_, ok := d.object([]string{"controllerId", "token", "presence"}, func(i int) (ok bool) {
		switch i {
		case 0:
			f.controllerID, scratch, ok = d.keptString(scratch, maxControllerID)
		case 1:
			f.token, scratch, ok = d.keptString(scratch, maxToken)
		default:
			f.presence, ok = d.boolean()
		}
		return ok
	})
	return scratch, ok && d.end()
}

// decodeSDP reads {"type": "...", "sdp": "...", "controllerId": "..."};
// controllerId may be absent or null (answers from the device carry none).
func decodeSDP(data []byte, f *frame, scratch []byte) ([]byte, bool) {
	d := scanner{b: data}
	seen, ok := d.object([]string{"type", "sdp", "controllerId"}, func(i int) (ok bool) {
		if i < 2 {
			return d.skipString()
		}
		f.controllerID, scratch, ok = d.keptString(scratch, maxControllerID)
		return ok
	})
	return scratch, ok && seen&0b11 == 0b11 && d.end()
}

// decodeCandidates reads {"controllerId": "...", "iceCandidates": [...]}.
func decodeCandidates(data []byte, f *frame, scratch []byte) ([]byte, bool) {
	d := scanner{b: data}
	seen, ok := d.object([]string{"controllerId", "iceCandidates"}, func(i int) (ok bool) {
		if i == 1 {
			return d.candidateList()
		}
		f.controllerID, scratch, ok = d.keptString(scratch, maxControllerID)
		return ok
	})
	return scratch, ok && seen&0b10 != 0 && d.end()
}

// candidateList reads [{"candidate":"...","sdpMLineIndex":0,"sdpMid":"0"}, ...];
// sdpMid may be absent or null.
func (s *scanner) candidateList() bool {
	if !s.eat('[') {
		return false
	}
	if s.eat(']') {
		return true
	}
	for {
		seen, ok := s.object([]string{"candidate", "sdpMLineIndex", "sdpMid"}, func(i int) bool {
			switch i {
			case 0:
				return s.skipString()
			case 1:
				return s.smallUint()
			}
			return s.null() || s.skipString()
		})
		if !ok || seen&0b11 != 0b11 {
			return false
		}
		if s.eat(']') {
			return true
		}
		if !s.eat(',') {
			return false
		}
	}
}

// scanner reads JSON tokens from b without allocating.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// eat consumes c after optional whitespace.
func (s *scanner) eat(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (s *scanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// object reads an object whose keys must be among names, each at most
// once. member reads the value of names[i]; object returns a bit set of
// the keys seen.
func (s *scanner) object(names []string, member func(i int) bool) (seen uint, ok bool) {
	if !s.eat('{') {
		return 0, false
	}
	for first := true; ; first = false {
		var kb [16]byte
		key, done, ok := s.next(first, kb[:0])
		if !ok {
			return 0, false
		}
		if done {
			return seen, true
		}
		i := 0
		for i < len(names) && string(key) != names[i] {
			i++
		}
		if i == len(names) || seen&(1<<i) != 0 || !member(i) {
			return 0, false
		}
		seen |= 1 << i
	}
}

// next moves to the next member of an object whose '{' was eaten and
// returns its key, unescaped into kb; done reports the closing '}'.
func (s *scanner) next(first bool, kb []byte) (key []byte, done, ok bool) {
	if s.eat('}') {
		return nil, true, true
	}
	if !first && !s.eat(',') {
		return nil, false, false
	}
	key, ok = s.str(kb, true)
	if !ok || !s.eat(':') {
		return nil, false, false
	}
	return key, false, true
}

func (s *scanner) null() bool {
	s.ws()
	if len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// boolean reads true, false or null (false).
func (s *scanner) boolean() (v, ok bool) {
	if s.null() {
		return false, true
	}
	for _, w := range []string{"false", "true"} {
		if len(s.b)-s.i >= len(w) && string(s.b[s.i:s.i+len(w)]) == w {
			s.i += len(w)
			return w == "true", true
		}
	}
	return false, false
}

func (s *scanner) skipString() bool {
	_, ok := s.str(nil, false)
	return ok
}

// keptString reads a string or null, appending the string's value to dst
// and returning it as val; "" and null give a nil val.
func (s *scanner) keptString(dst []byte, max int) (val, _ []byte, ok bool) {
	if s.null() {
		return nil, dst, true
	}
	start := len(dst)
	dst, ok = s.str(dst, true)
	if !ok || len(dst)-start > max {
		return nil, dst, false
	}
	if len(dst) == start {
		return nil, dst, true
	}
	return dst[start:], dst, true
}

// smallUint reads a JSON integer from 0 to 65535 (an m-line index); a
// fraction or exponent is refused, as kotlinx refuses them for an Int.
func (s *scanner) smallUint() bool {
	s.ws()
	start, n := s.i, 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		n = n*10 + int(s.b[s.i]-'0')
		s.i++
		if n > 65535 {
			return false
		}
	}
	digits := s.i - start
	return digits > 0 && (digits == 1 || s.b[start] != '0')
}

// str reads a JSON string. When keep is set, its unescaped value is
// appended to dst. Lone surrogates become U+FFFD, as encoding/json does.
func (s *scanner) str(dst []byte, keep bool) ([]byte, bool) {
	if !s.eat('"') {
		return dst, false
	}
	b := s.b
	for i := s.i; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			s.i = i + 1
			return dst, true
		case c < 0x20:
			return dst, false
		case c != '\\':
			// Copy the run up to the next quote, escape or control byte.
			j := i + 1
			for j < len(b) && b[j] != '"' && b[j] != '\\' && b[j] >= 0x20 {
				j++
			}
			if keep {
				dst = append(dst, b[i:j]...)
			}
			i = j
			continue
		}
		if i+1 >= len(b) {
			return dst, false
		}
		e := b[i+1]
		i += 2
		var r rune
		switch e {
		case '"', '\\', '/':
			r = rune(e)
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		case 'u':
			var ok bool
			if r, ok = hex4(b, i); !ok {
				return dst, false
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if i+6 <= len(b) && b[i] == '\\' && b[i+1] == 'u' {
					r2, ok = hex4(b, i+2)
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
		default:
			return dst, false
		}
		if keep {
			dst = utf8.AppendRune(dst, r)
		}
	}
	return dst, false
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
