package turnsrv

import (
	"net"
	"net/netip"
	"testing"
)

// FuzzCanonicalPeer checks canonicalPeer on any 4- or 16-byte address and
// the IPv6 forms that embed the fuzzed IPv4 address v4: IPv4-mapped,
// IPv4-compatible, IPv4-translated, NAT64 and 6to4 (with fuzzed bits
// after the IPv4) must canonicalize to v4 and be judged exactly as v4 by
// the peer policy, and Teredo must be refused as such; under the policies
// of TestPeerPolicy, TestPeerPolicyUnit and one built from the input.
func FuzzCanonicalPeer(f *testing.F) {
	for _, tc := range policyCases {
		a := netip.MustParseAddr(tc.peer)
		b16 := a.As16()
		f.Add(a.AsSlice(), b16[12:], b16[6:], uint8(24))
	}
	f.Add([]byte{}, []byte{0, 0, 0, 0}, []byte{}, uint8(0))
	f.Add([]byte{0xfe, 0x80, 15: 1}, []byte{0, 0, 0, 1}, []byte{0xff}, uint8(32))
	f.Add(netip.MustParseAddr("64:ff9b:1::a9fe:a9fe").AsSlice(), []byte{169, 254, 169, 254}, []byte{1, 2}, uint8(16))
	f.Add(netip.MustParseAddr("2001:0:4136:e378:8000:63bf:3fff:fdd2").AsSlice(), []byte{192, 0, 2, 45}, []byte{}, uint8(31))

	own := []netip.Addr{netip.MustParseAddr("8.8.8.8")}
	relay := []netip.Addr{netip.MustParseAddr("198.51.100.7")}
	fixed := []*peerPolicy{
		newPeerPolicy(PeerConfig{Deny: []string{"8.8.4.0/24"}}, own, []netip.Addr{netip.MustParseAddr("127.0.0.2")}),
		newPeerPolicy(PeerConfig{Allow: []string{"10.0.0.0/8", "::/0"}, Deny: []string{"9.9.9.0/24"}}, own, relay),
	}
	f.Fuzz(func(t *testing.T, addr, v4b, tail []byte, bits uint8) {
		// Any address, with and without a zone: no panic, a canonical
		// form that is unmapped, zoneless and its own canonical form.
		if a, ok := netip.AddrFromSlice(addr); ok {
			for _, a := range []netip.Addr{a, a.WithZone("eth0")} {
				c, isTeredo := canonicalPeer(a)
				if c.Zone() != "" || c.Is4In6() {
					t.Fatalf("canonicalPeer(%v) = %v, not canonical", a, c)
				}
				if c2, t2 := canonicalPeer(c); c2 != c || t2 != isTeredo {
					t.Fatalf("canonicalPeer(%v) = %v %v, but canonicalPeer(%v) = %v %v", a, c, isTeredo, c, c2, t2)
				}
			}
			for _, p := range fixed {
				p.refusal(net.IP(addr))
			}
		}

		var v4 [4]byte
		copy(v4[:], v4b)
		var rest [12]byte
		copy(rest[:], tail)
		plain := netip.AddrFrom4(v4)
		policies := append(fixed[:len(fixed):len(fixed)], newPeerPolicy(
			PeerConfig{Deny: []string{netip.PrefixFrom(plain, int(bits%33)).Masked().String()}},
			[]netip.Addr{netip.AddrFrom4([4]byte{v4[0], v4[1], v4[2], v4[3] ^ 1})}, nil))

		embed := func(prefix [16]byte, at int) netip.Addr { copy(prefix[at:], v4[:]); return netip.AddrFrom16(prefix) }
		var sixToFour [16]byte
		sixToFour[0], sixToFour[1] = 0x20, 0x02
		copy(sixToFour[6:], rest[:])
		forms := map[string]netip.Addr{
			"mapped":     embed([16]byte{10: 0xff, 11: 0xff}, 12),
			"translated": embed([16]byte{8: 0xff, 9: 0xff}, 12),
			"nat64":      embed([16]byte{0: 0x00, 1: 0x64, 2: 0xff, 3: 0x9b}, 12),
			"6to4":       embed(sixToFour, 2),
		}
		// ::0.0.0.0 and ::0.0.0.1 are the unspecified and loopback
		// addresses, not IPv4-compatible ones.
		if plain != netip.AddrFrom4([4]byte{}) && plain != netip.AddrFrom4([4]byte{0, 0, 0, 1}) {
			forms["compatible"] = embed([16]byte{}, 12)
		}
		for name, a := range forms {
			if c, isTeredo := canonicalPeer(a); c != plain || isTeredo {
				t.Fatalf("%s %v: canonicalPeer = %v teredo=%v, want %v", name, a, c, isTeredo, plain)
			}
			for i, p := range policies {
				if got, want := p.refusal(net.IP(a.AsSlice())), p.refusal(net.IP(plain.AsSlice())); got != want {
					t.Fatalf("policy %d: %s %v refused %q, %v refused %q", i, name, a, got, plain, want)
				}
			}
		}

		var tb [16]byte
		tb[0], tb[1] = 0x20, 0x01
		copy(tb[4:], rest[:])
		teredo := netip.AddrFrom16(tb)
		if _, isTeredo := canonicalPeer(teredo); !isTeredo {
			t.Fatalf("%v not seen as Teredo", teredo)
		}
		for i, p := range policies {
			if got := p.refusal(net.IP(teredo.AsSlice())); got != refuseTeredo {
				t.Fatalf("policy %d: Teredo %v refused %q", i, teredo, got)
			}
		}
	})
}
