package main

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

func TestDiscoverPublicIP(t *testing.T) {
	d, _ := startDaemon(t, testConfig(t))
	stunAddr := d.stun.PacketConns()[0].LocalAddr().String()
	ctx := context.Background()

	// A public interface address wins without asking anyone.
	got, how, err := discoverPublicIP(ctx, netip.MustParseAddr("198.51.100.9"), []string{"127.0.0.1:1"})
	if err != nil || got != netip.MustParseAddr("198.51.100.9") || how != "host interface" {
		t.Errorf("with a public interface: %v %q %v", got, how, err)
	}
	for _, private := range []string{"127.0.0.1", "10.1.2.3", "100.64.1.1", "172.16.0.1"} {
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
