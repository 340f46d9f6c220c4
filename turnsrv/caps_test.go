package turnsrv

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"

	"icebox/internal/testenv"
)

// peersAt returns permission requests' XOR-PEER-ADDRESS attributes for n
// loopback peers 127.1.<group>.1.. (nothing listens there: a permission
// sends nothing).
func peersAt(group, n int) []stun.Setter {
	out := make([]stun.Setter, n)
	for i := range out {
		out[i] = peerAttr(net.IPv4(127, 1, byte(group), byte(1+i)), 9)
	}
	return out
}

// TestPermissionAndChannelCaps: an attacker's allocation asks for more
// peers in one CreatePermission than the data plane learns (400), fills
// the default caps of peer addresses and channels, and is refused any
// more (508) while it may refresh what it holds and still relays through
// the data plane; a legitimate client's allocation keeps relaying
// through the data plane and gets new permissions throughout.
func TestPermissionAndChannelCaps(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Peers.Allow = []string{"127.0.0.0/8"}
	q := DefaultConfig().Quotas
	if q.Permissions != 64 || q.Channels != 64 {
		t.Fatalf("default caps %d permissions, %d channels; this test fills 64 of each", q.Permissions, q.Channels)
	}
	ts := startServer(t, cfg)
	legit, legitPeer := allocateRaw(t, ts, "udp"), peerSocket(t)
	mustSucceed(t, legit.bind(0x4000, legitPeer), "legitimate channel bind")
	legit.roundTrip(t, 0x4000, legitPeer, "before")

	attacker, attackerPeer := allocateRaw(t, ts, "tcp"), peerSocket(t)
	refused := func(want int, what string, attrs ...stun.Setter) {
		t.Helper()
		if res := attacker.do(stun.MethodCreatePermission, attrs...); errorCode(res) != want {
			t.Fatalf("%s: %v (error %d), want %d", what, res, errorCode(res), want)
		}
	}
	refused(int(stun.CodeBadRequest), "17 peers in one CreatePermission", peersAt(0, 17)...)
	wantCount(t, ts.metrics.quotaRefusals[quotaPeersPerRequest], 1, "refusals of too many peers in one request")
	// Peers and channels after MESSAGE-INTEGRITY: pion would grant them,
	// and the data plane, which counts what the allocation holds, would
	// not see them, so 16 at a time could pass any cap.
	afterIntegrity := func(method stun.Method, before, after []stun.Setter) *stun.Message {
		t.Helper()
		s := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, before...)
		s = append(s, attacker.user, attacker.realm, attacker.nonce, attacker.key)
		m, err := stun.Build(append(s, after...)...)
		if err != nil {
			t.Fatal(err)
		}
		return attacker.rawClient.roundTrip(m)
	}
	if res := afterIntegrity(stun.MethodCreatePermission, peersAt(6, 1), peersAt(7, 8)); errorCode(res) != int(stun.CodeBadRequest) {
		t.Fatalf("CreatePermission with 8 peers after MESSAGE-INTEGRITY: %v, want 400", res)
	}
	if res := afterIntegrity(stun.MethodChannelBind, peersAt(6, 1), []stun.Setter{channelAttr(0x4FF0)}); errorCode(res) != int(stun.CodeBadRequest) {
		t.Fatalf("ChannelBind with its number after MESSAGE-INTEGRITY: %v, want 400", res)
	}

	// 64 peer addresses: 127.0.0.1 (the attacker's peer) and 63 more.
	mustSucceed(t, attacker.do(stun.MethodCreatePermission, append(peersAt(0, 15), peerAttr(net.IPv4(127, 0, 0, 1), 9))...), "permissions 1-16")
	for g := 1; g < 4; g++ {
		mustSucceed(t, attacker.do(stun.MethodCreatePermission, peersAt(g, 16)...), "16 more permissions")
	}
	refused(int(stun.CodeInsufficientCapacity), "a 65th peer address", peersAt(4, 1)...)
	refused(int(stun.CodeInsufficientCapacity), "15 held peers and a new one", append(peersAt(1, 15), peersAt(4, 1)...)...)
	wantCount(t, ts.metrics.quotaRefusals[quotaPermissions], 2, "refusals at the permission cap")
	mustSucceed(t, attacker.do(stun.MethodCreatePermission, peersAt(2, 16)...), "refreshing 16 held permissions")
	mustSucceed(t, legit.do(stun.MethodCreatePermission, peersAt(4, 16)...), "the legitimate client's new permissions")

	// 64 channels, to held peer addresses; the last to the attacker's peer.
	held := append(peersAt(0, 15), append(peersAt(1, 16), append(peersAt(2, 16), peersAt(3, 16)...)...)...)
	for i, peer := range held {
		mustSucceed(t, attacker.do(stun.MethodChannelBind, channelAttr(0x4000+uint16(i)), peer), "channel bind")
	}
	mustSucceed(t, attacker.bind(0x403F, attackerPeer), "the 64th channel")
	for _, tc := range []struct {
		what  string
		attrs []stun.Setter
		want  int
	}{
		{"a 65th channel", []stun.Setter{channelAttr(0x4040), peerAttr(net.IPv4(127, 1, 3, 16), 10)}, int(stun.CodeInsufficientCapacity)},
		{"a 65th channel and peer address", []stun.Setter{channelAttr(0x4041), peersAt(5, 1)[0]}, int(stun.CodeInsufficientCapacity)},
		{"rebinding a held channel", []stun.Setter{channelAttr(0x4000), peersAt(0, 1)[0]}, 0},
	} {
		if res := attacker.do(stun.MethodChannelBind, tc.attrs...); errorCode(res) != tc.want {
			t.Fatalf("%s: %v (error %d), want %d", tc.what, res, errorCode(res), tc.want)
		}
	}
	wantCount(t, ts.metrics.quotaRefusals[quotaChannels], 1, "refusals at the channel cap")
	wantCount(t, ts.metrics.quotaRefusals[quotaPermissions], 3, "refusals at the permission cap")

	a := ts.dp.lookup(connIDOf(attacker.conn.LocalAddr()))
	if a == nil {
		t.Fatal("the data plane does not mirror the attacker's allocation")
	}
	if p, c := len(*a.perms.Load()), len(*a.channels.Load()); p != 64 || c != 64 {
		t.Errorf("the data plane holds %d permissions and %d channels, want 64 of each", p, c)
	}
	// At the caps, the attacker's last channel and the legitimate
	// client's channel both go through the data plane.
	toPeers, toClients := testenv.MetricValue(t, ts.metrics.fastToPeer), testenv.MetricValue(t, ts.metrics.fastFromPeer)
	attacker.roundTrip(t, 0x403F, attackerPeer, "at the caps")
	legit.roundTrip(t, 0x4000, legitPeer, "after")
	wantCount(t, ts.metrics.fastToPeer, toPeers+2, "datagrams the data plane relayed to peers")
	wantCount(t, ts.metrics.fastFromPeer, toClients+2, "datagrams the data plane relayed to clients")
}

