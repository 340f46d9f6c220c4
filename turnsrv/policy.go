package turnsrv

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"icebox/internal/ipclass"
)

// Why a peer was refused; the values label icebox_turn_peer_refusals_total.
const (
	refuseTeredo    = "teredo"      // 2001::/32 hides an IPv4 address we cannot check
	refuseReserved  = "reserved"    // a non-public range (internal/ipclass)
	refuseDenied    = "denied"      // turn.peers.deny
	refuseOwn       = "own_address" // one of this host's addresses
	refuseRelayPort = "relay_port"  // the relay address, but not a live relay port
)

var refusalReasons = []string{refuseTeredo, refuseReserved, refuseDenied, refuseOwn, refuseRelayPort}

// IPv6 forms that embed an IPv4 address. Refusing 127.0.0.1 but not
// ::ffff:127.0.0.1 or 64:ff9b::7f00:1 has been a real TURN server CVE.
var (
	v4Compat  = netip.MustParsePrefix("::/96")           // deprecated IPv4-compatible ::a.b.c.d
	siit      = netip.MustParsePrefix("::ffff:0:0:0/96") // IPv4-translated (RFC 2765)
	nat64     = netip.MustParsePrefix("64:ff9b::/96")    // well-known NAT64 prefix (RFC 6052)
	sixToFour = netip.MustParsePrefix("2002::/16")       // 6to4: bits 16..47 are an IPv4 address
	teredo    = netip.MustParsePrefix("2001::/32")       // Teredo: the IPv4 is obfuscated, refuse
	v6Unspec  = netip.IPv6Unspecified()
	v6Loop    = netip.IPv6Loopback()
)

// canonicalPeer returns the address a packet to a would really reach, as
// far as the address says: the embedded IPv4 for mapped, compatible,
// translated, NAT64 and 6to4 forms; isTeredo reports the Teredo form.
func canonicalPeer(a netip.Addr) (c netip.Addr, isTeredo bool) {
	a = a.Unmap().WithZone("")
	if !a.Is6() {
		return a, false
	}
	b := a.As16()
	switch {
	case teredo.Contains(a):
		return a, true
	case a == v6Unspec || a == v6Loop:
		return a, false
	case v4Compat.Contains(a), siit.Contains(a), nat64.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), false
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), false
	}
	return a, false
}

// peerPolicy decides which peers clients may relay to. It is immutable;
// a reload swaps in a new one.
type peerPolicy struct {
	allow []netip.Prefix
	deny  []netip.Prefix // turn.peers.deny; non-public ranges are checked separately
	own   map[netip.Addr]struct{}
	// relay holds the addresses relays are reachable at. A peer there is
	// another client's relay (two relay-only clients on one server, the
	// normal case) and is allowed, but only to live relay ports: that is
	// checked per packet, as permissions carry no port.
	relay []netip.Addr
}

func newPeerPolicy(cfg PeerConfig, own, relay []netip.Addr) *peerPolicy {
	p := &peerPolicy{own: make(map[netip.Addr]struct{}, len(own))}
	for _, s := range cfg.Allow {
		if pfx, err := parsePrefix(s); err == nil { // Validate reported the rest
			p.allow = append(p.allow, pfx)
		}
	}
	for _, s := range cfg.Deny {
		if pfx, err := parsePrefix(s); err == nil {
			p.deny = append(p.deny, pfx)
		}
	}
	for _, a := range own {
		p.own[a.Unmap()] = struct{}{}
	}
	for _, a := range relay {
		p.relay = append(p.relay, a.Unmap())
	}
	return p
}

// refusal returns why a permission towards ip must be refused, or "".
func (p *peerPolicy) refusal(ip net.IP) string {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return refuseReserved
	}
	c, isTeredo := canonicalPeer(a)
	switch {
	case isTeredo:
		return refuseTeredo
	case p.allowed(c):
		return ""
	case p.isRelay(c):
		// In any form: toRelayRefused checks the port of every packet to
		// the canonical relay address.
		return ""
	case !ipclass.IsPublic(c):
		// Not the public internet: a relay there would make icebox a
		// proxy into the host's network, its cloud metadata service or
		// nowhere.
		return refuseReserved
	case containsAddr(p.deny, c), containsAddr(p.deny, a.Unmap().WithZone("")):
		// Deny matches the written form too: an operator denying 2002::/16
		// means the 6to4 addresses, whatever IPv4 they embed.
		return refuseDenied
	}
	if _, ok := p.own[c]; ok {
		return refuseOwn
	}
	return ""
}

func (p *peerPolicy) allowed(a netip.Addr) bool { return containsAddr(p.allow, a) }

func (p *peerPolicy) isRelay(a netip.Addr) bool {
	for _, r := range p.relay {
		if r == a {
			return true
		}
	}
	return false
}

// relayPortsOnly reports whether a, in whatever form, is the relay
// address and the policy does not allow it: there, only the ports of live
// relays may be reached. It does not depend on the port, so the data plane
// caches it per channel and permission.
func (p *peerPolicy) relayPortsOnly(a netip.Addr) bool {
	c, _ := canonicalPeer(a)
	return p.isRelay(c) && !p.allowed(c)
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// hostAddrs lists this host's interface addresses and the directed
// broadcast address of each IPv4 subnet, for the own-address rule. list is
// net.InterfaceAddrs but for tests.
func hostAddrs(list func() ([]net.Addr, error)) ([]netip.Addr, error) {
	ifas, err := list()
	if err != nil {
		// Under systemd's RestrictAddressFamilies without AF_NETLINK the
		// interfaces cannot be listed, and a relay could reach services on
		// the host's other addresses: icebox refuses to relay blind.
		return nil, fmt.Errorf("turn: cannot list this host's addresses, which the peer policy must refuse (%w); "+
			"under systemd, allow AF_NETLINK in RestrictAddressFamilies as systemd/icebox.service does", err)
	}
	var out []netip.Addr
	for _, ifa := range ifas {
		ipn, ok := ifa.(*net.IPNet)
		if !ok {
			continue
		}
		a, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		out = append(out, a)
		if ones, bits := ipn.Mask.Size(); a.Is4() && bits == 32 && ones < 31 {
			b := a.As4()
			for i := range b {
				b[i] |= ^ipn.Mask[len(ipn.Mask)-4+i]
			}
			out = append(out, netip.AddrFrom4(b))
		}
	}
	return out, nil
}

// portSet is a lock-free set of UDP ports: the live relay ports, consulted
// for every packet sent towards the relay address.
type portSet [65536 / 64]atomic.Uint64

func (s *portSet) add(p int) { s[p>>6].Or(1 << (p & 63)) }
func (s *portSet) del(p int) { s[p>>6].And(^(uint64(1) << (p & 63))) }
func (s *portSet) has(p int) bool {
	return p >= 0 && p < 65536 && s[p>>6].Load()&(1<<(p&63)) != 0
}
