package stunsrv

import (
	"encoding/binary"
	"net/netip"

	"github.com/pion/stun/v3"

	"icebox/internal/stunwire"
)

// What the Binding fast path answers and how large its answer can be; the
// wire constants it shares with TURN are stunwire's, everything else is
// pion's business.
const (
	typeBindingRequest  = 0x0001
	typeBindingResponse = 0x0101

	// maxResponseSize is the largest answer we ever build: header,
	// XOR-MAPPED-ADDRESS for IPv6 (4+20) and FINGERPRINT (4+4).
	maxResponseSize = stunwire.HeaderSize + 24 + 8
)

// datagramKind is what a datagram on the STUN port turned out to be.
type datagramKind uint8

const (
	// kindMalformed is neither a well-formed STUN message nor ChannelData.
	kindMalformed datagramKind = iota
	// kindBinding is a well-formed STUN Binding request: answered here.
	kindBinding
	// kindIndication is a STUN indication of any method sent to us unasked; never answered.
	kindIndication
	// kindOtherSTUN is a well-formed STUN message of another method or class (TURN's).
	kindOtherSTUN
	// kindChannelData is a TURN ChannelData message (RFC 8656 §12.4).
	kindChannelData
)

func (k datagramKind) String() string {
	switch k {
	case kindBinding:
		return "binding"
	case kindIndication:
		return "indication"
	case kindOtherSTUN:
		return "other-stun"
	case kindChannelData:
		return "channel-data"
	default:
		return "malformed"
	}
}

// classify looks at one datagram (or one TCP frame) and says what it is,
// checking a Binding request fully: header, attribute layout and, when present,
// FINGERPRINT. It never allocates.
func classify(b []byte) datagramKind {
	if len(b) < 4 {
		return kindMalformed
	}
	if b[0]&0xC0 == 0x40 {
		// RFC 8656 narrowed channel numbers to 0x4000-0x4FFF, but RFC 5766
		// allowed up to 0x7FFF and pion, coturn and clients such as
		// turnutils_uclient still bind channels there.
		if int(binary.BigEndian.Uint16(b[2:4]))+4 > len(b) {
			return kindMalformed
		}
		return kindChannelData
	}
	if b[0]&0xC0 != 0 || len(b) < stunwire.HeaderSize {
		return kindMalformed
	}
	length := int(binary.BigEndian.Uint16(b[2:4]))
	if length%4 != 0 || stunwire.HeaderSize+length != len(b) {
		return kindMalformed
	}
	msgType := binary.BigEndian.Uint16(b[0:2])
	classic := binary.BigEndian.Uint32(b[4:8]) != stunwire.MagicCookie
	if !validAttributes(b, classic) {
		return kindMalformed
	}
	switch {
	case msgType == typeBindingRequest:
		return kindBinding
	case classic:
		// RFC 3489 had Binding and Shared Secret only; without the cookie
		// nothing else is STUN worth passing on.
		return kindMalformed
	case stunwire.Class(msgType) == stunwire.ClassIndication:
		return kindIndication
	default:
		return kindOtherSTUN
	}
}

// validAttributes walks the TLVs: each must fit, and a FINGERPRINT must be
// the last attribute and match. classify has checked that the attributes
// fill the message in 4-byte steps.
func validAttributes(b []byte, classic bool) bool {
	a := stunwire.AttrsOf(b, len(b))
	off, typ, n, ok := a.First()
	for ; ok; off, typ, n, ok = a.After(off, n) {
		if typ == stunwire.AttrFingerprint && !classic {
			end := off + 4 + n
			return n == 4 && end == len(b) && binary.BigEndian.Uint32(b[off+4:end]) == stun.FingerprintValue(b[:off])
		}
	}
	return !a.Truncated(off)
}

// hasFingerprint reports whether a request already checked by classify ends
// with FINGERPRINT.
func hasFingerprint(b []byte) bool {
	if len(b) < stunwire.HeaderSize+8 || binary.BigEndian.Uint32(b[4:8]) != stunwire.MagicCookie {
		return false
	}
	off := len(b) - 8
	return binary.BigEndian.Uint16(b[off:off+2]) == stunwire.AttrFingerprint &&
		binary.BigEndian.Uint16(b[off+2:off+4]) == 4
}

// AppendBindingResponse appends the success response to the Binding request
// req (as classified by classify) received from from. The answer carries only
// what RFC 8489 requires, XOR-MAPPED-ADDRESS (MAPPED-ADDRESS for RFC 3489
// clients) and FINGERPRINT when the request had one, so it is at most 32 bytes
// larger than the smallest request: too little to be worth abusing as an
// amplifier. With a dst of capacity maxResponseSize it does not allocate.
func AppendBindingResponse(dst, req []byte, from netip.AddrPort) []byte {
	classic := binary.BigEndian.Uint32(req[4:8]) != stunwire.MagicCookie
	start := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, typeBindingResponse)
	dst = append(dst, 0, 0) // length, filled in below
	dst = append(dst, req[4:stunwire.HeaderSize]...)

	addr := from.Addr().Unmap()
	family, addrLen := byte(stunwire.FamilyIPv4), 4
	if addr.Is6() {
		family, addrLen = stunwire.FamilyIPv6, 16
	}
	attrType := uint16(stunwire.AttrXORMappedAddress)
	if classic {
		attrType = stunwire.AttrMappedAddress
	}
	dst = binary.BigEndian.AppendUint16(dst, attrType)
	dst = binary.BigEndian.AppendUint16(dst, uint16(4+addrLen))
	dst = append(dst, 0, family)
	port := from.Port()
	if !classic {
		port ^= stunwire.MagicCookie >> 16
	}
	dst = binary.BigEndian.AppendUint16(dst, port)
	if addr.Is4() {
		a := addr.As4()
		dst = append(dst, a[:]...)
	} else {
		a := addr.As16()
		dst = append(dst, a[:]...)
	}
	if !classic {
		// XOR with the cookie, and for IPv6 the cookie then the transaction
		// ID: exactly the 16 bytes at req[4:20].
		x := dst[len(dst)-addrLen:]
		for i := range x {
			x[i] ^= req[4+i]
		}
	}

	if hasFingerprint(req) {
		// The CRC covers the header with the length already counting
		// FINGERPRINT itself, and nothing of the attribute.
		binary.BigEndian.PutUint16(dst[start+2:], uint16(len(dst)-start-stunwire.HeaderSize+8))
		crc := stun.FingerprintValue(dst[start:])
		dst = binary.BigEndian.AppendUint16(dst, stunwire.AttrFingerprint)
		dst = binary.BigEndian.AppendUint16(dst, 4)
		return binary.BigEndian.AppendUint32(dst, crc)
	}
	binary.BigEndian.PutUint16(dst[start+2:], uint16(len(dst)-start-stunwire.HeaderSize))
	return dst
}