// BenchmarkFromClientAtCap is the data plane's cost for one ChannelData
// from a client (dp.fromClient: channel and permission lookups, lifetimes,
// policy, and a send batched by sendmmsg from a real relay socket on
// 127.0.0.1 to a peer that never reads, so the kernel drops) for an
// allocation holding one channel and permission, and for one at the
// default caps on the channel and permission found last. lookup is the
// lookups alone.
func BenchmarkFromClientAtCap(b *testing.B) {
	for _, n := range []int{1, DefaultConfig().Quotas.Channels} {
		s, a, id, msg := allocationWithChannels(b, n)
		b.Run(fmt.Sprintf("relay/channels=%d", n), func(b *testing.B) {
			snd := newPeerSender(s.metrics)
			b.ReportAllocs()
			for b.Loop() {
				if !s.dp.fromClient(msg, id, snd) {
					b.Fatal("not relayed")
				}
			}
			snd.flush()
		})
		b.Run(fmt.Sprintf("lookup/channels=%d", n), func(b *testing.B) {
			number := binary.BigEndian.Uint16(msg)
			b.ReportAllocs()
			for b.Loop() {
				if ch := a.byNumber(number); ch == nil || !a.unexpired(ch, s.dp.now()) {
					b.Fatal("no live channel")
				}
			}
		})
	}
}

// allocationWithChannels mirrors an allocation with n channels, each with
// its own peer address, the last to a UDP socket on 127.0.0.1 nobody
// reads; it returns a 160-byte ChannelData message on that last channel.
func allocationWithChannels(b *testing.B, n int) (*Server, *dpAlloc, connID, []byte) {
	s := wrapperServer()
	lv := *s.live.Load()
	lv.policy = newPeerPolicy(PeerConfig{Allow: []string{"127.0.0.0/8"}}, nil, nil)
	s.live.Store(&lv)
	sockets := make([]*net.UDPConn, 2) // the relay socket and the peer
	for i := range sockets {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		sockets[i] = c
	}
	rc := &relayConn{s: s}
	rc.initDataPlane(sockets[0])
	id := connID{src: netip.MustParseAddrPort("127.0.0.1:40000")}
	a := &dpAlloc{client: id, relay: rc}
	a.channels.Store(&[]*dpChannel{})
	a.perms.Store(&[]*dpPerm{})
	s.dp.allocs[id], s.dp.count[id] = a, 1
	now := s.dp.now()
	for i := range n {
		peer := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(1 + i%250)}), 9)
		if i == n-1 {
			peer = sockets[1].LocalAddr().(*net.UDPAddr).AddrPort()
		}
		a.bind(0x4000+uint16(i), peer, now)
		a.permit(peer.Addr(), now)
	}
	msg := channelData(160)
	binary.BigEndian.PutUint16(msg, 0x4000+uint16(n-1))
	return s, a, id, msg
}
