package turnsrv

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"

	"icebox/internal/stunwire"
	"icebox/internal/testenv"
)

// The tests here are the findings of the attack review (issue 10): each
// failed on the code before its fix.

// TestKeyStoreBounded: signed requests pion never authenticates (its
// nonce is stale, or there is none) replayed from 300 source ports leave
// at most one key per reader behind, where the old store kept one per
// source until it had 4,096 and then scanned them all on every insert.
func TestKeyStoreBounded(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Quotas.AnswerRate = 0
	ts := startServer(t, cfg)
	u, p, _ := ts.MintCredential("replay", 0)
	for i := range 300 {
		c := dialRaw(t, "udp", ts.udp, u, p)
		c.nonce = stun.NewNonce("stale-or-forged")
		req := c.build(stun.MethodAllocate, true, udpTransport())
		if i%2 == 1 { // no NONCE: pion answers 400 and never asks for a key
			req = c.build(stun.MethodAllocate, false, udpTransport(), c.user, c.realm, c.key)
		}
		if res := c.roundTrip(req); res.Type.Class != stun.ClassErrorResponse {
			t.Fatalf("replay %d: %v", i, res)
		}
		c.conn.Close()
	}
	ts.keys.mu.Lock()
	n := len(ts.keys.m)
	ts.keys.mu.Unlock()
	if n > 1 {
		t.Fatalf("%d keys held after 300 replays from one UDP socket's clients, want at most 1", n)
	}
	// The store still works: a real client allocates.
	client, _ := dialTURN(t, "udp", ts.udp, u, p)
	relay, err := client.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	relay.Close()
}

// TestUnsignedAnswersRationed: a flood of 20-byte unsigned Allocates from
// one address gets at most 2×answer_rate 401s plus the refill, so icebox
// reflects little at a forged source; a client on another address is
// answered as usual meanwhile.
func TestUnsignedAnswersRationed(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Quotas.AnswerRate = 4
	ts := startServer(t, cfg)
	flood, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3)}, ts.udp.(*net.UDPAddr))
	if err != nil {
		t.Skipf("127.0.0.3 unusable: %v", err)
	}
	defer flood.Close()
	const sent = 400
	req := make([]byte, 20+8)
	req[1] = 0x03 // Allocate request
	req[3] = 8
	copy(req[4:8], []byte{0x21, 0x12, 0xA4, 0x42})
	copy(req[20:], []byte{0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0})
	r := floodRequests(t, ts, flood, [][]byte{req}, sent, func([]byte) {})
	if limit := r.ration(cfg.Quotas.AnswerRate); r.answered > limit {
		t.Errorf("%d of %d unsigned requests answered in %v, want at most %d", r.answered, sent, r.elapsed, limit)
	}
	t.Logf("flood: %d requests, %d B in; %d answers, %d B out (ratio %.3f)", sent, r.bytesIn, r.answered, r.bytesOut,
		float64(r.bytesOut)/float64(r.bytesIn))

	// Another address is answered and allocates.
	u, p, _ := ts.MintCredential("bystander", 0)
	client, _ := dialTURN(t, "udp", ts.udp, u, p)
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("a client on another address: %v", err)
	}
	relay.Close()
}

