package turnsrv

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // MESSAGE-INTEGRITY is HMAC-SHA1 by definition.
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"

	"icebox/internal/credentials"
	"icebox/internal/stunwire"
)

// Every client message passes inspect before pion sees it. pion's
// AuthHandler can return one key per username, but a secret rotation needs
// several candidate keys tried against the message itself; pion also
// cannot cap a requested lifetime below an hour nor throttle a source. So
// icebox verifies MESSAGE-INTEGRITY here, in constant time, against every
// secret, and passes the key that matched to AuthHandler through authKeys.

// TURN wire constants only inspect needs (the shared ones are stunwire's).
const (
	protoUDP = 17 // REQUESTED-TRANSPORT's only value icebox relays

	integrityLen = 20

	methodAllocate         = 0x003
	methodRefresh          = 0x004
	methodCreatePermission = 0x008
	methodChannelBind      = 0x009
)

// authFields locates what inspect needs in a STUN request.
type authFields struct {
	method                 uint16
	username, realm, nonce []byte // the first of each before MESSAGE-INTEGRITY
	integrity              int    // offset of the MESSAGE-INTEGRITY attribute header; 0 if absent
	lifetime               int    // offset of LIFETIME's 4-byte value; 0 if absent
	fingerprint            int    // offset of the FINGERPRINT attribute header; 0 if absent
	// lateGrant: an XOR-PEER-ADDRESS or CHANNEL-NUMBER after
	// MESSAGE-INTEGRITY, which RFC 8489 §14.5 says to ignore and pion
	// grants; the data plane, which counts what an allocation holds,
	// learns only what the integrity covers.
	lateGrant bool
	// The first REQUESTED-TRANSPORT and REQUESTED-ADDRESS-FAMILY anywhere
	// in the message, as pion reads them: offset of the attribute header,
	// 0 if absent.
	transport, family int
}

// parseRequest returns the fields of b if it is a well-formed STUN request.
// Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are ignored,
// as RFC 5389 section 15.4 requires, but must still be well-formed, and a
// LIFETIME there makes the request malformed: pion does read attributes
// after MESSAGE-INTEGRITY, and would grant that lifetime unclamped.
// Anything else, ChannelData and indications included, is pion's business.
func parseRequest(b []byte) (f authFields, ok bool) {
	if len(b) < stunwire.HeaderSize || b[0]&0xC0 != 0 {
		return f, false
	}
	typ := binary.BigEndian.Uint16(b[0:2])
	if stunwire.Class(typ) != stunwire.ClassRequest || binary.BigEndian.Uint32(b[4:8]) != stunwire.MagicCookie {
		return f, false // not a request (class bits C1 C0 = 00), or not STUN
	}
	end := stunwire.HeaderSize + int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) || end%4 != 0 {
		return f, false
	}
	f.method = stunwire.Method(typ)
	a := stunwire.AttrsOf(b, end)
	off, at, n, ok := a.First()
	for ; ok; off, at, n, ok = a.After(off, n) {
		v := off + 4
		switch {
		case at == stunwire.AttrRequestedTransport && f.transport == 0:
			f.transport = off
		case at == stunwire.AttrRequestedFamily && f.family == 0:
			f.family = off
		}
		if f.integrity != 0 {
			switch {
			case at == stunwire.AttrLifetime:
				return f, false
			case at == stunwire.AttrXORPeerAddress, at == stunwire.AttrChannelNumber:
				f.lateGrant = true
			case at == stunwire.AttrFingerprint && n == 4 && off == f.integrity+4+integrityLen:
				f.fingerprint = off
			}
			continue
		}
		switch {
		case at == stunwire.AttrUsername && f.username == nil:
			f.username = b[v : v+n]
		case at == stunwire.AttrRealm && f.realm == nil:
			f.realm = b[v : v+n]
		case at == stunwire.AttrNonce && f.nonce == nil:
			f.nonce = b[v : v+n]
		case at == stunwire.AttrLifetime && n == 4 && f.lifetime == 0:
			f.lifetime = v
		case at == stunwire.AttrIntegrity:
			if n != integrityLen {
				return f, false // malformed; pion would check this one
			}
			f.integrity = off
		}
	}
	return f, !a.Truncated(off)
}

