package signal

import (
	"errors"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Frames are checked with JSON v2 (github.com/go-json-experiment/json, what
// encoding/json/v2 is without GOEXPERIMENT): the relay forwards the client's
// bytes, so it must refuse exactly what the peer's strict kotlinx decoder
// would choke on, and v2 refuses unknown or wrongly cased members and
// duplicate names by itself. Every decoded value lands in a frameDecoder
// that is reused, so checking a frame allocates nothing once warm.

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

// strictOptions make v2 refuse what kotlinx refuses. Invalid UTF-8 is
// refused before decoding (decode), so allowing it here only lets an
// escaped lone surrogate through as U+FFFD, as encoding/json does.
var strictOptions = []json.Options{
	json.RejectUnknownMembers(true),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(true),
}

// The frame and each kind's data, as docs/protocol.md gives them. Values
// the relay keeps are jsontext.Value, which v2 fills by copying into the
// existing capacity; the others only need checking.
type (
	wireFrame struct {
		ID   jsontext.Value `json:"id"`
		Data jsontext.Value `json:"data"`
	}
	wireInit struct {
		ControllerID jsontext.Value `json:"controllerId"`
		Token        jsontext.Value `json:"token"`
		Presence     bool           `json:"presence"` // null is false
	}
	wireSDP struct {
		Type         isString       `json:"type"`
		SDP          isString       `json:"sdp"`
		ControllerID jsontext.Value `json:"controllerId"` // answers from the device carry none
	}
	wireCandidates struct {
		ControllerID  jsontext.Value `json:"controllerId"`
		IceCandidates candidateList  `json:"iceCandidates"`
	}
	wireCandidate struct {
		Candidate     isString   `json:"candidate"`
		SDPMLineIndex mLineIndex `json:"sdpMLineIndex"`
		SDPMid        isString   `json:"sdpMid"` // may be absent or null
	}
)

var (
	errNotString = errors.New("not a string")
	errNotList   = errors.New("not a list")
	errNotIndex  = errors.New("not an integer from 0 to 65535")
)

// isString checks that a member is a JSON string (or, for optional ones,
// null) and keeps nothing of it; set reports a string.
type isString struct{ set bool }

func (s *isString) UnmarshalJSONFrom(d *jsontext.Decoder) error {
	switch d.PeekKind() {
	case 'n':
	case '"':
		s.set = true
	default:
		return errNotString
	}
	return d.SkipValue()
}

// mLineIndex is an m-line index: a JSON integer from 0 to 65535, written
// without fraction or exponent, as kotlinx wants for an Int. (v2 would
// take null for a uint16.)
type mLineIndex struct{ set bool }

func (m *mLineIndex) UnmarshalJSONFrom(d *jsontext.Decoder) error {
	v, err := d.ReadValue()
	if err != nil {
		return err
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return errNotIndex
		}
		if n = n*10 + int(c-'0'); n > 65535 {
			return errNotIndex
		}
	}
	m.set = len(v) > 0 // v2 has already refused a leading zero
	return nil
}

// candidateList is iceCandidates: a list, never null.
type candidateList struct {
	set  bool
	list []wireCandidate // reused: v2 zeroes each element before filling it
}

func (l *candidateList) UnmarshalJSONFrom(d *jsontext.Decoder) error {
	if d.PeekKind() != '[' {
		return errNotList
	}
	l.set = true
	if err := json.UnmarshalDecode(d, &l.list, strictOptions...); err != nil {
		return err
	}
	for _, c := range l.list {
		if !c.Candidate.set || !c.SDPMLineIndex.set {
			return errNotString
		}
	}
	return nil
}

// frameDecoder checks client frames; one per reader at a time, reused.
type frameDecoder struct {
	outer      wireFrame
	init       wireInit
	sdp        wireSDP
	candidates wireCandidates
	data       []byte // the unescaped data
	id         []byte // the unescaped id
	room       []byte // the unescaped controllerId
	token      []byte // the unescaped token
}

// decode checks msg against docs/protocol.md: a JSON object with exactly
// "id" and "data", data a string holding the kind's JSON document with
// only the keys the app knows. code is 0 when msg is acceptable,
// errBadFrame or errUnknownKind otherwise.
func (d *frameDecoder) decode(msg []byte) (f frame, code errCode) {
	if !utf8.Valid(msg) {
		return f, errBadFrame
	}
	d.outer.ID, d.outer.Data = d.outer.ID[:0], d.outer.Data[:0]
	if json.Unmarshal(msg, &d.outer, strictOptions...) != nil {
		return f, errBadFrame
	}
	var ok bool
	if d.id, ok = unquote(d.id, d.outer.ID); !ok {
		return f, errBadFrame
	}
	if d.data, ok = unquote(d.data, d.outer.Data); !ok {
		return f, errBadFrame
	}
	f.kind = kindOf(d.id)
	if f.kind == kindUnknown {
		return f, errUnknownKind
	}
	switch f.kind {
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

// decodeInit reads {"controllerId": "...", "token": "...", "presence": true},
// all optional.
func (d *frameDecoder) decodeInit(f *frame) bool {
	w := &d.init
	w.ControllerID, w.Token, w.Presence = w.ControllerID[:0], w.Token[:0], false
	if json.Unmarshal(d.data, w, strictOptions...) != nil {
		return false
	}
	var ok1, ok2 bool
	f.controllerID, d.room, ok1 = keptString(d.room, w.ControllerID, maxControllerID)
	f.token, d.token, ok2 = keptString(d.token, w.Token, maxToken)
	f.presence = w.Presence
	return ok1 && ok2
}

// decodeSDP reads {"type": "...", "sdp": "...", "controllerId": "..."}.
func (d *frameDecoder) decodeSDP(f *frame) bool {
	w := &d.sdp
	w.Type, w.SDP, w.ControllerID = isString{}, isString{}, w.ControllerID[:0]
	if json.Unmarshal(d.data, w, strictOptions...) != nil || !w.Type.set || !w.SDP.set {
		return false
	}
	var ok bool
	f.controllerID, d.room, ok = keptString(d.room, w.ControllerID, maxControllerID)
	return ok
}

// decodeCandidates reads {"controllerId": "...", "iceCandidates": [...]}.
func (d *frameDecoder) decodeCandidates(f *frame) bool {
	w := &d.candidates
	w.ControllerID, w.IceCandidates.set = w.ControllerID[:0], false
	if json.Unmarshal(d.data, w, strictOptions...) != nil || !w.IceCandidates.set {
		return false
	}
	var ok bool
	f.controllerID, d.room, ok = keptString(d.room, w.ControllerID, maxControllerID)
	return ok
}

// unquote puts the value of v, which v2 has decoded, in dst if it is a
// string. AppendUnquote's error is not checked: after a decode with
// strictOptions it can only report an escaped lone surrogate, which it has
// replaced by U+FFFD (the message itself is valid UTF-8).
func unquote(dst []byte, v jsontext.Value) ([]byte, bool) {
	if v.Kind() != '"' {
		return dst, false
	}
	dst, _ = jsontext.AppendUnquote(dst[:0], v)
	return dst, true
}

// keptString unquotes v, absent, null or a string of at most max bytes, into
// buf; "", null and absent give a nil val.
func keptString(buf []byte, v jsontext.Value, max int) (val, _ []byte, ok bool) {
	if len(v) == 0 || v.Kind() == 'n' {
		return nil, buf, true
	}
	buf, ok = unquote(buf, v)
	if !ok || len(buf) > max {
		return nil, buf, false
	}
	if len(buf) == 0 {
		return nil, buf, true
	}
	return buf, buf, true
}
