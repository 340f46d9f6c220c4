package turnsrv

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // MESSAGE-INTEGRITY is HMAC-SHA1 by definition.
	"encoding/binary"
	"hash/crc32"
	"net"
	"net/netip"
	"time"
)

// Every client message passes inspect before pion sees it. pion's
// AuthHandler can return one key per username, but a secret rotation needs
// several candidate keys tried against the message itself; pion also
// cannot cap a requested lifetime below an hour nor throttle a source. So
// icebox verifies MESSAGE-INTEGRITY here, in constant time, against every
// secret, and passes the key that matched to AuthHandler through authKeys.

// STUN (RFC 5389) and TURN (RFC 5766) wire constants.
const (
	stunHeaderLen   = 20
	stunMagicCookie = 0x2112A442

	attrUsername    = 0x0006
	attrIntegrity   = 0x0008
	attrLifetime    = 0x000D
	attrRealm       = 0x0014
	attrFingerprint = 0x8028

	integrityLen   = 20
	fingerprintXOR = 0x5354554e

	methodAllocate         = 0x003
	methodRefresh          = 0x004
	methodCreatePermission = 0x008
	methodChannelBind      = 0x009
)

// authFields locates what inspect needs in a STUN request.
type authFields struct {
	method          uint16
	username, realm []byte
	integrity       int // offset of the MESSAGE-INTEGRITY attribute header; 0 if absent
	lifetime        int // offset of LIFETIME's 4-byte value; 0 if absent
	fingerprint     int // offset of the FINGERPRINT attribute header; 0 if absent
}

// parseRequest returns the fields of b if it is a well-formed STUN request.
// Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are ignored,
// as RFC 5389 section 15.4 requires, but must still be well-formed, and a
// LIFETIME there makes the request malformed: pion does read attributes
// after MESSAGE-INTEGRITY, and would grant that lifetime unclamped.
// Anything else, ChannelData and indications included, is pion's business.
func parseRequest(b []byte) (f authFields, ok bool) {
	if len(b) < stunHeaderLen || b[0]&0xC0 != 0 {
		return f, false
	}
	typ := binary.BigEndian.Uint16(b[0:2])
	if typ&0x0110 != 0 || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return f, false // not a request (class bits C1 C0 = 00), or not STUN
	}
	end := stunHeaderLen + int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) || end%4 != 0 {
		return f, false
	}
	f.method = typ&0x000F | (typ&0x00E0)>>1 | (typ&0x3E00)>>2
	for off := stunHeaderLen; off+4 <= end; {
		at := binary.BigEndian.Uint16(b[off:])
		n := int(binary.BigEndian.Uint16(b[off+2:]))
		v := off + 4
		if v+n > end {
			return f, false
		}
		if f.integrity != 0 {
			switch {
			case at == attrLifetime:
				return f, false
			case at == attrFingerprint && n == 4 && off == f.integrity+4+integrityLen:
				f.fingerprint = off
			}
			off = v + (n+3)&^3
			continue
		}
		switch {
		case at == attrUsername && f.username == nil:
			f.username = b[v : v+n]
		case at == attrRealm && f.realm == nil:
			f.realm = b[v : v+n]
		case at == attrLifetime && n == 4 && f.lifetime == 0:
			f.lifetime = v
		case at == attrIntegrity:
			if n != integrityLen {
				return f, false // malformed; pion would check this one
			}
			f.integrity = off
		}
		off = v + (n+3)&^3
	}
	return f, true
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
	binary.BigEndian.PutUint16(b[2:4], uint16(off+4+integrityLen-stunHeaderLen))
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
		binary.BigEndian.PutUint16(b[2:4], uint16(f.fingerprint+8-stunHeaderLen))
		crc := crc32.ChecksumIEEE(b[:f.fingerprint]) ^ fingerprintXOR
		binary.BigEndian.PutUint16(b[2:4], saved)
		binary.BigEndian.PutUint32(b[f.fingerprint+4:], crc)
	}
}

// inspect checks one message from a client before pion handles it and
// reports whether pion should see it at all. b may be modified in place.
func (s *Server) inspect(b []byte, from net.Addr) bool {
	f, ok := parseRequest(b)
	if !ok || f.integrity == 0 {
		return true // pion answers 401 with a nonce, or handles data
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
	if s.guard.blocked(src, now, lv.cfg.Quotas) {
		// Unanswered: answering costs as much as the HMACs it saves.
		s.metrics.authFailures[authThrottled].Inc()
		return false
	}

	username := string(f.username)
	expiry, _, okUser := splitUsername(username)
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
			if k := longTermKey(secret, username, s.realm); integrityOK(b, f.integrity, k) {
				key = k
				break
			}
		}
		if key == nil {
			reason = authBadMAC
		}
	}
	if reason != "" {
		// pion finds no key for this request and refuses it.
		s.authFailed(src, reason, now, lv)
		return true
	}

	if f.lifetime != 0 && (f.method == methodAllocate || f.method == methodRefresh) {
		limit := uint32(lv.cfg.Quotas.MaxLifetime / time.Second)
		if binary.BigEndian.Uint32(b[f.lifetime:]) > limit {
			binary.BigEndian.PutUint32(b[f.lifetime:], limit)
			resign(b, f, key)
		}
	}
	s.keys.put(c, username, key, now)
	return true
}

// authFailed counts a failure and logs it, at most once per source and
// window. The credential never appears in the log.
func (s *Server) authFailed(src netip.Addr, reason string, now time.Time, lv *live) {
	s.metrics.authFailures[reason].Inc()
	logIt, quiet, throttled := s.guard.failed(src, now, lv.cfg.Quotas)
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
	return s.keys.take(connIDOf(from), username)
}