// TestRightAnswers: icebox answers what pion would get wrong. A TCP relay
// or an IPv6 relay is refused with 442 or 440 (not granted as UDP/IPv4),
// an IPv6 peer of an IPv4 relay with 443, a refused peer with 403 on CreatePermission and ChannelBind (not a code-
// less error or 401), and a request for an allocation that does not exist
// (e.g. after a restart) with 437 at once (not silence). Each answer is
// signed, so the client can trust it.
func TestRightAnswers(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig())
	for _, network := range []string{"udp", "tcp"} {
		u, p, _ := ts.MintCredential("answers", 0)
		c := dialRaw(t, network, ts.addr(network), u, p)
		check := func(what string, res *stun.Message, code int) {
			t.Helper()
			if got := errorCode(res); got != code {
				t.Errorf("%s %s: %v (code %d), want %d", network, what, res, got, code)
				return
			}
			if err := c.key.Check(res); err != nil {
				t.Errorf("%s %s: answer not signed: %v", network, what, err)
			}
		}
		check("Refresh without an allocation", c.do(stun.MethodRefresh, lifetimeAttr(10*time.Minute)), 437)
		check("CreatePermission without an allocation", c.do(stun.MethodCreatePermission, peerAttr(net.IPv4(127, 0, 0, 1), 9)), 437)
		check("ChannelBind without an allocation", c.do(stun.MethodChannelBind, channelAttr(0x4000), peerAttr(net.IPv4(127, 0, 0, 1), 9)), 437)
		check("Allocate over TCP", c.do(stun.MethodAllocate, rawAttr(stun.AttrRequestedTransport, []byte{6, 0, 0, 0})), 442)
		check("Allocate for IPv6", c.do(stun.MethodAllocate, udpTransport(), rawAttr(stun.AttrRequestedAddressFamily, []byte{2, 0, 0, 0})), 440)
		if res := c.do(stun.MethodAllocate, udpTransport()); res.Type.Class != stun.ClassSuccessResponse {
			t.Fatalf("%s allocate: %v", network, res)
		}
		for _, peer := range []string{"10.0.0.1", "169.254.169.254", "::ffff:192.168.1.1", "64:ff9b::a00:1"} {
			ip := net.ParseIP(peer)
			check("CreatePermission to "+peer, c.do(stun.MethodCreatePermission, peerAttr(ip, 9)), 403)
			check("ChannelBind to "+peer, c.do(stun.MethodChannelBind, channelAttr(0x4001), peerAttr(ip, 9)), 403)
		}
		// A public IPv6 peer is allowed by the policy, but relays are
		// IPv4: 443, not a grant the data plane could not honour.
		v6 := net.ParseIP("2606:4700::1111")
		check("CreatePermission to an IPv6 peer", c.do(stun.MethodCreatePermission, peerAttr(v6, 9)), 443)
		check("ChannelBind to an IPv6 peer", c.do(stun.MethodChannelBind, channelAttr(0x4002), peerAttr(v6, 9)), 443)
		// An IPv4 peer written as IPv6 is of the wrong family too, and a
		// peer address cut short is malformed (pion reads both).
		check("CreatePermission to ::ffff:127.0.0.1 as IPv6", c.do(stun.MethodCreatePermission, v4AsV6Peer(net.IPv4(127, 0, 0, 1), 9)), 443)
		check("ChannelBind to a peer address cut short",
			c.do(stun.MethodChannelBind, channelAttr(0x4003), rawAttr(stun.AttrXORPeerAddress, []byte{0, 1, 0, 9, 0x5e})), 400)
		// One refused peer among allowed ones refuses the request.
		check("CreatePermission with one refused peer",
			c.do(stun.MethodCreatePermission, peerAttr(net.IPv4(127, 0, 0, 1), 9), peerAttr(net.IPv4(10, 0, 0, 1), 9)), 403)
		if res := c.do(stun.MethodCreatePermission, peerAttr(net.IPv4(127, 0, 0, 1), 9)); res.Type.Class != stun.ClassSuccessResponse {
			t.Errorf("%s CreatePermission to an allowed peer: %v", network, res)
		}
		if res := c.do(stun.MethodRefresh, lifetimeAttr(0)); res.Type.Class != stun.ClassSuccessResponse {
			t.Errorf("%s release: %v", network, res)
		}
	}
	ts.waitAllocations(t, 0)
}

// v4AsV6Peer is an XOR-PEER-ADDRESS of the IPv6 family holding ip as an
// IPv4-mapped address, which pion/stun's encoder would write as IPv4.
func v4AsV6Peer(ip net.IP, port int) stun.Setter {
	return setter(func(m *stun.Message) error {
		v := binary.BigEndian.AppendUint16(nil, 2)
		v = binary.BigEndian.AppendUint16(v, uint16(port)^stunwire.MagicCookie>>16)
		xor := binary.BigEndian.AppendUint32(nil, stunwire.MagicCookie)
		xor = append(xor, m.TransactionID[:]...)
		for i, b := range ip.To16() {
			v = append(v, b^xor[i])
		}
		m.Add(stun.AttrXORPeerAddress, v)
		return nil
	})
}

