package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// Message types between nodes.
const (
	msgHeartbeat  byte = 1 + iota // to <subject>.hb: this node is alive, under its boot id
	msgClaim                      // to <subject>.claim: who is in the room? payload: claim start(8) room subject
	msgClaimReply                 // to the claimer's reply subject: these members, that many claims
	msgJoined                     // to the room: member joined (or, after a partition, is still here); payload: join time(8)
	msgLeft                       // to the room: member left
	msgFrame                      // to the room: a frame member sent, payload byte for byte
)

// wireVersion changes whenever a message's layout does; nodes of another
// version are refused, not misread. 2: claim answers list pending claims
// and members carry their join time. 3: every message carries its
// sender's boot id and sequence number, and sent is always when it was
// sent (join and claim times moved to the payload).
const wireVersion = 3

// maxName bounds a node or member name: messages carry it behind a
// one-byte length.
const maxName = 255

// A message is
//
//	version(1) type(1) sent(8, Unix ns) boot(8) seq(8) len(node)(1) node len(member)(1) member kind(1) payload mac(32)
//
// where mac = HMAC-SHA256(secret, subject 0x00 everything before mac). The
// subject is in the MAC so that a frame of one pairing cannot be replayed
// into another; sent, boot and seq are, so that no message can be
// replayed at all (see freshLocked): boot is the sender's run (when it
// started or last reconnected, Unix ns: a later run has a greater one),
// seq counts the messages of that run from 1.
type message struct {
	typ     byte
	sent    int64
	boot    uint64
	seq     uint64
	node    string
	member  string
	kind    byte
	payload []byte
}

const macSize = sha256.Size

// headerSize is version, type, sent, boot and seq.
const headerSize = 2 + 8 + 8 + 8

var errBadMessage = errors.New("cluster: malformed or unauthenticated message")

// errOtherVersion is an authenticated message from a node that runs
// another icebox version with another message layout.
var errOtherVersion = errors.New("cluster: message from a node with another wire version")

// signer computes MACs; not safe for concurrent use. Its buffers make a
// MAC allocate nothing.
type signer struct {
	mac    hash.Hash
	prefix []byte        // subject 0x00
	want   [macSize]byte // decode's MAC of what it got
}

func newSigner(secret []byte) *signer { return &signer{mac: hmac.New(sha256.New, secret)} }

func (s *signer) sum(subject string, body []byte, out []byte) []byte {
	s.mac.Reset()
	s.prefix = append(append(s.prefix[:0], subject...), 0)
	s.mac.Write(s.prefix)
	s.mac.Write(body)
	return s.mac.Sum(out)
}

// encode appends m, signed for subject, to b.
func (s *signer) encode(b []byte, subject string, m *message) []byte {
	start := len(b)
	b = append(b, wireVersion, m.typ)
	b = binary.BigEndian.AppendUint64(b, uint64(m.sent))
	b = binary.BigEndian.AppendUint64(b, m.boot)
	b = binary.BigEndian.AppendUint64(b, m.seq)
	b = append(b, byte(len(m.node)))
	b = append(b, m.node...)
	b = append(b, byte(len(m.member)))
	b = append(b, m.member...)
	b = append(b, m.kind)
	b = append(b, m.payload...)
	return s.sum(subject, b[start:], b)
}

// decode checks the MAC of b, received on subject, and parses it. The
// returned message's payload aliases b.
func (s *signer) decode(subject string, b []byte) (message, error) {
	var m message
	if len(b) < headerSize+1+1+1+macSize {
		return m, errBadMessage
	}
	body, mac := b[:len(b)-macSize], b[len(b)-macSize:]
	if !hmac.Equal(s.sum(subject, body, s.want[:0]), mac) {
		return m, errBadMessage
	}
	if body[0] != wireVersion {
		return m, errOtherVersion
	}
	m.typ = body[1]
	m.sent = int64(binary.BigEndian.Uint64(body[2:10]))
	m.boot = binary.BigEndian.Uint64(body[10:18])
	m.seq = binary.BigEndian.Uint64(body[18:26])
	rest := body[headerSize:]
	var ok bool
	if m.node, rest, ok = str(rest); !ok {
		return m, errBadMessage
	}
	if m.member, rest, ok = str(rest); !ok || len(rest) < 1 {
		return m, errBadMessage
	}
	m.kind, m.payload = rest[0], rest[1:]
	return m, nil
}

func str(b []byte) (string, []byte, bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, false
	}
	n := int(b[0])
	return string(b[1 : 1+n]), b[1+n:], true
}

// A claim answer's payload is the number of members and claims (4 bytes,
// big endian), then an entry per member or claim, each followed by ",":
//
//	tag(1: '0' or '1' a member and its WsPresence opt-in, 'p' a claim) since(16 hex digits, Unix ns) id
func appendClaimEntry(p []byte, tag byte, since int64, id string) []byte {
	return append(append(fmt.Appendf(append(p, tag), "%016x", uint64(since)), id...), ',')
}

// parseClaimEntry parses one entry, without its ",".
func parseClaimEntry(e string) (tag byte, since int64, id string, ok bool) {
	if len(e) <= 17 || !strings.ContainsRune("01p", rune(e[0])) {
		return 0, 0, "", false
	}
	s, err := strconv.ParseUint(e[1:17], 16, 64)
	if err != nil {
		return 0, 0, "", false
	}
	return e[0], int64(s), e[17:], true
}
