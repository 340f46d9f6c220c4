// Package publicip decides the IPv4 address icebox tells clients to reach
// it at (relay addresses, ICE URLs): the operator's, the host's own, or,
// for public_ip: auto, what the operator's STUN servers see.
package publicip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"icebox/internal/ipclass"
	"icebox/internal/stunclient"
)

// Auto is the public_ip value that asks icebox to find the address.
const Auto = "auto"

// Config is what the choice depends on: public_ip, public_ip_stun and
// turn.relay.address of the config file.
type Config struct {
	// An IPv4 address, Auto, or "" (see Resolve).
	PublicIP string
	// STUN servers (host:port) that Auto may ask.
	STUNServers []string
	// The relay bind address; taken when it names one address.
	RelayAddress string
}

// Check reports whether public_ip holds a value Resolve takes.
func Check(publicIP string) error {
	if publicIP == "" || publicIP == Auto {
		return nil
	}
	if ip, err := netip.ParseAddr(publicIP); err != nil || ip.IsUnspecified() || !ip.Unmap().Is4() {
		return fmt.Errorf("%q is not an IPv4 address clients can reach", publicIP)
	}
	return nil
}

// stunTimeout bounds how long Auto waits for each STUN server.
const stunTimeout = 3 * time.Second

// Resolve decides the address and says how it was found, for the
// start-up log. "" takes the best address the host can name itself
// (local), Auto that address when it is public, else asks the STUN
// servers; anything else is the address itself (Check has passed it).
func Resolve(ctx context.Context, cfg Config) (netip.Addr, string, error) {
	switch cfg.PublicIP {
	case "":
		return local(cfg.RelayAddress), "relay address or first interface address (set public_ip behind NAT)", nil
	case Auto:
		return discover(ctx, local(cfg.RelayAddress), cfg.STUNServers)
	}
	if err := Check(cfg.PublicIP); err != nil {
		return netip.Addr{}, "", err
	}
	return netip.MustParseAddr(cfg.PublicIP).Unmap(), "config", nil
}

// discover is public_ip: auto: the host's own address when it is public,
// else what the operator's STUN servers see. It never asks a server the
// operator did not list.
func discover(ctx context.Context, local netip.Addr, stunServers []string) (netip.Addr, string, error) {
	if ipclass.IsPublic(local) {
		return local, "host interface", nil
	}
	var errs []error
	for _, s := range stunServers {
		ctx, cancel := context.WithTimeout(ctx, stunTimeout)
		ap, err := stunclient.MappedAddress(ctx, s)
		cancel()
		if err == nil {
			return ap.Addr(), "STUN server " + s, nil
		}
		errs = append(errs, err)
	}
	if len(stunServers) == 0 {
		return netip.Addr{}, "", errors.New("no interface has a public IPv4 address and public_ip_stun lists no STUN server to ask: set public_ip to the address clients reach")
	}
	return netip.Addr{}, "", fmt.Errorf("no interface has a public IPv4 address and no STUN server answered: %w", errors.Join(errs...))
}

// local is the best address this host can name without asking anyone:
// the relay bind address when it is specific, else the first public then
// private IPv4 interface address, else 127.0.0.1.
func local(relayAddress string) netip.Addr {
	if bind, err := netip.ParseAddr(relayAddress); err == nil && !bind.Unmap().IsUnspecified() {
		return bind.Unmap() // turnsrv's Validate checked it is IPv4
	}
	var addrs []netip.Addr
	if ifas, err := net.InterfaceAddrs(); err == nil {
		for _, ifa := range ifas {
			if ipn, ok := ifa.(*net.IPNet); ok {
				a, _ := netip.AddrFromSlice(ipn.IP)
				addrs = append(addrs, a.Unmap())
			}
		}
	} else if a, ok := routeSourceIPv4(); ok {
		// Under systemd without AF_NETLINK; the peer policy fails closed
		// on its own (turnsrv), this only picks an address to announce.
		addrs = []netip.Addr{a}
	}
	var private netip.Addr
	for _, a := range addrs {
		switch {
		case !a.Is4() || !a.IsGlobalUnicast():
		case ipclass.IsPublic(a):
			return a
		case !private.IsValid():
			private = a
		}
	}
	if private.IsValid() {
		return private
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// routeSourceIPv4 returns the IPv4 address this host sends from by
// default (the only family public_ip takes), found by connecting a UDP
// socket to a documentation address: connect only looks up the route, no
// packet leaves. ok is false without an IPv4 default route.
func routeSourceIPv4() (netip.Addr, bool) {
	c, err := net.Dial("udp4", "192.0.2.1:9")
	if err != nil {
		return netip.Addr{}, false
	}
	defer c.Close()
	a, _ := netip.AddrFromSlice(c.LocalAddr().(*net.UDPAddr).IP)
	a = a.Unmap()
	return a, a.Is4()
}
