package signal

import (
	"strings"
	"testing"
)

// TestTURNUser: the credentials icebox mints name a user TURN's per-user
// quota can count: the pairing (the same for every member and every
// reconnection), or the source address for connections that name none,
// never a fresh random name per connection.
func TestTURNUser(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	user := func(query string) string {
		t.Helper()
		k := dialKt(t, ts.url(query), nil)
		k.send("WsInit", "")
		_, v := k.expect("WsIceServers")
		for _, sv := range v.(*wsIceServersData).IceServers {
			if sv.Username != "" {
				_, u, _ := strings.Cut(sv.Username, ":")
				return u
			}
		}
		t.Fatal("no TURN credential")
		return ""
	}
	a, b := user("room=tv-42"), user("room=tv-42")
	if a != "pair-tv-42" || b != a {
		t.Errorf("members of tv-42 got users %q and %q, want pair-tv-42 for both", a, b)
	}
	if u := user(""); u != "addr-127.0.0.1" {
		t.Errorf("a connection naming no pairing got user %q, want addr-127.0.0.1", u)
	}
	long := strings.Repeat("x", 200)
	if u := user("room=" + long); strings.Contains(u, long) || len(u) > 5+maxTURNUser || u != user("room="+long) {
		t.Errorf("a 200-byte pairing got user %q", u)
	}
}
