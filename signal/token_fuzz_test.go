package signal

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// FuzzVerifyToken checks join tokens. Any string: splitToken,
// checkTokenForm and VerifyToken never panic and agree with each other,
// and a string that verifies is exactly the token MintToken gives for
// that room and expiry (so no other spelling of a signature is accepted).
// A minted token: it verifies for its room until its expiry, and not for
// another room, under another key, once expired, or with any one byte
// changed, added or removed.
func FuzzVerifyToken(f *testing.F) {
	keyA := []byte("fuzz-key-0123456789abcdef")
	keyB := []byte("fuzz-key-rotated-0123456789")
	minted := MintToken(keyA, "tv-42", time.Unix(4102444800, 0))
	f.Add(minted, "tv-42", int64(4102444800), keyA, uint16(0), byte('9'))
	f.Add(minted, "tv-43", int64(1700000000), keyB, uint16(42), byte('B'))
	f.Add(MintToken(keyB, "room:with:colons", time.Unix(1, 0)), "room:with:colons", int64(1), []byte{}, uint16(12), byte('='))
	f.Add("4102444800.", "tv-42", int64(0), []byte("k"), uint16(11), byte('.'))
	f.Add("-1.AAAA", "", int64(-1), []byte("k"), uint16(0), byte('-'))
	f.Add("99999999999999999999.x", "tv-42", int64(math.MaxInt64), []byte("k"), uint16(3), byte('+'))
	f.Add("4102444800.QUJD", "tv-42", int64(math.MinInt64), []byte("k"), uint16(1), byte('/'))
	f.Fuzz(func(t *testing.T, token, room string, exp int64, key []byte, pos uint16, c byte) {
		keys := [][]byte{keyA, keyB}
		now := time.Unix(1700000000, 0)
		expiry, sig, err := splitToken(token)
		if form := checkTokenForm(token, now); err != nil && !errors.Is(form, errTokenMalformed) || err == nil && (form == nil) != now.Before(expiry) {
			t.Fatalf("checkTokenForm(%q) = %v, splitToken %v %v", token, form, expiry, err)
		}
		if err == nil {
			if len(sig) != 32 {
				t.Fatalf("splitToken(%q) signature of %d bytes", token, len(sig))
			}
			// At a time before the expiry only the signature decides.
			before := expiry.Add(-time.Second)
			if VerifyToken(keys, room, token, before) == nil && token != MintToken(keyA, room, expiry) && token != MintToken(keyB, room, expiry) {
				t.Fatalf("%q verifies for room %q but is not the token minted for it", token, room)
			}
			if !errors.Is(VerifyToken(keys, room, token, expiry), errTokenExpired) {
				t.Fatalf("%q not expired at its expiry", token)
			}
		} else if v := VerifyToken(keys, room, token, now); !errors.Is(v, errTokenMalformed) {
			t.Fatalf("VerifyToken(%q) = %v, splitToken %v", token, v, err)
		}

		// A token minted with the fuzzed key, room and expiry (kept within
		// ±2^40 s, where time.Time arithmetic does not overflow).
		exp %= 1 << 40
		tok := MintToken(key, room, time.Unix(exp, 0))
		if exp < 0 {
			if v := VerifyToken([][]byte{key}, room, tok, time.Unix(math.MinInt64/2, 0)); !errors.Is(v, errTokenMalformed) {
				t.Fatalf("token %q with a negative expiry: %v", tok, v)
			}
			return
		}
		valid := time.Unix(exp, 0).Add(-time.Second)
		if v := VerifyToken([][]byte{keyA, key}, room, tok, valid); v != nil {
			t.Fatalf("minted %q for %q does not verify: %v", tok, room, v)
		}
		if v := VerifyToken([][]byte{key}, room, tok, time.Unix(exp, 0)); !errors.Is(v, errTokenExpired) {
			t.Fatalf("minted %q verifies at its expiry: %v", tok, v)
		}
		for _, other := range []string{room + "x", "x" + room, strings.ToUpper(room) + "\x00", room + ":" + tok[:strings.IndexByte(tok, '.')]} {
			if other == room {
				continue
			}
			if v := VerifyToken([][]byte{key}, other, tok, valid); !errors.Is(v, errTokenInvalid) {
				t.Fatalf("minted %q for %q verifies for %q: %v", tok, room, other, v)
			}
		}
		// HMAC pads keys up to 64 bytes with zeros, so a changed first
		// byte is another key exactly when the key is not longer.
		if len(key) > 0 && len(key) <= 64 {
			other := append([]byte{key[0] ^ 0x80}, key[1:]...)
			if v := VerifyToken([][]byte{other}, room, tok, valid); !errors.Is(v, errTokenInvalid) {
				t.Fatalf("minted %q verifies under another key: %v", tok, v)
			}
		}
		// Another byte, an extra byte or one fewer anywhere.
		i := int(pos) % len(tok)
		for _, bad := range []string{tok[:i] + string(c) + tok[i+1:], tok[:i] + string(c) + tok[i:], tok[:i] + tok[i+1:]} {
			if v := VerifyToken([][]byte{key}, room, bad, valid); v == nil && bad != tok {
				t.Fatalf("minted %q also verifies as %q", tok, bad)
			}
		}
	})
}
