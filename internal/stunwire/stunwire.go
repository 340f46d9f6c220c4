// Package stunwire reads and writes the bytes of STUN messages (RFC 8489,
// TURN's RFC 8656) where icebox works on them without pion's decoder, which
// would allocate: the header, the message type and the attributes. It is
// the one copy of the wire constants the STUN front door and the TURN data
// plane share.
package stunwire

// The header: type, length, magic cookie, transaction ID.
const (
	HeaderSize  = 20
	MagicCookie = 0x2112A442
)

// Attribute types icebox reads or writes itself.
const (
	AttrMappedAddress      = 0x0001
	AttrUsername           = 0x0006
	AttrIntegrity          = 0x0008
	AttrErrorCode          = 0x0009
	AttrChannelNumber      = 0x000C
	AttrLifetime           = 0x000D
	AttrXORPeerAddress     = 0x0012
	AttrData               = 0x0013
	AttrRealm              = 0x0014
	AttrNonce              = 0x0015
	AttrRequestedFamily    = 0x0017
	AttrRequestedTransport = 0x0019
	AttrXORMappedAddress   = 0x0020
	AttrFingerprint        = 0x8028
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
// around the class bits.
func Method(typ uint16) uint16 {
	return typ&0x000F | (typ&0x00E0)>>1 | (typ&0x3E00)>>2
}

// Type is the message type of method in class, Method's inverse.
func Type(method, class uint16) uint16 {
	return method&0x000F | (method&0x0070)<<1 | (method&0x0F80)<<2 | class
}