// TestRelayExceptionCanonical: the relay address's exception in the peer
// policy holds for every form of it (as every rule does), so the
// per-packet port check must see through every IPv6 form too: a NAT64,
// 6to4 or compatible spelling of the relay address reaches live relay
// ports only.
func TestRelayExceptionCanonical(t *testing.T) {
	s := wrapperServer() // relay 192.0.2.10, live relay port 50000
	for _, ip := range []string{"192.0.2.10", "::ffff:192.0.2.10", "64:ff9b::c000:20a", "2002:c000:20a::", "::192.0.2.10"} {
		dst := &net.UDPAddr{IP: net.ParseIP(ip), Port: 3478}
		if !s.toRelayRefused(dst) {
			t.Errorf("a packet to %v (not a relay port) is let through", dst)
		}
		dst.Port = 50000
		if s.toRelayRefused(dst) {
			t.Errorf("a packet to the live relay %v is refused", dst)
		}
	}
}

// allocateFrom allocates with a pion client on a UDP socket bound to ip
// (any 127/8 address is loopback), returning the relay or the error.
func allocateFrom(t *testing.T, ts *testServer, ip string, user string) (net.PacketConn, error) {
	t.Helper()
	c, err := net.ListenPacket("udp4", ip+":0")
	if err != nil {
		t.Skipf("%s unusable: %v", ip, err)
	}
	u, p, _ := ts.MintCredential(user, 0)
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: ts.udp.String(), TURNServerAddr: ts.udp.String(),
		Username: u, Password: p, Conn: c, LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); c.Close() })
	return client.Allocate()
}

// TestFairShare: two addresses grabbing all the allocations they can no
// longer hold quotas.total between them: a third address still gets one.
// Before, per_ip (32) let 32 addresses hold all of total (1,000); here
// two of per_ip 32 held all of total 40.
func TestFairShare(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Quotas.PerUser, cfg.Quotas.PerIP, cfg.Quotas.Total = 0, 32, 40
	ts := startServer(t, cfg)
	held := 0
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		for range cfg.Quotas.PerIP {
			r, err := allocateFrom(t, ts, ip, "grabber")
			if err != nil {
				if turnCode(err) != int(stun.CodeAllocQuotaReached) {
					t.Fatalf("%s: %v", ip, err)
				}
				break
			}
			t.Cleanup(func() { r.Close() })
			held++
		}
	}
	r, err := allocateFrom(t, ts, "127.0.0.4", "newcomer")
	if err != nil {
		t.Fatalf("after two addresses took %d of %d allocations, a third got %v", held, cfg.Quotas.Total, err)
	}
	r.Close()
	if got := testenv.MetricValue(t, ts.metrics.quotaRefusals[quotaFair]); got < 2 {
		t.Errorf("fair_share refusals = %v, want one per grabbing address", got)
	}
	t.Logf("two grabbing addresses hold %d of %d", held, cfg.Quotas.Total)
}

// TestSmallRelayRange: every port of a 51-port relay range is used before
// an allocation gets 508, and a failed allocation does not keep holding
// its source's quota. Before, pion's 10 random tries failed well before
// the range was full, and each failure held a reservation for 10 s, so
// two addresses exhausted the range.
func TestSmallRelayRange(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Relay.Ports = testenv.FreeRelayRange(t, 51)
	cfg.Quotas.PerUser, cfg.Quotas.PerIP = 0, 26
	ts := startServer(t, cfg)
	var first net.PacketConn
	for i := range 51 {
		ip := []string{"127.0.0.2", "127.0.0.3"}[i%2]
		r, err := allocateFrom(t, ts, ip, "ranger")
		if err != nil {
			t.Fatalf("allocation %d of a 51-port range: %v", i+1, err)
		}
		if i == 0 {
			first = r
		} else {
			t.Cleanup(func() { r.Close() })
		}
	}
	if _, err := allocateFrom(t, ts, "127.0.0.3", "ranger"); turnCode(err) != int(stun.CodeInsufficientCapacity) {
		t.Fatalf("allocation 52: %v, want 508", err)
	}
	// 127.0.0.2 holds 26 (its per_ip), 127.0.0.3 25 after its failure:
	// once a port is free, 127.0.0.3 gets it at once.
	first.Close()
	ts.waitAllocations(t, 50)
	r, err := allocateFrom(t, ts, "127.0.0.3", "ranger")
	if err != nil {
		t.Fatalf("after a port was freed: %v", err)
	}
	r.Close()
}

