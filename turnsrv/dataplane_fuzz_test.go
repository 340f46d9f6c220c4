package turnsrv

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"

	"icebox/internal/stunwire"
)

// FuzzDataPlaneLearning feeds arbitrary client requests and server
// answers to the data plane's parsers: nothing may panic, and whatever
// they learn stays within one allocation's bounds.
func FuzzDataPlaneLearning(f *testing.F) {
	key := stun.NewLongTermIntegrity("1:u", testRealm, "p")
	peer := peerAttr(net.IPv4(192, 0, 2, 1), 9)
	peer6 := peerAttr(net.ParseIP("2001:db8::1"), 9)
	for _, m := range []*stun.Message{
		stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelAttr(0x4000), peer, key, stun.Fingerprint),
		stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), peer, peer6, key),
		stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetimeAttr(0), key),
		stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelAttr(0x4001), peer),
	} {
		ok := append([]byte(nil), m.Raw...)
		ok[0] |= 0x01 // success response class bit
		f.Add(m.Raw, ok)
	}
	f.Add([]byte{0x40, 0, 0, 4, 1, 2, 3, 4}, []byte{})
	f.Fuzz(func(t *testing.T, req, res []byte) {
		s := wrapperServer()
		client := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 40000}
		id := connIDOf(client)
		a := &dpAlloc{client: id}
		a.channels.Store(&[]*dpChannel{})
		a.perms.Store(&[]*dpPerm{})
		s.dp.allocs[id], s.dp.count[id] = a, 1
		s.dp.noteRequest(req, id)
		if len(res) >= stunwire.HeaderSize {
			s.dp.noteResponse(res, id, clientOut{udp: &fakeConn{}, to: client, toAP: id.src})
		}
		if n := len(*a.channels.Load()); n > 1 {
			t.Fatalf("one request bound %d channels", n)
		}
		if n := len(*a.perms.Load()); n > 16 {
			t.Fatalf("one request made %d permissions", n)
		}
		for _, p := range *a.perms.Load() {
			if !p.ip.Is4() {
				t.Fatalf("permission for %v: relay sockets reach only IPv4 peers", p.ip)
			}
		}
		for _, ch := range *a.channels.Load() {
			if !ch.peer.Addr().Is4() {
				t.Fatalf("channel to %v: relay sockets reach only IPv4 peers", ch.peer)
			}
		}
	})
}

// FuzzParseSend: whatever Send indication the data plane relays itself,
// pion would have read the same peer and data from it.
func FuzzParseSend(f *testing.F) {
	peer := peerAttr(net.IPv4(192, 0, 2, 1), 9)
	peer6 := peerAttr(net.ParseIP("2001:db8::1"), 9)
	send := stun.NewType(stun.MethodSend, stun.ClassIndication)
	for _, m := range []*stun.Message{
		stun.MustBuild(stun.TransactionID, send, peer, rawAttr(stun.AttrData, []byte("hello"))),
		stun.MustBuild(stun.TransactionID, send, rawAttr(stun.AttrData, nil), peer6, stun.Fingerprint),
		stun.MustBuild(stun.TransactionID, send, peer, peer6, rawAttr(stun.AttrData, []byte("1")), rawAttr(stun.AttrData, []byte("2"))),
		stun.MustBuild(stun.TransactionID, send, rawAttr(stun.AttrXORPeerAddress, []byte{0, 1, 0, 9, 1}), rawAttr(stun.AttrData, []byte("short peer"))),
		stun.MustBuild(stun.TransactionID, send, peer),
	} {
		f.Add(m.Raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ap, data, ok := parseSend(b)
		if !ok {
			return
		}
		if !ap.Addr().Is4() {
			t.Fatalf("relays to %v: relay sockets reach only IPv4 peers", ap)
		}
		m := &stun.Message{Raw: append([]byte(nil), b...)}
		if err := m.Decode(); err != nil {
			t.Fatalf("relayed a Send indication pion cannot decode: %v", err)
		}
		var addr stun.XORMappedAddress
		if err := addr.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
			t.Fatalf("pion reads no peer: %v", err)
		}
		want, _ := netip.AddrFromSlice(addr.IP)
		if ap != netip.AddrPortFrom(want.Unmap(), uint16(addr.Port)) {
			t.Fatalf("peer %v, pion reads %v:%d", ap, addr.IP, addr.Port)
		}
		pionData, err := m.Get(stun.AttrData)
		if err != nil || !bytes.Equal(pionData, data) {
			t.Fatalf("data %q, pion reads %q (%v)", data, pionData, err)
		}
	})
}
