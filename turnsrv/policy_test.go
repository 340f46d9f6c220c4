package turnsrv

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"

	"icebox/internal/testenv"
)

// policyCases are the peer address forms every listener must judge alike.
// The server under test is told relays live at 127.0.0.2.
var policyCases = []struct {
	peer, why string // why: the refusal reason, "" for allowed
}{
	// Loopback and its disguises.
	{"127.0.0.1", refuseReserved},
	{"127.255.0.1", refuseReserved},
	{"::ffff:127.0.0.1", refuseReserved},   // IPv4-mapped
	{"::127.0.0.1", refuseReserved},        // IPv4-compatible
	{"::ffff:0:127.0.0.1", refuseReserved}, // IPv4-translated
	{"64:ff9b::7f00:1", refuseReserved},    // NAT64
	{"2002:7f00:1::1", refuseReserved},     // 6to4
	{"::1", refuseReserved},                // IPv6 loopback
	{"2001:0:4136:e378:8000:63bf:3fff:fdd2", refuseTeredo},
	// Cloud metadata, in every form.
	{"169.254.169.254", refuseReserved},
	{"::ffff:169.254.169.254", refuseReserved},
	{"64:ff9b::a9fe:a9fe", refuseReserved},
	{"2002:a9fe:a9fe::1", refuseReserved},
	// Unspecified, private, shared, link-local, site-local, unique local.
	{"0.0.0.0", refuseReserved},
	{"::", refuseReserved},
	{"10.1.2.3", refuseReserved},
	{"::ffff:10.1.2.3", refuseReserved},
	{"172.16.5.4", refuseReserved},
	{"192.168.1.1", refuseReserved},
	{"2002:c0a8:101::1", refuseReserved}, // 6to4 of 192.168.1.1
	{"100.64.0.1", refuseReserved},
	{"fe80::1", refuseReserved},
	{"fec0::1", refuseReserved},
	{"fd12:3456::1", refuseReserved},
	// Multicast, broadcast, reserved, documentation, benchmarking.
	{"224.0.0.251", refuseReserved},
	{"ff02::1", refuseReserved},
	{"255.255.255.255", refuseReserved},
	{"240.0.0.1", refuseReserved},
	{"192.0.2.1", refuseReserved},
	{"198.51.100.1", refuseReserved},
	{"203.0.113.1", refuseReserved},
	{"2001:db8::1", refuseReserved},
	{"198.18.0.1", refuseReserved},
	{"2001:2::1", refuseReserved},
	// turn.peers.deny of the server under test.
	{"8.8.4.4", refuseDenied},
	{"::ffff:8.8.4.4", refuseDenied},
	// The public internet, and the relay address itself (another client's
	// relay; which port is checked per packet).
	{"8.8.8.8", ""},
	{"::ffff:8.8.8.8", ""},
	{"64:ff9b::808:808", ""},
	{"2002:808:808::1", ""},
	{"2606:4700:4700::1111", ""},
	{"127.0.0.2", ""},
	{"::ffff:127.0.0.2", ""},
}

// TestPeerPolicy runs every case through CreatePermission (pion's client)
// and ChannelBind (sent directly, without a permission first) over the UDP
// and the TCP listener. No packet is sent to any peer.
func TestPeerPolicy(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Relay.Address = "0.0.0.0"
	cfg.Peers.Allow = nil
	cfg.Peers.Deny = []string{"8.8.4.0/24"}
	ts := startServer(t, cfg, func(o *Options) { o.PublicIP = netip.MustParseAddr("127.0.0.2") })

	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			u, p, _ := ts.MintCredential("policy-"+network, 0)
			client, wire := dialTURN(t, network, ts.addr(network), u, p)
			if _, err := client.Allocate(); err != nil {
				t.Fatal(err)
			}
			raw := dialRaw(t, network, ts.addr(network), u, p)
			if res := raw.do(stun.MethodAllocate, udpTransport()); res.Type.Class != stun.ClassSuccessResponse {
				t.Fatalf("raw allocate: %v", res)
			}
			for i, tc := range policyCases {
				ip := net.ParseIP(tc.peer)
				var before float64
				if tc.why != "" {
					before = testenv.MetricValue(t, ts.metrics.peerRefusals[tc.why])
				}
				port := 10000 + i // a peer address may hold only one channel
				sent := wire.sentPermissions.Load()
				permErr := client.CreatePermission(&net.UDPAddr{IP: ip, Port: port})
				// Every request the server refuses counts: each
				// CreatePermission pion sent (a retransmission too) and
				// the one ChannelBind.
				want := float64(wire.sentPermissions.Load()-sent) + 1
				bind := raw.do(stun.MethodChannelBind, channelAttr(uint16(0x4000+i)), peerAttr(ip, port))
				if tc.why == "" && ip.To4() == nil {
					// The policy allows it, but relays are IPv4: 443
					// (RFC 8656 §9.1), never a grant nobody can use.
					if permErr == nil || errorCode(bind) != 443 {
						t.Errorf("%s: CreatePermission error %v, ChannelBind %v (code %d); want both refused with 443", tc.peer, permErr, bind.Type, errorCode(bind))
					}
					continue
				}
				if allowed := tc.why == ""; allowed != (permErr == nil) || allowed != (bind.Type.Class == stun.ClassSuccessResponse) {
					t.Errorf("%s: CreatePermission error %v, ChannelBind %v; want allowed=%v", tc.peer, permErr, bind.Type, allowed)
					continue
				}
				if tc.why != "" {
					if got := testenv.MetricValue(t, ts.metrics.peerRefusals[tc.why]); got != before+want {
						t.Errorf("%s: peer_refusals{reason=%q} %v -> %v, want +%v", tc.peer, tc.why, before, got, want)
					}
				}
			}

			// peers.allow opens a range on purpose, and Reload applies it.
			cfg := cfg
			cfg.Peers.Allow = []string{"10.0.0.0/8"}
			if err := ts.Reload(cfg); err != nil {
				t.Fatal(err)
			}
			defer ts.Reload(ts.cfg)
			if err := client.CreatePermission(&net.UDPAddr{IP: net.ParseIP("10.9.8.7"), Port: 9}); err != nil {
				t.Errorf("10.9.8.7 after allowing 10.0.0.0/8: %v", err)
			}
			if err := client.CreatePermission(&net.UDPAddr{IP: net.ParseIP("2001:0:4136:e378:8000:63bf:f5f6:f7f6"), Port: 9}); err == nil {
				t.Error("Teredo allowed")
			}
		})
	}
}