// TestFailClosedWithoutInterfaces: when the host's addresses cannot be
// listed (systemd's RestrictAddressFamilies without AF_NETLINK), TURN
// refuses to start rather than relay to the host's other addresses, and
// says how to fix it; a reload that cannot list them keeps the old policy.
func TestFailClosedWithoutInterfaces(t *testing.T) {
	t.Parallel()
	noNetlink := func() ([]net.Addr, error) { return nil, errors.New("address family not supported by protocol") }
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	_, err = New(testConfig(), Options{PublicIP: netip.MustParseAddr("127.0.0.1"), StateDir: t.TempDir(),
		PacketConns: []net.PacketConn{pc}, InterfaceAddrs: noNetlink})
	if err == nil || !strings.Contains(err.Error(), "AF_NETLINK") {
		t.Fatalf("New without interfaces: %v, want a refusal naming AF_NETLINK", err)
	}

	fail := false
	ts := startServer(t, testConfig(), func(o *Options) {
		o.InterfaceAddrs = func() ([]net.Addr, error) {
			if fail {
				return noNetlink()
			}
			return net.InterfaceAddrs()
		}
	})
	fail = true
	if err := ts.Reload(testConfig()); err == nil {
		t.Fatal("reload without interfaces succeeded")
	}
}

// TestAnswerBudgetBounded: a spray of forged sources keeps the answer
// budget's memory at maxAnswerSources; past it, new sources share the
// overflow bucket, and a source already known keeps its own.
func TestAnswerBudgetBounded(t *testing.T) {
	var a answerBudget
	now := time.Now()
	known := netip.MustParseAddr("192.0.2.1")
	if !a.allow(known, now, 32) {
		t.Fatal("first answer refused")
	}
	overflowed := 0
	for i := range 2 * maxAnswerSources {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !a.allow(ip, now, 32) {
			overflowed++
		}
	}
	if n := len(a.src); n > maxAnswerSources {
		t.Errorf("%d sources kept, want at most %d", n, maxAnswerSources)
	}
	if overflowed < maxAnswerSources-overflowRate {
		t.Errorf("only %d of the sources beyond the bound were refused", overflowed)
	}
	if !a.allow(known, now, 32) {
		t.Error("a known source lost its own budget to the spray")
	}
}

// TestLongRealmFailuresRationed: with a 127-byte realm the 401 to a
// failed signed request (172 bytes) is three times the smallest such
// request (56 bytes: empty USERNAME, REALM and NONCE, and a
// MESSAGE-INTEGRITY). A flood of them from one address gets back at most
// what it sent plus the answers quotas.answer_rate allows; before, every
// one was answered. A client on another address still allocates.
func TestLongRealmFailuresRationed(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Realm = strings.Repeat("r", 127)
	cfg.Quotas.AnswerRate = 4
	ts := startServer(t, cfg)
	flood, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 5)}, ts.udp.(*net.UDPAddr))
	if err != nil {
		t.Skipf("127.0.0.5 unusable: %v", err)
	}
	defer flood.Close()
	// Two forgeries: empty USERNAME (malformed), and a current USERNAME
	// with an empty REALM (a foreign realm).
	forged := func(user string) []byte {
		req := binary.BigEndian.AppendUint16(nil, methodAllocate)
		req = append(req, 0, 0, 0x21, 0x12, 0xA4, 0x42)
		req = append(req, make([]byte, 12)...) // transaction ID
		req = appendAttr(req, answerAttr{stunwire.AttrUsername, []byte(user)})
		req = appendAttr(req, answerAttr{stunwire.AttrRealm, nil})
		req = appendAttr(req, answerAttr{stunwire.AttrNonce, nil})
		req = appendAttr(req, answerAttr{stunwire.AttrIntegrity, make([]byte, integrityLen)})
		binary.BigEndian.PutUint16(req[2:4], uint16(len(req)-stunwire.HeaderSize))
		return req
	}
	current, _, _ := ts.MintCredential("x", 0)
	reqs := [][]byte{forged(""), forged(current)}
	if len(reqs[0]) != 56 {
		t.Fatalf("the smallest forged request is %d bytes, want 56", len(reqs[0]))
	}
	const sent = 400
	r := floodRequests(t, ts, flood, reqs, sent, func(answer []byte) {
		m := &stun.Message{Raw: answer}
		if err := m.Decode(); err != nil || errorCode(m) != codeUnauthorized {
			t.Fatalf("answer %x to a forged request is not a 401 (%v)", answer, err)
		}
	})
	ration := r.ration(cfg.Quotas.AnswerRate)
	if r.answered > ration {
		t.Errorf("%d of %d forged requests answered in %v, want at most %d", r.answered, sent, r.elapsed, ration)
	}
	if r.bytesOut > r.bytesIn+ration*r.largest {
		t.Errorf("%d forged requests, %d B in, got %d answers, %d B out in %v; want at most %d B (the ration: %d answers)",
			sent, r.bytesIn, r.answered, r.bytesOut, r.elapsed, r.bytesIn+ration*r.largest, ration)
	}
	t.Logf("flood: %d requests, %d B in; %d answers of up to %d B, %d B out (ratio %.3f)", sent, r.bytesIn, r.answered, r.largest, r.bytesOut,
		float64(r.bytesOut)/float64(r.bytesIn))

	// Another address is answered and allocates.
	relay, err := allocateFrom(t, ts, "127.0.0.1", "bystander")
	if err != nil {
		t.Fatalf("a client on another address: %v", err)
	}
	relay.Close()
}

