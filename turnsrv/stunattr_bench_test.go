package turnsrv

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// The attribute walks, each on what a client sends: a signed Refresh
// (parseRequest), a signed CreatePermission for three peers
// (forEachPeer) and a Send indication of 160 bytes (parseSend).

func BenchmarkParseRequest(b *testing.B) {
	m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest),
		lifetimeAttr(10*time.Minute), stun.NewUsername("1:u"), stun.NewRealm(testRealm), stun.NewNonce("n"),
		stun.NewLongTermIntegrity("1:u", testRealm, "p"), stun.Fingerprint)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := parseRequest(m.Raw); !ok {
			b.Fatal("refused")
		}
	}
}

func BenchmarkForEachPeer(b *testing.B) {
	m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest),
		peerAttr(net.IPv4(192, 0, 2, 1), 9), peerAttr(net.IPv4(192, 0, 2, 2), 9), peerAttr(net.ParseIP("2001:db8::1"), 9),
		stun.NewUsername("1:u"), stun.NewRealm(testRealm), stun.NewNonce("n"),
		stun.NewLongTermIntegrity("1:u", testRealm, "p"), stun.Fingerprint)
	b.ReportAllocs()
	n := 0
	count := func(net.IP) bool { n++; return true }
	for b.Loop() {
		forEachPeer(m.Raw, true, count)
	}
	if n != 3*b.N {
		b.Fatalf("%d peers in %d walks", n, b.N)
	}
}

func BenchmarkParseSend(b *testing.B) {
	m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		peerAttr(net.IPv4(192, 0, 2, 1), 9), rawAttr(stun.AttrData, make([]byte, 160)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := parseSend(m.Raw); !ok {
			b.Fatal("refused")
		}
	}
}