// integrityOK checks b's MESSAGE-INTEGRITY at off against key. The length
// field is set to end just after MESSAGE-INTEGRITY while hashing, as the
// sender did, and then restored.
func integrityOK(b []byte, off int, key []byte) bool {
	sum := integrity(b, off, key)
	return hmac.Equal(sum[:], b[off+4:off+4+integrityLen])
}

func integrity(b []byte, off int, key []byte) (sum [sha1.Size]byte) {
	saved := binary.BigEndian.Uint16(b[2:4])
	binary.BigEndian.PutUint16(b[2:4], uint16(off+4+integrityLen-stunwire.HeaderSize))
	mac := hmac.New(sha1.New, key)
	mac.Write(b[:off])
	mac.Sum(sum[:0])
	binary.BigEndian.PutUint16(b[2:4], saved)
	return sum
}

// resign recomputes MESSAGE-INTEGRITY and FINGERPRINT after icebox changed
// an attribute value in place (attribute sizes are unchanged).
func resign(b []byte, f authFields, key []byte) {
	sum := integrity(b, f.integrity, key)
	copy(b[f.integrity+4:], sum[:])
	if f.fingerprint != 0 {
		saved := binary.BigEndian.Uint16(b[2:4])
		binary.BigEndian.PutUint16(b[2:4], uint16(f.fingerprint+8-stunwire.HeaderSize))
		crc := stun.FingerprintValue(b[:f.fingerprint])
		binary.BigEndian.PutUint16(b[2:4], saved)
		binary.BigEndian.PutUint32(b[f.fingerprint+4:], crc)
	}
}

// transport is what inspect knows of the socket a message came on: where
// to send an answer of its own, and whose key slot to use.
type transport interface {
	reply(b []byte, to net.Addr)
	keyOwner() *keyOwner
}

// inspect checks one message from a client before pion handles it and
// reports whether pion should see it at all. b may be modified in place.
//
// Who pays for what: a request without a credential costs pion a 401 with
// a nonce, larger than the request, so such answers are rationed per
// source (answerBudget). A signed request is verified here; a failure gets
// a 401 of icebox's own, rationed the same way when it is larger than the
// request (a long realm). A request that verifies is never dropped, whatever else came from its
// address: UDP sources can be forged, so only failures on a stream (whose
// source the handshake proved) count toward quotas.auth_failures, and the
// block only silences that source's further failures. Requests pion would
// answer wrongly (a refused peer, a relay icebox does not offer, an
// allocation that no longer exists) get the right error from here.
func (s *Server) inspect(b []byte, from net.Addr, t transport) bool {
	f, ok := parseRequest(b)
	if !ok {
		return true // ChannelData, indications, or malformed: pion's business
	}
	switch f.method {
	case methodAllocate, methodRefresh, methodCreatePermission, methodChannelBind:
	default:
		// A Binding may carry short-term ICE credentials; it is not ours
		// to judge, nor a failure to count against its source.
		return true
	}
	lv := s.live.Load()
	now := time.Now()
	c := connIDOf(from)
	src := sourceKey(c.src.Addr())
	if f.integrity == 0 || f.nonce == nil || f.username == nil || f.realm == nil {
		// pion answers without asking for a key: 401 with a nonce, or 400.
		return s.mayAnswer(src, now, lv)
	}

	username := string(f.username)
	expiry, _, okUser := credentials.ParseUsername(username)
	var key []byte
	reason := ""
	switch {
	case !okUser:
		reason = authMalformed
	case string(f.realm) != s.realm:
		reason = authRealm
	case !now.Before(expiry):
		reason = authExpired
	case expiry.Sub(now) > lv.cfg.MaxTTL:
		reason = authTooLong
	default:
		for _, secret := range lv.secrets {
			if k := credentials.LongTermKey(secret, username, s.realm); integrityOK(b, f.integrity, k) {
				key = k
				break
			}
		}
		if key == nil {
			reason = authBadMAC
		}
	}
	if reason != "" {
		if c.stream && s.guard.blocked(src, now, lv.cfg.Quotas) {
			// Unanswered: answering costs as much as the HMACs it saves.
			s.metrics.authFailures[authThrottled].Inc()
			return false
		}
		s.authFailed(src, reason, now, lv, c.stream)
		// RFC 8489 section 9.2.4: 401, with the realm and the nonce the
		// client sent (pion judges the nonce on the next try). It is 44
		// bytes plus the padded realm and the nonce, the smallest signed
		// request 56 plus its own realm and nonce: with a realm over 12
		// bytes a forged request with an empty REALM gets back more than
		// it sent (172 bytes for 56 with a 127-byte realm). Such an answer
		// spends the source's ration of unsigned answers or is not sent.
		// One no larger than the request is not rationed: rationing those
		// would let forged failures use up the answers the forged
		// source's own unsigned requests need.
		// Sized before it is built: under a flood of forged failures most
		// such answers are dropped, and building one costs an allocation.
		if unauthorizedSize(len(s.realm), len(f.nonce)) > len(b) && !s.mayAnswer(src, now, lv) {
			return false
		}
		t.reply(errorResponse(b, f.method, codeUnauthorized, nil,
			answerAttr{stunwire.AttrRealm, []byte(s.realm)}, answerAttr{stunwire.AttrNonce, f.nonce}), from)
		return false
	}

	if code := s.wrongForPion(b, f, c, lv); code != 0 {
		t.reply(errorResponse(b, f.method, code, key), from) // smaller than the request
		return false
	}
	if f.lifetime != 0 && (f.method == methodAllocate || f.method == methodRefresh) {
		limit := uint32(lv.cfg.Quotas.MaxLifetime / time.Second)
		if binary.BigEndian.Uint32(b[f.lifetime:]) > limit {
			binary.BigEndian.PutUint32(b[f.lifetime:], limit)
			resign(b, f, key)
		}
	}
	s.keys.put(t.keyOwner(), authSlot{c, username}, key)
	return true
}

