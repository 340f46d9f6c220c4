package main

import (
	"context"
	"errors"
	"fmt"
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
		ip, err := turnsrv.ChoosePublicIP(netip.Addr{}, cfg.TURN)
		return ip, "relay address or first interface address (set public_ip behind NAT)", err
	case publicIPAuto:
		local, _ := turnsrv.ChoosePublicIP(netip.Addr{}, cfg.TURN)
		return discoverPublicIP(ctx, local, cfg.PublicIPSTUN)
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
