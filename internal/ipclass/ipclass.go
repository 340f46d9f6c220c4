// Package ipclass says what an IP address is: public (one that clients on
// the internet can reach) or not, and which block of addresses one source
// holds (and which address a connection comes from). The TURN peer policy,
// the choice of the address icebox announces, its start-up warning and
// `icebox check` ask the first, every per-source limit the second, so they
// all agree. ListenNetwork says which family a listen address binds.
package ipclass

import (
	"net"
	"net/netip"
)

// reserved are the ranges that are not the public internet: a relay into
// them would make a TURN server a proxy into the host's own network, its
// cloud metadata service or nowhere, and an address in them cannot be
// reached by clients on the internet.
var reserved = []struct {
	prefix netip.Prefix
	why    string
}{
	// IPv4
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network", including unspecified (RFC 1122)`},
	{netip.MustParsePrefix("10.0.0.0/8"), "private (RFC 1918)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT (RFC 6598)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local, including cloud metadata 169.254.169.254"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private (RFC 1918)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments (RFC 6890)"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation TEST-NET-1 (RFC 5737)"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast (RFC 7526)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private (RFC 1918)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking (RFC 2544)"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation TEST-NET-2 (RFC 5737)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation TEST-NET-3 (RFC 5737)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved, including broadcast 255.255.255.255"},
	// IPv6
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64 (RFC 8215)"},
	{netip.MustParsePrefix("100::/64"), "discard-only (RFC 6666)"},
	{netip.MustParsePrefix("2001:2::/48"), "benchmarking (RFC 5180)"},
	{netip.MustParsePrefix("2001:10::/28"), "ORCHID"},
	{netip.MustParsePrefix("2001:20::/28"), "ORCHIDv2 (RFC 7343)"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation (RFC 3849)"},
	{netip.MustParsePrefix("3fff::/20"), "documentation (RFC 9637)"},
	{netip.MustParsePrefix("fc00::/7"), "unique local (RFC 4193)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local, deprecated but still routed by some stacks"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// NonPublic says why a is not a public address, naming its range (e.g.
// "documentation TEST-NET-1 (RFC 5737)"), or returns "" when it is public.
// An IPv4-mapped IPv6 address is judged as its IPv4 address.
func NonPublic(a netip.Addr) string {
	if !a.IsValid() {
		return "not an IP address"
	}
	a = a.Unmap().WithZone("")
	for _, r := range reserved {
		if r.prefix.Contains(a) {
			return r.why
		}
	}
	if !a.IsGlobalUnicast() {
		return "not a unicast address"
	}
	return ""
}

// IsPublic reports whether clients on the internet can reach a.
func IsPublic(a netip.Addr) bool { return NonPublic(a) == "" }

// SourcePrefix is what per-source limits count by: the IPv4 address, or
// the /64 of an IPv6 one, since anyone holding a /64 (one subscriber,
// usually) can pick any address in it.
func SourcePrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// SourceKey is SourcePrefix as an address, for maps keyed by address.
func SourceKey(a netip.Addr) netip.Addr { return SourcePrefix(a).Addr() }

// PeerAddrPort is the address and port a connection's RemoteAddr names,
// unmapped: what per-source limits take a connection's source from,
// whether its RemoteAddr is a *net.TCPAddr or, from a wrapping
// listener, something else that prints as one. Zero when there is none.
func PeerAddrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	case nil:
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// ListenNetwork is the network ("tcp" or "udp" as proto) to bind addr
// (host:port) on: proto+"4" for an IPv4 host, 0.0.0.0 included, where Go
// would otherwise open a dual-stack socket and with it IPv6, which the
// operator did not ask for; proto itself for an IPv6 host, a host name or
// none (":3478": every address of both families).
func ListenNetwork(proto, addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return proto
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
		return proto + "4"
	}
	return proto
}