// STUN error codes icebox answers itself.
const (
	codeBadRequest        = 400
	codeUnauthorized      = 401
	codeForbidden         = 403
	codeAllocMismatch     = 437
	codeFamilyUnsupported = 440
	codeTransUnsupported  = 442
	codeFamilyMismatch    = 443
	codeNoCapacity        = 508 // Insufficient Capacity (RFC 8656 §9.2 and §12.2)
)

// wrongForPion returns the error code for an authenticated request pion
// would answer wrongly, or 0: a transport or address family icebox does
// not relay (pion grants UDP over IPv4 whatever was asked), an IPv6 peer
// for an IPv4 relay, a peer the
// policy refuses (pion answers without a code, or 401), an allocation
// that is gone, e.g. after a restart (pion does not answer, and the
// client waits instead of allocating again), or more peers or channels
// than one allocation may hold (pion grants any number).
func (s *Server) wrongForPion(b []byte, f authFields, c connID, lv *live) int {
	switch f.method {
	case methodAllocate:
		if f.transport != 0 && attrLen(b, f.transport) == 4 && b[f.transport+4] != protoUDP {
			return codeTransUnsupported
		}
		if f.family != 0 && attrLen(b, f.family) == 4 && b[f.family+4] == stunwire.FamilyIPv6 {
			return codeFamilyUnsupported
		}
		return 0
	case methodRefresh, methodCreatePermission, methodChannelBind:
		if !s.quotas.hasAllocation(c) {
			return codeAllocMismatch
		}
	}
	if f.method == methodCreatePermission || f.method == methodChannelBind {
		if f.lateGrant {
			return codeBadRequest
		}
		return s.peersWrongForPion(b, f.method == methodCreatePermission, c, lv)
	}
	return 0
}

