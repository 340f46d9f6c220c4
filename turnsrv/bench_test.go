package turnsrv

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"icebox/internal/credentials"
	"icebox/internal/testenv"
)

// infoLogger logs as a production server does, so benchmarks don't
// measure debug logging.
func infoLogger(o *Options) {
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// fakeConn is a PacketConn that reads one fixed datagram forever and
// swallows writes: it isolates icebox's wrappers from the kernel.
type fakeConn struct {
	net.PacketConn
	packet []byte
	from   net.Addr
}

func (f *fakeConn) ReadFrom(p []byte) (int, net.Addr, error)  { return copy(p, f.packet), f.from, nil }
func (f *fakeConn) WriteTo(p []byte, _ net.Addr) (int, error) { return len(p), nil }

func channelData(n int) []byte {
	b := make([]byte, 4+n)
	binary.BigEndian.PutUint16(b, 0x4000)
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	return b
}

// wrapperServer is a Server with just what the wrappers touch.
func wrapperServer() *Server {
	s := &Server{metrics: newMetrics(), quotas: newQuotas()}
	s.dp = newDataPlane(s)
	relay := []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	s.live.Store(&live{cfg: DefaultConfig(), policy: newPeerPolicy(PeerConfig{}, nil, relay)})
	s.relayPorts.add(50000)
	return s
}

// The per-packet code icebox wraps pion's path in must not allocate: the
// client-facing read of ChannelData that the data plane does not know
// (no allocation here: the fakeConn has no fast path), so it goes to
// pion, the relay socket's counted read and policy-checked write for
// pion, and the data plane's policy check. The data plane's own path, on
// real sockets, is TestFastPathAllocatesNothing's.
func TestHotPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	s := wrapperServer()
	client := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 40000}
	front := &packetConn{PacketConn: &fakeConn{packet: channelData(160), from: client}, s: s}
	relay := &relayConn{PacketConn: &fakeConn{packet: make([]byte, 160), from: client}, s: s}
	buf := make([]byte, 1600)
	public := &net.UDPAddr{IP: net.IPv4(8, 8, 8, 8), Port: 3478}
	otherRelay := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 50000}
	var ch dpChannel
	for name, f := range map[string]func(){
		"front ReadFrom ChannelData for pion": func() { front.ReadFrom(buf) },
		"relay ReadFrom for pion":             func() { relay.ReadFrom(buf) },
		"relay WriteTo public peer":           func() { relay.WriteTo(buf[:160], public) },
		"relay WriteTo other relay":           func() { relay.WriteTo(buf[:160], otherRelay) },
		// AllocsPerRun's warm-up run makes the verdict; then it is cached.
		"data plane policy check": func() { s.dp.allowed(&ch.verdict, otherRelay.AddrPort()) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocs per packet, want 0", name, n)
		}
	}
}

func BenchmarkFrontDoorChannelData(b *testing.B) {
	s := wrapperServer()
	front := &packetConn{PacketConn: &fakeConn{packet: channelData(160), from: &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 4}}, s: s}
	buf := make([]byte, 1600)
	b.ReportAllocs()
	for b.Loop() {
		front.ReadFrom(buf)
	}
}

// BenchmarkDataPlanePolicyCheck is the peer policy's per-packet cost on
// the data plane's path, with the verdict cached for the channel: for a
// public peer, and for a peer on the relay address (another allocation's
// relay, the case whose port is checked per packet).
func BenchmarkDataPlanePolicyCheck(b *testing.B) {
	s := wrapperServer()
	for name, peer := range map[string]netip.AddrPort{
		"public":      netip.MustParseAddrPort("8.8.8.8:3478"),
		"other_relay": netip.MustParseAddrPort("192.0.2.10:50000"),
	} {
		b.Run(name, func(b *testing.B) {
			var ch dpChannel
			if !s.dp.allowed(&ch.verdict, peer) {
				b.Fatalf("%v refused", peer)
			}
			b.ReportAllocs()
			for b.Loop() {
				s.dp.allowed(&ch.verdict, peer)
			}
		})
	}
}

