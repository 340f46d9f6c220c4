// Package stunwire reads and writes the bytes of STUN messages (RFC 8489,
// TURN's RFC 8656) where icebox works on them without pion's decoder, which
// would allocate: the header, the message type and the attributes. It is
// the one place the STUN front door and the TURN data plane take the wire
// constants from: pion/stun's where it exports them.
package stunwire

import "github.com/pion/stun/v3"

// The header: type, length, magic cookie, transaction ID.
const (
	HeaderSize  = 20
	MagicCookie = 0x2112A442
)

// Attribute types icebox reads or writes itself: pion/stun's, as the
// uint16 the wire carries.
const (
	AttrMappedAddress      = uint16(stun.AttrMappedAddress)
	AttrUsername           = uint16(stun.AttrUsername)
	AttrIntegrity          = uint16(stun.AttrMessageIntegrity)
	AttrErrorCode          = uint16(stun.AttrErrorCode)
	AttrChannelNumber      = uint16(stun.AttrChannelNumber)
	AttrLifetime           = uint16(stun.AttrLifetime)
	AttrXORPeerAddress     = uint16(stun.AttrXORPeerAddress)
	AttrData               = uint16(stun.AttrData)
	AttrRealm              = uint16(stun.AttrRealm)
	AttrNonce              = uint16(stun.AttrNonce)
	AttrRequestedFamily    = uint16(stun.AttrRequestedAddressFamily)
	AttrRequestedTransport = uint16(stun.AttrRequestedTransport)
	AttrXORMappedAddress   = uint16(stun.AttrXORMappedAddress)
	AttrFingerprint        = uint16(stun.AttrFingerprint)
)

// Address families, in XOR-*-ADDRESS and REQUESTED-ADDRESS-FAMILY alike.
const (
	FamilyIPv4 = 0x01
	FamilyIPv6 = 0x02
)

// The class bits of a message type (C1 and C0, RFC 8489 section 5).
const (
	ClassRequest    = 0x0000
	ClassIndication = 0x0010
	ClassSuccess    = 0x0100
	ClassError      = 0x0110
	classMask       = 0x0110
)

// Class is the class bits of message type typ: one of the Class constants.
func Class(typ uint16) uint16 { return typ & classMask }

// Method is the method of message type typ, its 12 bits gathered from
// around the class bits. pion's MessageType.ReadValue decodes the class
// too, a nanosecond more on every request parseRequest reads;
// TestTypeMatchesPion holds this to pion's for every type.
func Method(typ uint16) uint16 {
	return typ&0x000F | (typ&0x00E0)>>1 | (typ&0x3E00)>>2
}

// Type is the message type of method in class, Method's inverse.
func Type(method, class uint16) uint16 {
	c := stun.ClassRequest
	switch class {
	case ClassIndication:
		c = stun.ClassIndication
	case ClassSuccess:
		c = stun.ClassSuccessResponse
	case ClassError:
		c = stun.ClassErrorResponse
	}
	return stun.MessageType{Method: stun.Method(method), Class: c}.Value()
}