// peersWrongForPion is wrongForPion for the peers of a CreatePermission
// (create) or ChannelBind. Every peer must be a whole address: pion also
// reads short ones, and the data plane, which counts what an allocation
// holds, does not. A CreatePermission may name maxPeersPerRequest peers,
// as many as the data plane learns from one answer; the allocation's
// caps (quotas.permissions, quotas.channels) refuse a request that would
// add a peer address or channel beyond them, while refreshing what the
// allocation holds is always answered. The caps apply to allocations the
// data plane mirrors, which is all but those it leaves to pion.
func (s *Server) peersWrongForPion(b []byte, create bool, c connID, lv *live) int {
	if n, whole := countPeers(b); !whole {
		return codeBadRequest
	} else if create && n > maxPeersPerRequest {
		s.metrics.quotaRefusals[quotaPeersPerRequest].Inc()
		return codeBadRequest
	}
	code := 0
	var peers [maxPeersPerRequest]netip.Addr
	n := 0
	forEachPeer(b, create, func(ip net.IP) bool {
		switch {
		case s.peerRefusal(ip) != "":
			code = codeForbidden
		case len(ip) != net.IPv4len:
			// Relays are IPv4 (pion opens udp4): RFC 8656 §9.1
			// answers 443 for a peer of another family, an IPv4
			// address written as IPv6 (::ffff:a.b.c.d) too. pion would
			// grant it, and the data plane could not send to it, nor
			// count it: it learns IPv4 peers only.
			code = codeFamilyMismatch
		default:
			peers[n] = netip.AddrFrom4([4]byte(ip))
			n++
		}
		return code == 0
	})
	if code != 0 {
		return code
	}
	a := s.dp.lookup(c)
	if a == nil {
		return 0
	}
	q := lv.cfg.Quotas
	by := ""
	switch {
	case q.Permissions > 0 && len(*a.perms.Load())+a.newPeers(peers[:n]) > q.Permissions:
		by = quotaPermissions
	case !create && q.Channels > 0 && len(*a.channels.Load()) >= q.Channels && a.byNumber(channelNumber(b)) == nil:
		by = quotaChannels
	default:
		return 0
	}
	s.metrics.quotaRefusals[by].Inc()
	s.log.Debug("turn: permission or channel refused by quota", "client", c.src, "quota", by)
	return codeNoCapacity
}

// countPeers counts b's XOR-PEER-ADDRESS attributes and reports whether
// each is a whole IPv4 or IPv6 address. b must have passed parseRequest.
func countPeers(b []byte) (n int, whole bool) {
	attrs := stunwire.AttrsOf(b, stunwire.HeaderSize+int(binary.BigEndian.Uint16(b[2:4])))
	for off, at, size, ok := attrs.First(); ok; off, at, size, ok = attrs.After(off, size) {
		if at != stunwire.AttrXORPeerAddress {
			continue
		}
		n++
		switch {
		case size == 4+net.IPv4len && binary.BigEndian.Uint16(b[off+4:]) == stunwire.FamilyIPv4:
		case size == 4+net.IPv6len && binary.BigEndian.Uint16(b[off+4:]) == stunwire.FamilyIPv6:
		default:
			return n, false
		}
	}
	return n, true
}

// channelNumber is the number in b's first CHANNEL-NUMBER, as pion reads
// it, or 0 (no channel) where pion reads none. b must have passed
// parseRequest.
func channelNumber(b []byte) uint16 {
	attrs := stunwire.AttrsOf(b, stunwire.HeaderSize+int(binary.BigEndian.Uint16(b[2:4])))
	for off, at, n, ok := attrs.First(); ok; off, at, n, ok = attrs.After(off, n) {
		if at == stunwire.AttrChannelNumber {
			if n != 4 {
				return 0
			}
			return binary.BigEndian.Uint16(b[off+4:])
		}
	}
	return 0
}

func attrLen(b []byte, off int) int { return int(binary.BigEndian.Uint16(b[off+2:])) }

// forEachPeer calls fn with every XOR-PEER-ADDRESS of the STUN message b
// that pion would decode (all of them up to the first it cannot decode
// when all is set, as CreatePermission does; else the first, as
// ChannelBind does), until fn returns false. b must have passed
// parseRequest.
func forEachPeer(b []byte, all bool, fn func(net.IP) bool) {
	var ip [16]byte
	attrs := stunwire.AttrsOf(b, stunwire.HeaderSize+int(binary.BigEndian.Uint16(b[2:4])))
	for off, at, n, ok := attrs.First(); ok; off, at, n, ok = attrs.After(off, n) {
		if at != stunwire.AttrXORPeerAddress {
			continue
		}
		a, ok := xorPeer(b[off+4:off+4+n], b[4:20], ip[:])
		if !ok || !fn(a) || !all {
			return
		}
	}
}

// xorPeer decodes an XOR-PEER-ADDRESS value exactly as pion/stun does
// (including its leniency with short addresses) into buf, given the
// message's cookie and transaction ID.
func xorPeer(v, cookieTxID, buf []byte) (net.IP, bool) {
	if len(v) <= 4 {
		return nil, false
	}
	n := 0
	switch binary.BigEndian.Uint16(v) {
	case stunwire.FamilyIPv4:
		n = net.IPv4len
	case stunwire.FamilyIPv6:
		n = net.IPv6len
	default:
		return nil, false
	}
	if len(v)-4 > n {
		return nil, false
	}
	ip := buf[:n]
	clear(ip)
	for i := range len(v) - 4 {
		ip[i] = v[4+i] ^ cookieTxID[i]
	}
	return ip, true
}

