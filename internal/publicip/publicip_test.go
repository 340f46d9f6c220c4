package publicip

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"icebox/internal/stuntest"
)

func TestDiscover(t *testing.T) {
	stunAddr := stuntest.Responder(t)
	ctx := context.Background()

	// A public interface address wins without asking anyone: the listed
	// server is closed, so asking it would fail.
	got, how, err := discover(ctx, netip.MustParseAddr("1.2.3.4"), []string{"127.0.0.1:1"})
	if err != nil || got != netip.MustParseAddr("1.2.3.4") || how != "host interface" {
		t.Errorf("with a public interface: %v %q %v", got, how, err)
	}
	// Not public either: a host whose only address is in a documentation
	// range (192.0.2.0/24) is not on the internet.
	for _, private := range []string{"127.0.0.1", "10.1.2.3", "100.64.1.1", "172.16.0.1", "192.0.2.2"} {
		// Behind NAT: the listed STUN server (our own, on loopback) tells,
		// after one that does not answer.
		got, how, err = discover(ctx, netip.MustParseAddr(private), []string{"127.0.0.1:1", stunAddr})
		if err != nil || got != netip.MustParseAddr("127.0.0.1") || !strings.Contains(how, stunAddr) {
			t.Errorf("%s via STUN: %v %q %v", private, got, how, err)
		}
		// Nothing to ask: a clear error that says what to set.
		if _, _, err := discover(ctx, netip.MustParseAddr(private), nil); err == nil || !strings.Contains(err.Error(), "set public_ip") {
			t.Errorf("%s with no STUN servers: %v", private, err)
		}
		// Nobody answers: the error says so.
		if _, _, err := discover(ctx, netip.MustParseAddr(private), []string{"127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "no STUN server answered") {
			t.Errorf("%s with a closed STUN port: %v", private, err)
		}
	}
}

// TestResolve: each public_ip value leads where config.yaml says.
func TestResolve(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		cfg  Config
		want string
		how  string
	}{
		{Config{PublicIP: "203.0.113.10"}, "203.0.113.10", "config"},
		{Config{PublicIP: "::ffff:203.0.113.10"}, "203.0.113.10", "config"},
		{Config{PublicIP: "", RelayAddress: "127.0.0.2"}, "127.0.0.2", "relay address"},
		// auto with a specific relay address that is not public: the
		// operator's STUN server is asked.
		{Config{PublicIP: Auto, RelayAddress: "127.0.0.2", STUNServers: []string{stuntest.Responder(t)}}, "127.0.0.1", "STUN server"},
	} {
		got, how, err := Resolve(ctx, tc.cfg)
		if err != nil || got.String() != tc.want || !strings.Contains(how, tc.how) {
			t.Errorf("Resolve(%+v) = %v %q %v, want %s by %q", tc.cfg, got, how, err, tc.want, tc.how)
		}
	}
}

// TestResolveRefusesWhatCheckRefuses: a value Check refuses is an error
// from Resolve too, said once (callers name the option).
func TestResolveRefusesWhatCheckRefuses(t *testing.T) {
	_, _, err := Resolve(context.Background(), Config{PublicIP: "0.0.0.0"})
	if err == nil || strings.Contains(err.Error(), "public_ip") {
		t.Errorf("Resolve(0.0.0.0) = %v, want Check's error", err)
	}
}

func TestCheck(t *testing.T) {
	for v, ok := range map[string]bool{
		"": true, Auto: true, "203.0.113.10": true, "::ffff:1.2.3.4": true,
		"0.0.0.0": false, "2001:db8::1": false, "example.com": false, "AUTO": false,
	} {
		if err := Check(v); (err == nil) != ok {
			t.Errorf("Check(%q) = %v, want ok %v", v, err, ok)
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
