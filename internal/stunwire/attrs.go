package stunwire

import "encoding/binary"

// Attrs reads the attributes of a STUN message, for every reader of them
// in front of pion (turnsrv's parseRequest, forEachPeer, noteRequest,
// parseSend; stunsrv's Binding check): one copy of the bounds and padding
// arithmetic. It is a value and the position a plain int in the caller's
// loop, so that the compiler keeps the walk in registers: the data plane's
// parseSend stays at 0 allocs and as fast as its hand-written loop was.
//
//	a := stunwire.AttrsOf(b, end)
//	off, typ, n, ok := a.First()
//	for ; ok; off, typ, n, ok = a.After(off, n) {
//		... the value is b[off+4 : off+4+n] ...
//	}
//	if a.Truncated(off) { ... }
type Attrs struct {
	b   []byte
	end int // where the attributes end, at most len(b)
}

// AttrsOf reads b's attributes up to end: the end of the message as its
// header gives it, or less.
func AttrsOf(b []byte, end int) Attrs { return Attrs{b, end} }

// First is the first attribute: see at.
func (a Attrs) First() (off int, typ uint16, n int, ok bool) {
	return a.at(HeaderSize)
}

// After is the attribute after the one at off whose value is n bytes
// long (values are padded to 4 bytes).
func (a Attrs) After(off, n int) (int, uint16, int, bool) {
	return a.at(off + 4 + (n+3)&^3)
}

// at reads the header of the attribute at off: its type and the length
// of its value, which follows the 4-byte header. ok is false when none
// starts at off or its value runs past the end (see truncated). The value
// is not sliced here: most attributes are skipped, and a slice costs a
// bounds check.
func (a Attrs) at(off int) (_ int, typ uint16, n int, ok bool) {
	if off+4 > a.end {
		return off, 0, 0, false
	}
	n = int(binary.BigEndian.Uint16(a.b[off+2:]))
	if off+4+n > a.end {
		return off, 0, 0, false
	}
	return off, binary.BigEndian.Uint16(a.b[off:]), n, true
}

// Truncated reports whether a walk that ended at off stopped at an
// attribute running past the end: the message is malformed.
func (a Attrs) Truncated(off int) bool { return off+4 <= a.end }
