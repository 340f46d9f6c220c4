package turnsrv

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/pion/stun/v3"
)

// FuzzForEachPeer compares forEachPeer with pion/stun's reading of every
// XOR-PEER-ADDRESS in a request: the same addresses, in the same order, up
// to the first pion cannot decode (CreatePermission), or the first alone
// (ChannelBind). A peer inspect misreads would get a 403 pion would not
// give, or none where pion relays. countPeers and channelNumber, which
// the caps per allocation rest on, must read what pion reads too.
func FuzzForEachPeer(f *testing.F) {
	for _, s := range turnSeeds(f, "4102444800:seed") {
		f.Add(s.raw)
	}
	var tid [stun.TransactionIDSize]byte
	short := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodCreatePermission, stun.ClassRequest),
		rawAttr(stun.AttrXORPeerAddress, []byte{0, 1, 0x21, 0x12, 0x5e, 0x12}), // IPv4 family, 2 address bytes
		rawAttr(stun.AttrXORPeerAddress, []byte{0, 3, 0, 0, 1, 2, 3, 4}),       // unknown family
		peerAttr(net.IPv4(8, 8, 8, 8), 9))
	f.Add(short.Raw)
	many := []stun.Setter{stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
		rawAttr(stun.AttrChannelNumber, []byte{0x40, 0x01, 0, 0, 0}), channelAttr(0x4002)}
	for i := range 17 {
		many = append(many, peerAttr(net.IPv4(8, 8, 8, byte(i)), 9))
	}
	f.Add(stun.MustBuild(many...).Raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, ok := parseRequest(b); !ok {
			return
		}
		m := &stun.Message{Raw: bytes.Clone(b)}
		if m.Decode() != nil {
			return
		}
		for _, all := range []bool{true, false} {
			var got, want []string
			forEachPeer(b, all, func(ip net.IP) bool { got = append(got, ip.String()); return true })
			m.ForEach(stun.AttrXORPeerAddress, func(m *stun.Message) error {
				var a stun.XORMappedAddress
				if err := a.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
					return err
				}
				want = append(want, a.IP.String())
				if !all {
					return errStop
				}
				return nil
			})
			if len(got) != len(want) {
				t.Fatalf("all=%v: forEachPeer read %q, pion %q", all, got, want)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("all=%v: forEachPeer read %q, pion %q", all, got, want)
				}
			}
		}
		n, whole := countPeers(b)
		wantN, wantWhole := 0, true
		for _, a := range m.Attributes {
			if a.Type != stun.AttrXORPeerAddress {
				continue
			}
			wantN++
			one := &stun.Message{}
			one.Add(stun.AttrXORPeerAddress, a.Value)
			var addr stun.XORMappedAddress
			if addr.GetFromAs(one, stun.AttrXORPeerAddress) != nil || len(a.Value) != 4+len(addr.IP) {
				wantWhole = false
				break
			}
		}
		if whole != wantWhole || n != wantN {
			t.Fatalf("countPeers = %d, whole %v; pion reads %d, whole %v", n, whole, wantN, wantWhole)
		}
		// pion's ChannelNumber.GetFrom: the first CHANNEL-NUMBER, 4 bytes.
		number := uint16(0)
		if v, err := m.Get(stun.AttrChannelNumber); err == nil && len(v) == 4 {
			number = binary.BigEndian.Uint16(v)
		}
		if got := channelNumber(b); got != number {
			t.Fatalf("channelNumber = %#x, pion reads %#x", got, number)
		}
	})
}

var errStop = stopErr{}

type stopErr struct{}

func (stopErr) Error() string { return "stop" }