func BenchmarkRelayConnWriteTo(b *testing.B) {
	s := wrapperServer()
	relay := &relayConn{PacketConn: &fakeConn{}, s: s}
	payload := make([]byte, 160)
	to := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 50000} // the checked case
	b.ReportAllocs()
	for b.Loop() {
		relay.WriteTo(payload, to)
	}
}

// BenchmarkInspectSignedRequest is the control-path cost of verifying
// MESSAGE-INTEGRITY (per secret tried) for one authenticated request.
func BenchmarkInspectSignedRequest(b *testing.B) {
	s := wrapperServer()
	s.realm = testRealm
	lv := *s.live.Load()
	lv.secrets = [][]byte{[]byte("new-secret-0123456789abcdef"), []byte(testSecret)}
	s.live.Store(&lv)
	u, p, _ := credentials.Mint([]byte(testSecret), "bench", time.Hour, time.Now())
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest),
		lifetimeAttr(10*time.Minute), stun.NewUsername(u), stun.NewRealm(testRealm), stun.NewNonce("n"),
		stun.NewLongTermIntegrity(u, testRealm, p), stun.Fingerprint)
	if err != nil {
		b.Fatal(err)
	}
	from := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 4}
	s.quotas.created("bench", connIDOf(from)) // a Refresh needs an allocation
	tr := &capture{}
	b.ReportAllocs()
	for b.Loop() {
		if !s.inspect(m.Raw, from, tr) {
			b.Fatal("dropped")
		}
	}
	if testenv.MetricValue(b, s.metrics.authFailures[authBadMAC]) != 0 {
		b.Fatal("the request did not verify")
	}
}

// BenchmarkChannelDataRelay is one ChannelData packet from a client through
// icebox and pion to a UDP peer on 127.0.0.1, end to end; allocs/op
// includes pion's.
func BenchmarkChannelDataRelay(b *testing.B) {
	ts := startServer(b, testConfig(), infoLogger)
	sink, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	peer := sink.LocalAddr().(*net.UDPAddr)
	u, p, _ := ts.MintCredential("bench", 0)
	c := dialRaw(b, "udp", ts.udp, u, p)
	if res := c.do(stun.MethodAllocate, udpTransport()); res.Type.Class != stun.ClassSuccessResponse {
		b.Fatal(res)
	}
	if res := c.do(stun.MethodChannelBind, channelAttr(0x4000), peerAttr(peer.IP, peer.Port)); res.Type.Class != stun.ClassSuccessResponse {
		b.Fatal(res)
	}
	frame := channelData(160)
	buf := make([]byte, 2048)
	sink.SetReadDeadline(time.Now().Add(time.Minute))
	b.SetBytes(160)
	b.ReportAllocs()
	for b.Loop() {
		c.send(frame)
		if n, _, err := sink.ReadFrom(buf); err != nil || n != 160 {
			b.Fatalf("peer got %d bytes: %v", n, err)
		}
	}
}

// BenchmarkAllocate is one authenticated Allocate and its release by
// Refresh with lifetime 0, both answered, over UDP on 127.0.0.1.
func BenchmarkAllocate(b *testing.B) {
	cfg := testConfig()
	cfg.Quotas.PerUser = 0
	ts := startServer(b, cfg, infoLogger)
	u, p, _ := ts.MintCredential("bench", 0)
	c := dialRaw(b, "udp", ts.udp, u, p)
	b.ReportAllocs()
	for b.Loop() {
		if res := c.do(stun.MethodAllocate, udpTransport()); res.Type.Class != stun.ClassSuccessResponse {
			b.Fatal(res)
		}
		if res := c.do(stun.MethodRefresh, lifetimeAttr(0)); res.Type.Class != stun.ClassSuccessResponse {
			b.Fatal(res)
		}
	}
}