// floodResult is what a flood of requests from one address got back.
type floodResult struct {
	answered, bytesIn, bytesOut, largest int
	elapsed                              time.Duration
}

// ration is the most answers quotas.answer_rate allows in r.elapsed:
// the burst, the refill, and one for the clock.
func (r floodResult) ration(rate int) int {
	return 2*rate + int(r.elapsed.Seconds()*float64(rate)) + 1
}

// floodRequests sends sent requests from flood to ts, cycling through
// reqs, each with its own transaction ID, and passes every answer to
// check. They go in rounds of 40, each accounted for before the next, so
// the kernel's socket buffer never overflows: every request is either
// answered or counted unanswered, and the answers are read until the two
// add up.
func floodRequests(t *testing.T, ts *testServer, flood net.Conn, reqs [][]byte, sent int, check func(answer []byte)) floodResult {
	t.Helper()
	var r floodResult
	buf := make([]byte, 1500)
	deadline := time.Now().Add(20 * time.Second)
	start := time.Now()
	for i := range sent {
		req := reqs[i%len(reqs)]
		req[8] = byte(i)
		req[9] = byte(i >> 8)
		if _, err := flood.Write(req); err != nil {
			t.Fatal(err)
		}
		r.bytesIn += len(req)
		if (i+1)%40 != 0 {
			continue
		}
		for r.answered+int(testenv.MetricValue(t, ts.metrics.unanswered)) < i+1 {
			flood.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := flood.Read(buf)
			if err == nil {
				check(buf[:n])
				r.answered++
				r.bytesOut += n
				r.largest = max(r.largest, n)
			}
			if time.Now().After(deadline) {
				t.Fatalf("answered %d, unanswered %v of %d", r.answered, testenv.MetricValue(t, ts.metrics.unanswered), i+1)
			}
		}
	}
	r.elapsed = time.Since(start)
	return r
}

// TestUnauthorizedSize: the size inspect rations a 401 by, before it is
// built, is the size of the 401 it builds, for every realm and nonce
// length icebox accepts or a client may send.
func TestUnauthorizedSize(t *testing.T) {
	req := make([]byte, stunwire.HeaderSize)
	for realm := range 128 {
		for nonce := range 64 {
			got := errorResponse(req, methodAllocate, codeUnauthorized, nil,
				answerAttr{stunwire.AttrRealm, make([]byte, realm)}, answerAttr{stunwire.AttrNonce, make([]byte, nonce)})
			if want := unauthorizedSize(realm, nonce); len(got) != want {
				t.Fatalf("realm %d, nonce %d bytes: a 401 of %d bytes, sized %d", realm, nonce, len(got), want)
			}
		}
	}
}
