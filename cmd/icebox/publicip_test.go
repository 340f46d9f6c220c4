package main

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestDiscoverPublicIP(t *testing.T) {
	d, _ := startDaemon(t, testConfig(t))
	stunAddr := d.stun.PacketConns()[0].LocalAddr().String()
	ctx := context.Background()

	// A public interface address wins without asking anyone.
	got, how, err := discoverPublicIP(ctx, netip.MustParseAddr("1.2.3.4"), []string{"127.0.0.1:1"})
	if err != nil || got != netip.MustParseAddr("1.2.3.4") || how != "host interface" {
		t.Errorf("with a public interface: %v %q %v", got, how, err)
	}
	// Not public either: a host whose only address is in a documentation
	// range (192.0.2.0/24) is not on the internet.
	for _, private := range []string{"127.0.0.1", "10.1.2.3", "100.64.1.1", "172.16.0.1", "192.0.2.2"} {
		// Behind NAT: the listed STUN server (our own, on loopback) tells.
		got, how, err = discoverPublicIP(ctx, netip.MustParseAddr(private), []string{stunAddr})
		if err != nil || got != netip.MustParseAddr("127.0.0.1") || !strings.Contains(how, stunAddr) {
			t.Errorf("%s via STUN: %v %q %v", private, got, how, err)
		}
		// Nothing to ask: a clear error that says what to set.
		if _, _, err := discoverPublicIP(ctx, netip.MustParseAddr(private), nil); err == nil || !strings.Contains(err.Error(), "set public_ip") {
			t.Errorf("%s with no STUN servers: %v", private, err)
		}
	}
}

// TestWarnsForNonPublicAddress: a documentation-range address is neither
// public nor private (RFC 1918); start-up must still warn, naming the range.
func TestWarnsForNonPublicAddress(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.2": "documentation TEST-NET-1 (RFC 5737)",
		"10.0.0.7":  "private (RFC 1918)",
		"1.2.3.4":   "",
	} {
		cfg := testConfig(t)
		cfg.PublicIP = addr // announced only: relays stay on 127.0.0.1
		_, logs := startDaemon(t, cfg)
		warned := strings.Contains(logs.String(), "clients are told a non-public address")
		if want == "" && warned || want != "" && (!warned || !strings.Contains(logs.String(), want)) {
			t.Errorf("public_ip %s: want a warning naming %q, log:\n%s", addr, want, logs)
		}
	}
}

// routeSourceIPv4 is what icebox knows of its own address when the
// interfaces cannot be listed (systemd without AF_NETLINK): it must name
// an IPv4 address this host really has.
func TestRouteSourceIPv4IsOwnAddress(t *testing.T) {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		t.Skip("cannot list interfaces to compare with")
	}
	have := map[netip.Addr]bool{}
	for _, ifa := range ifas {
		if ipn, ok := ifa.(*net.IPNet); ok {
			a, _ := netip.AddrFromSlice(ipn.IP)
			have[a.Unmap()] = true
		}
	}
	a, ok := routeSourceIPv4()
	if !ok {
		t.Skip("no IPv4 default route on this machine")
	}
	if !a.Is4() || !have[a] {
		t.Errorf("route source %v is not an IPv4 address of this host (%v)", a, ifas)
	}
}
