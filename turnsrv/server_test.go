package turnsrv

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"icebox/internal/testenv"
)

// TestRelay allocates with pion's client over UDP and TCP and relays to a
// UDP echo peer both ways, through Send and Data indications and through
// ChannelData.
func TestRelay(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, testConfig())
			user, pass, _ := ts.MintCredential("alice", 0)
			client, wire := dialTURN(t, network, ts.addr(network), user, pass)
			relay, err := client.Allocate()
			if err != nil {
				t.Fatal(err)
			}
			defer relay.Close()
			if got := relay.LocalAddr().(*net.UDPAddr).IP.String(); got != "127.0.0.1" {
				t.Errorf("relay address %s, want the public IP 127.0.0.1", got)
			}
			echo := udpEcho(t)
			relay.SetReadDeadline(time.Now().Add(10 * time.Second))

			// The first write goes out as a Send indication while pion's
			// client binds a channel; later ones as ChannelData.
			buf := make([]byte, 1500)
			for i := 0; wire.sentChannelData.Load() == 0 || wire.gotChannelData.Load() == 0; i++ {
				if i == 200 {
					t.Fatalf("no ChannelData both ways after %d round trips", i)
				}
				msg := []byte(fmt.Sprintf("hello %d", i))
				if _, err := relay.WriteTo(msg, echo); err != nil {
					t.Fatal(err)
				}
				n, from, err := relay.ReadFrom(buf)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf[:n], msg) || from.String() != echo.String() {
					t.Fatalf("got %q from %v, want %q from %v", buf[:n], from, msg, echo)
				}
			}
			if wire.sentSend.Load() == 0 {
				t.Error("no Send indication was used")
			}

			// A peer on a port without a channel reaches the client through
			// a Data indication: the permission is per IP address.
			other, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			if _, err := other.WriteTo([]byte("unsolicited"), relay.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			n, from, err := relay.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "unsolicited" || from.String() != other.LocalAddr().String() {
				t.Fatalf("got %q from %v (%v), want the unsolicited datagram", buf[:n], from, err)
			}
			if wire.gotData.Load() == 0 {
				t.Error("no Data indication was received")
			}

			m := ts.metrics
			if v := testenv.MetricValue(t, m.allocActive); v != 1 {
				t.Errorf("allocations_active = %v, want 1", v)
			}
			if testenv.MetricValue(t, m.toPeerPackets) == 0 || testenv.MetricValue(t, m.fromPeerBytes) == 0 {
				t.Error("relayed traffic was not counted")
			}
		})
	}
}

// TestNewNeedsAnIPv4PublicIP: main chooses the address clients are told;
// New refuses to start without one, or with one relays cannot use, and
// refuses a config that has TURN off.
func TestNewNeedsAnIPv4PublicIP(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	off := testConfig()
	off.Enabled = false
	for name, tc := range map[string]struct {
		cfg  Config
		ip   netip.Addr
		want string
	}{
		"no public IP": {testConfig(), netip.Addr{}, "no public IP"},
		"IPv6":         {testConfig(), netip.MustParseAddr("2001:db8::1"), "not IPv4"},
		"TURN off":     {off, netip.MustParseAddr("127.0.0.1"), "enabled is false"},
	} {
		s, err := New(tc.cfg, Options{PublicIP: tc.ip, StateDir: t.TempDir(), PacketConns: []net.PacketConn{pc}})
		if err == nil {
			s.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}