// TestRelayToRelay: two relay-only clients on one server reach each other
// through the relay address, which the own-address rule would otherwise
// refuse, but nothing else listening on that address is reachable.
func TestRelayToRelay(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Peers.Allow = nil
	ts := startServer(t, cfg)

	relays := make([]net.PacketConn, 2)
	clients := make([]*turn.Client, 2)
	for i := range relays {
		u, p, _ := ts.MintCredential("peer", 0)
		clients[i], _ = dialTURN(t, "udp", ts.udp, u, p)
		r, err := clients[i].Allocate()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		r.SetReadDeadline(time.Now().Add(10 * time.Second))
		relays[i] = r
	}
	a, b := relays[0], relays[1]
	// As ICE does, each side permits the other's relay before traffic.
	if err := clients[0].CreatePermission(b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := clients[1].CreatePermission(a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	transfer := func(from, to net.PacketConn, msg string) {
		t.Helper()
		if _, err := from.WriteTo([]byte(msg), to.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, src, err := to.ReadFrom(buf)
		if err != nil || string(buf[:n]) != msg || src.String() != from.LocalAddr().String() {
			t.Fatalf("got %q from %v (%v), want %q from %v", buf[:n], src, err, msg, from.LocalAddr())
		}
	}
	transfer(a, b, "a to b")
	transfer(b, a, "b to a")

	// Something else on the relay address: the client may hold a
	// permission for the address, but no packet reaches that port.
	victim, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	if _, err := a.WriteTo([]byte("attack"), victim.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	// The server handles a's messages in order: once this arrives, the
	// attack has been dealt with, and loopback delivery is synchronous.
	transfer(a, b, "after")
	if n := pending(t, victim); n > 0 {
		t.Fatalf("victim received %d bytes", n)
	}
	if got := testenv.MetricValue(t, ts.metrics.peerRefusals[refuseRelayPort]); got < 1 {
		t.Error("relay_port refusal not counted")
	}
}

func TestPeerPolicyUnit(t *testing.T) {
	own := []netip.Addr{netip.MustParseAddr("8.8.8.8")}
	relay := []netip.Addr{netip.MustParseAddr("198.51.100.7")}
	p := newPeerPolicy(PeerConfig{Allow: []string{"10.0.0.0/8", "::/0"}, Deny: []string{"9.9.9.0/24"}}, own, relay)
	for _, tc := range []struct{ peer, why string }{
		{"8.8.8.8", refuseOwn},
		{"::ffff:8.8.8.8", refuseOwn},
		{"2002:808:808::", refuseOwn},
		{"64:ff9b::808:808", refuseOwn},
		{"::8.8.8.8", refuseOwn},
		{"198.51.100.7", ""}, // the relay address wins over the documentation range
		{"198.51.100.8", refuseReserved},
		{"10.1.1.1", ""}, // allowed on purpose
		{"::ffff:10.1.1.1", ""},
		{"9.9.9.9", refuseDenied},
		{"2002:909:909::", refuseDenied},
		{"2001:0:1:2:3:4:5:6", refuseTeredo}, // even under an allow of ::/0
		{"1.1.1.1", ""},
	} {
		if got := p.refusal(net.ParseIP(tc.peer)); got != tc.why {
			t.Errorf("%s: refusal %q, want %q", tc.peer, got, tc.why)
		}
	}
}

// A deny entry naming an IPv6 range that embeds IPv4 addresses refuses
// those addresses in that form, not only their canonical IPv4.
func TestPeerDenyMatchesWrittenForm(t *testing.T) {
	p := newPeerPolicy(PeerConfig{Deny: []string{"2002::/16", "64:ff9b::/96"}}, nil, nil)
	for _, tc := range []struct{ peer, why string }{
		{"2002:101:101::", refuseDenied},
		{"64:ff9b::101:101", refuseDenied},
		{"1.1.1.1", ""},
		{"::ffff:1.1.1.1", ""},
	} {
		if got := p.refusal(net.ParseIP(tc.peer)); got != tc.why {
			t.Errorf("%s: refusal %q, want %q", tc.peer, got, tc.why)
		}
	}
}

func TestPortSet(t *testing.T) {
	var s portSet
	for _, p := range []int{0, 1, 63, 64, 49152, 65535} {
		s.add(p)
		if !s.has(p) {
			t.Errorf("port %d missing", p)
		}
		s.del(p)
		if s.has(p) {
			t.Errorf("port %d still present", p)
		}
	}
	if s.has(-1) || s.has(65536) {
		t.Error("out of range ports present")
	}
}

// pending returns the size of the datagram queued on c, without waiting:
// a read deadline in the past would not even look.
func pending(t *testing.T, c net.PacketConn) int {
	t.Helper()
	rc, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = rc.Read(func(fd uintptr) bool {
		var rerr error
		n, _, rerr = syscall.Recvfrom(int(fd), make([]byte, 2048), syscall.MSG_DONTWAIT)
		if rerr != nil {
			n = 0
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
