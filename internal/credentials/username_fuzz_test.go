package credentials

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// FuzzParseUsername checks the REST username parser on any string, and
// that what Mint hands out (for any user, ttl and clock) splits
// back into its expiry and user, with a password that gives pion's client
// the key inspect verifies against.
const (
	testSecret = "test-secret-0123456789abcdef"
	testRealm  = "icebox"
)

func FuzzParseUsername(f *testing.F) {
	f.Add("1700000000:alice", "alice", int64(3600), int64(1700000000-3600))
	f.Add("1700000000", "", int64(86400), int64(1700000000))
	f.Add("1700000000:room:42:bob", "room:42:bob", int64(1), int64(0))
	f.Add("0:alice", "", int64(-1), int64(1))
	f.Add("-1:alice", "x", int64(-3600), int64(3600))
	f.Add("+1700000000:alice", "α", int64(60), int64(1e9))
	f.Add("9223372036854775808:x", "", int64(0), int64(0))
	f.Add(":alice", ":", int64(1e10), int64(99e9))
	f.Add("1700000000\x00:alice", "\x00", int64(5), int64(5))
	f.Fuzz(func(t *testing.T, username, user string, ttlSec, nowSec int64) {
		expiry, u, ok := ParseUsername(username)
		head, tail, _ := strings.Cut(username, ":")
		sec, err := strconv.ParseInt(head, 10, 64)
		if wantOK := err == nil && sec > 0; ok != wantOK {
			t.Fatalf("ParseUsername(%q) ok=%v, want %v", username, ok, wantOK)
		}
		if ok && (expiry.Unix() != sec || u != tail) {
			t.Fatalf("ParseUsername(%q) = %v %q, want %d %q", username, expiry.Unix(), u, sec, tail)
		}
		if !ok && (!expiry.IsZero() || u != "") {
			t.Fatalf("ParseUsername(%q) refused but returned %v %q", username, expiry, u)
		}

		// Keep the clock within ±3000 years and the ttl within ±300 years,
		// where time.Duration and Unix seconds cannot overflow.
		now := time.Unix(nowSec%(3000*365*86400), 0)
		ttl := time.Duration(ttlSec%(300*365*86400)) * time.Second
		secret := []byte(testSecret)
		name, pass, expires := Mint(secret, user, ttl, now)
		e, u, ok := ParseUsername(name)
		if expires.Unix() <= 0 {
			if ok {
				t.Fatalf("minted %q expiring at %d, yet it parses", name, expires.Unix())
			}
			return
		}
		if !ok || !e.Equal(expires) || u != user {
			t.Fatalf("Mint(%q, %v, %v) = %q expiring %v; splits into %v %q %v", user, ttl, now, name, expires, e, u, ok)
		}
		// pion's client derives MD5(username:realm:password) itself.
		if want := stun.NewLongTermIntegrity(name, testRealm, pass); string(LongTermKey(secret, name, testRealm)) != string(want) {
			t.Fatalf("longTermKey for %q differs from pion's client key", name)
		}
	})
}
