package ipclass

import (
	"net"
	"net/netip"
	"testing"
)

func TestNonPublic(t *testing.T) {
	for addr, want := range map[string]string{
		"8.8.8.8":            "",
		"2606:4700::1111":    "",
		"::ffff:1.1.1.1":     "",
		"192.0.2.2":          "documentation TEST-NET-1 (RFC 5737)",
		"198.51.100.7":       "documentation TEST-NET-2 (RFC 5737)",
		"203.0.113.10":       "documentation TEST-NET-3 (RFC 5737)",
		"2001:db8::1":        "documentation (RFC 3849)",
		"10.1.2.3":           "private (RFC 1918)",
		"::ffff:192.168.1.1": "private (RFC 1918)",
		"100.64.0.1":         "carrier-grade NAT (RFC 6598)",
		"127.0.0.1":          "loopback",
		"169.254.169.254":    "link-local, including cloud metadata 169.254.169.254",
		"fd00::2":            "unique local (RFC 4193)",
		"fe80::1%eth0":       "link-local",
		"255.255.255.255":    "reserved, including broadcast 255.255.255.255",
		"0.0.0.0":            `"this network", including unspecified (RFC 1122)`,
		"::":                 "unspecified",
	} {
		if got := NonPublic(netip.MustParseAddr(addr)); got != want {
			t.Errorf("NonPublic(%s) = %q, want %q", addr, got, want)
		}
		if got := IsPublic(netip.MustParseAddr(addr)); got != (want == "") {
			t.Errorf("IsPublic(%s) = %v", addr, got)
		}
	}
	if NonPublic(netip.Addr{}) == "" {
		t.Error("the zero Addr is public")
	}
}

// TestSourcePrefix: one IPv4 address, or one IPv6 /64, is one source,
// however the address is written.
func TestSourcePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":               "192.0.2.7/32",
		"::ffff:192.0.2.7":        "192.0.2.7/32",
		"2001:db8:1:2:aaaa::1":    "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::9999": "2001:db8:1:2::/64",
	} {
		a := netip.MustParseAddr(in)
		if got := SourcePrefix(a); got.String() != want {
			t.Errorf("SourcePrefix(%s) = %s, want %s", in, got, want)
		}
		if got := SourceKey(a); got != netip.MustParsePrefix(want).Addr() {
			t.Errorf("SourceKey(%s) = %s", in, got)
		}
	}
	if SourceKey(netip.Addr{}).IsValid() {
		t.Error("the invalid address has a valid key")
	}
}

// printedAddr is a net.Addr of a wrapping listener: only its String says
// where the peer is.
type printedAddr string

func (a printedAddr) Network() string { return "tcp" }
func (a printedAddr) String() string  { return string(a) }

func TestPeerAddrPort(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 4000}, "192.0.2.1:4000"},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 3478}, "[2001:db8::1]:3478"},
		{printedAddr("[::ffff:198.51.100.7]:80"), "198.51.100.7:80"},
		{printedAddr("not an address"), "invalid AddrPort"},
		{nil, "invalid AddrPort"},
	} {
		if got := PeerAddrPort(tc.addr).String(); got != tc.want {
			t.Errorf("PeerAddrPort(%v) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

func TestListenNetwork(t *testing.T) {
	for addr, want := range map[string]string{
		"0.0.0.0:3478": "udp4", "192.0.2.1:3478": "udp4", ":3478": "udp", "[::]:3478": "udp",
		"[::1]:3478": "udp", "[::ffff:192.0.2.1]:3478": "udp", "localhost:3478": "udp", "bad": "udp",
	} {
		if got := ListenNetwork("udp", addr); got != want {
			t.Errorf("ListenNetwork(udp, %q) = %q, want %q", addr, got, want)
		}
	}
}
