package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"icebox/internal/ipclass"
	"icebox/internal/stunclient"
	"icebox/turnsrv"
)

// publicIPAuto is the public_ip value that asks icebox to find the address.
const publicIPAuto = "auto"

// resolvePublicIP decides the address clients are told (relay addresses,
// ICE URLs) and says how it was found, for the start-up log.
func resolvePublicIP(ctx context.Context, cfg Config) (netip.Addr, string, error) {
	switch cfg.PublicIP {
	case "":
		return localPublicIP(cfg.TURN), "relay address or first interface address (set public_ip behind NAT)", nil
	case publicIPAuto:
		return discoverPublicIP(ctx, localPublicIP(cfg.TURN), cfg.PublicIPSTUN)
	default:
		return netip.MustParseAddr(cfg.PublicIP), "config", nil // Validate checked it
	}
}

// discoverPublicIP is public_ip: auto: the host's own address when it is
// public, else what the operator's STUN servers see. It never asks a
// server the operator did not list.
func discoverPublicIP(ctx context.Context, local netip.Addr, stunServers []string) (netip.Addr, string, error) {
	if ipclass.IsPublic(local) {
		return local, "host interface", nil
	}
	var errs []error
	for _, s := range stunServers {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
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

// localPublicIP is the best address this host can name without asking
// anyone: the relay bind address (turn.relay.address) when it is specific,
// else the first public then private IPv4 interface address, else
// 127.0.0.1.
func localPublicIP(turn turnsrv.Config) netip.Addr {
	if bind, err := netip.ParseAddr(turn.Relay.Address); err == nil && !bind.Unmap().IsUnspecified() {
		return bind.Unmap() // Validate checked it is IPv4
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