// peerRefusal is the peer policy's verdict on ip, counted and logged as
// pion's PermissionHandler would.
func (s *Server) peerRefusal(ip net.IP) string {
	r := s.live.Load().policy.refusal(ip)
	if r != "" {
		s.metrics.peerRefusals[r].Inc()
	}
	return r
}

// answerAttr is one attribute of an answer icebox builds itself.
type answerAttr struct {
	typ   uint16
	value []byte
}

// errorResponse builds the error response to request b: ERROR-CODE
// without a reason phrase (smaller answers), extra attributes, then
// MESSAGE-INTEGRITY with key when the request was authenticated, and
// FINGERPRINT.
func errorResponse(b []byte, method uint16, code int, key []byte, extra ...answerAttr) []byte {
	typ := stunwire.Type(method, stunwire.ClassError)
	out := make([]byte, stunwire.HeaderSize, 128)
	binary.BigEndian.PutUint16(out, typ)
	copy(out[4:20], b[4:20])
	out = appendAttr(out, answerAttr{stunwire.AttrErrorCode, []byte{0, 0, byte(code / 100), byte(code % 100)}})
	for _, a := range extra {
		out = appendAttr(out, a)
	}
	if key != nil {
		mi := len(out)
		out = appendAttr(out, answerAttr{stunwire.AttrIntegrity, make([]byte, integrityLen)})
		binary.BigEndian.PutUint16(out[2:4], uint16(len(out)-stunwire.HeaderSize))
		sum := integrity(out, mi, key)
		copy(out[mi+4:], sum[:])
	}
	fp := len(out)
	out = appendAttr(out, answerAttr{stunwire.AttrFingerprint, make([]byte, 4)})
	binary.BigEndian.PutUint16(out[2:4], uint16(len(out)-stunwire.HeaderSize))
	binary.BigEndian.PutUint32(out[fp+4:], stun.FingerprintValue(out[:fp]))
	return out
}

// unauthorizedSize is the length of the 401 errorResponse builds with a
// realm and a nonce of these lengths: header, ERROR-CODE, REALM, NONCE,
// FINGERPRINT.
func unauthorizedSize(realm, nonce int) int {
	return stunwire.HeaderSize + attrSize(4) + attrSize(realm) + attrSize(nonce) + attrSize(4)
}

// attrSize is what appendAttr adds for a value of n bytes.
func attrSize(n int) int { return 4 + (n+3)&^3 }

func appendAttr(out []byte, a answerAttr) []byte {
	out = binary.BigEndian.AppendUint16(out, a.typ)
	out = binary.BigEndian.AppendUint16(out, uint16(len(a.value)))
	out = append(out, a.value...)
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	return out
}

// mayAnswer spends one of src's answers to unauthenticated or failed
// requests, or counts the request as left unanswered.
func (s *Server) mayAnswer(src netip.Addr, now time.Time, lv *live) bool {
	if s.answers.allow(src, now, lv.cfg.Quotas.AnswerRate) {
		return true
	}
	s.metrics.unanswered.Inc()
	return false
}

// authFailed counts a failure and logs it, at most once per source and
// window. Only failures whose source is proven (tied) count toward the
// throttle. The credential never appears in the log.
func (s *Server) authFailed(src netip.Addr, reason string, now time.Time, lv *live, tied bool) {
	s.metrics.authFailures[reason].Inc()
	logIt, quiet, throttled := s.guard.failed(src, now, lv.cfg.Quotas, tied)
	if logIt {
		s.log.Debug("turn: authentication failed", "source", src, "reason", reason, "suppressed", quiet)
	}
	if throttled {
		s.log.Info("turn: throttling a source after repeated authentication failures",
			"source", src, "failures", lv.cfg.Quotas.AuthFailures, "window", lv.cfg.Quotas.AuthFailureWindow)
	}
}

// authenticate is pion's AuthHandler: it hands over the key inspect
// verified for this request, if any.
func (s *Server) authenticate(username, _ string, from net.Addr) ([]byte, bool) {
	return s.keys.take(authSlot{connIDOf(from), username})
}
