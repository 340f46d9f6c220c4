package turnsrv

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/testenv"
	"icebox/stunsrv"
)

// peerSocket is a UDP peer on 127.0.0.1 the test reads and writes itself.
func peerSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	return peerSocketAt(t, net.IPv4(127, 0, 0, 1))
}

func peerSocketAt(t *testing.T, ip net.IP) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// channelClient is a raw TURN client holding one allocation.
type channelClient struct {
	*rawClient
	relay netip.AddrPort
}

func allocateRaw(t *testing.T, ts *testServer, network string) *channelClient {
	t.Helper()
	u, p, _ := ts.MintCredential("dp", 0)
	c := dialRaw(t, network, ts.addr(network), u, p)
	res := c.do(stun.MethodAllocate, udpTransport())
	var relay stun.XORMappedAddress
	if err := relay.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		t.Fatalf("allocate: %v (%v)", res, err)
	}
	ap, _ := netip.AddrFromSlice(relay.IP)
	return &channelClient{rawClient: c, relay: netip.AddrPortFrom(ap.Unmap(), uint16(relay.Port))}
}

func (c *channelClient) bind(number uint16, peer *net.UDPConn) *stun.Message {
	a := peer.LocalAddr().(*net.UDPAddr)
	return c.do(stun.MethodChannelBind, channelAttr(number), peerAttr(a.IP, a.Port))
}

func mustSucceed(t *testing.T, res *stun.Message, what string) {
	t.Helper()
	if res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("%s: %v (error %d)", what, res, errorCode(res))
	}
}

// sendChannelData sends payload on channel number, padded over streams.
func (c *channelClient) sendChannelData(number uint16, payload string) {
	b := binary.BigEndian.AppendUint16(nil, number)
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	b = append(b, payload...)
	if c.stream {
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	c.send(b)
}

// readChannelData returns the next ChannelData message's channel and
// payload, skipping STUN messages; ok is false at the deadline.
func (c *channelClient) readChannelData(t *testing.T, d time.Duration) (number uint16, payload string, ok bool) {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	for {
		b := c.readFrame(t)
		if b == nil {
			return 0, "", false
		}
		if b[0]>>6 != 1 {
			continue
		}
		l := int(binary.BigEndian.Uint16(b[2:4]))
		return binary.BigEndian.Uint16(b), string(b[4 : 4+l]), true
	}
}

// queuedChannelData returns the payload of a ChannelData datagram already
// waiting on the UDP client's socket, without waiting for one to come
// (a read past its deadline would not look at the socket at all). Once
// the server has shown it handled what it was sent, anything it relayed
// instead is queued by then.
func (c *channelClient) queuedChannelData(t *testing.T) (string, bool) {
	t.Helper()
	buf := make([]byte, 2048)
	for {
		n, ok := readQueued(t, c.conn.(*net.UDPConn), buf)
		switch {
		case !ok:
			return "", false
		case n >= 4 && buf[0]>>6 == 1:
			l := min(int(binary.BigEndian.Uint16(buf[2:4])), n-4)
			return string(buf[4 : 4+l]), true
		} // a STUN answer: look further
	}
}

// readQueued reads into buf a datagram already queued on c, without
// waiting for one; ok is false when none is.
func readQueued(t *testing.T, c *net.UDPConn, buf []byte) (n int, ok bool) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if rerr == syscall.EAGAIN {
		return 0, false
	}
	if rerr != nil {
		t.Fatal(rerr)
	}
	return n, true
}

// readFrame returns the next datagram, or over a stream the next STUN or
// ChannelData frame (padding included); nil at the read deadline.
func (c *channelClient) readFrame(t *testing.T) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	if !c.stream {
		n, err := c.conn.Read(buf)
		if err != nil {
			readFailed(t, err)
			return nil
		}
		return buf[:n]
	}
	if _, err := io.ReadFull(c.conn, buf[:4]); err != nil {
		readFailed(t, err)
		return nil
	}
	size := (int(binary.BigEndian.Uint16(buf[2:4])) + 3) &^ 3
	if buf[0]>>6 == 0 {
		size += 16
	}
	if _, err := io.ReadFull(c.conn, buf[4:4+size]); err != nil {
		readFailed(t, err)
		return nil
	}
	return buf[:4+size]
}

func readFailed(t *testing.T, err error) bool {
	t.Helper()
	if !isTimeout(err) {
		t.Fatal(err)
	}
	return false
}

// readPeer returns what the peer received next, or "" at the deadline.
// With d 0 it returns what had arrived when it was called, or "": a read
// past its deadline fails without looking at what is queued, so the peer
// sends itself a marker and reads up to it.
func readPeer(t *testing.T, p *net.UDPConn, d time.Duration) (string, netip.AddrPort) {
	t.Helper()
	if d == 0 {
		return readPeerUpToMarker(t, p)
	}
	p.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 2048)
	n, from, err := p.ReadFromUDPAddrPort(buf)
	if err != nil {
		if !isTimeout(err) {
			t.Fatal(err)
		}
		return "", from
	}
	return string(buf[:n]), from
}

// readPeerUpToMarker returns the first datagram p had received before
// the call, or "" if none; it reads and drops the rest up to a marker p
// sends itself.
func readPeerUpToMarker(t *testing.T, p *net.UDPConn) (string, netip.AddrPort) {
	t.Helper()
	const marker = "readPeer marker"
	self := p.LocalAddr().(*net.UDPAddr).AddrPort()
	if _, err := p.WriteToUDPAddrPort([]byte(marker), self); err != nil {
		t.Fatal(err)
	}
	var first string
	var firstFrom netip.AddrPort
	for i := 0; ; i++ {
		got, from := readPeer(t, p, wait)
		switch {
		case got == marker && from == self:
			return first, firstFrom
		case got == "" && !from.IsValid():
			t.Fatal("the peer's marker to itself never arrived")
		case i == 0:
			first, firstFrom = got, from
		}
	}
}

const wait = 5 * time.Second // bounds reads that must succeed; never paces

// roundTrip sends msg on channel number to peer, checks it arrives from
// the relay address, and sends it back through the channel.
func (c *channelClient) roundTrip(t *testing.T, number uint16, peer *net.UDPConn, msg string) {
	t.Helper()
	c.sendChannelData(number, msg)
	got, from := readPeer(t, peer, wait)
	if got != msg || from != c.relay {
		t.Fatalf("peer got %q from %v, want %q from the relay %v", got, from, msg, c.relay)
	}
	peer.WriteToUDPAddrPort([]byte(msg+" back"), c.relay)
	n, back, ok := c.readChannelData(t, wait)
	if !ok || n != number || back != msg+" back" {
		t.Fatalf("client got %q on %#x (ok %v), want %q on %#x", back, n, ok, msg+" back", number)
	}
}

// TestChannelDataFastPath relays ChannelData both ways for UDP and TCP
// clients, and checks that icebox's data plane did it, not pion.
func TestChannelDataFastPath(t *testing.T) {
	t.Parallel()
	onEachTransport(t, func(t *testing.T, ts *testServer, c *channelClient, peer *net.UDPConn) {
		mustSucceed(t, c.bind(0x4000, peer), "channel bind")
		for _, msg := range []string{"a", "odd length", "four"} {
			c.roundTrip(t, 0x4000, peer, msg)
		}
		wantCount(t, ts.metrics.fastToPeer, 3, "datagrams the data plane relayed to the peer")
		wantCount(t, ts.metrics.fastFromPeer, 3, "datagrams the data plane relayed to the client")
		wantCount(t, ts.metrics.toPeerPackets, 3, "relayed packets to the peer, pion's and the data plane's")
	})
}

// udpAllocation starts a server and returns it, a UDP client's allocation
// and a peer.
func udpAllocation(t *testing.T) (*testServer, *channelClient, *net.UDPConn) {
	t.Helper()
	ts := startServer(t, testConfig())
	return ts, allocateRaw(t, ts, "udp"), peerSocket(t)
}

// onEachTransport runs f for a UDP and a TCP client, each with its own
// server, allocation and peer.
func onEachTransport(t *testing.T, f func(t *testing.T, ts *testServer, c *channelClient, peer *net.UDPConn)) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			ts := startServer(t, testConfig())
			f(t, ts, allocateRaw(t, ts, network), peerSocket(t))
		})
	}
}

// wantNoAllocations sends msg (ChannelData or a Send indication) from the
// client and 160 bytes from the peer through the relay, each 2000 times,
// and counts heap allocations in the whole process: the server's
// per-packet path (front door, data plane, relay socket) must allocate
// nothing.
func wantNoAllocations(t *testing.T, c *channelClient, peer *net.UDPConn, msg []byte) {
	t.Helper()
	client := c.conn
	buf := make([]byte, 2048)
	read := client.Read
	if c.stream {
		// One whole frame: ChannelData of 160 bytes needs no padding, a
		// Data indication says its length.
		read = func(b []byte) (int, error) {
			if _, err := io.ReadFull(client, b[:4]); err != nil {
				return 0, err
			}
			n := 4 + int(binary.BigEndian.Uint16(b[2:4]))
			if b[0]>>6 == 0 {
				n += 16
			}
			return io.ReadFull(client, b[4:n])
		}
	}
	client.SetReadDeadline(time.Time{})
	peer.SetReadDeadline(time.Time{})
	var failed error
	toPeer := func() {
		client.Write(msg)
		if _, _, err := peer.ReadFromUDPAddrPort(buf); err != nil {
			failed = err
		}
	}
	toClient := func() {
		peer.WriteToUDPAddrPort(buf[:160], c.relay)
		if _, err := read(buf); err != nil {
			failed = err
		}
	}
	for name, f := range map[string]func(){"client to peer": toPeer, "peer to client": toClient} {
		if n := testing.AllocsPerRun(2000, f); n != 0 {
			t.Errorf("%s: %v allocations per packet, want 0", name, n)
		}
	}
	if failed != nil {
		t.Fatal(failed)
	}
}

// TestChannelAndPermissionExpiry ages the data plane's clock: a channel
// whose permission lapsed (5 min) relays nothing until the client binds it
// again, and a channel not refreshed for 10 minutes relays nothing.
func TestChannelAndPermissionExpiry(t *testing.T) {
	t.Parallel()
	ts, c, peer := udpAllocation(t)
	mustSucceed(t, c.bind(0x4000, peer), "channel bind")
	c.roundTrip(t, 0x4000, peer, "fresh")

	ts.dp.skew.Add(int64(permissionLifetime + time.Second))
	c.sendChannelData(0x4000, "permission lapsed")
	peer.WriteToUDPAddrPort([]byte("from peer, permission lapsed"), c.relay)
	waitMetric(t, ts.metrics.fastDrops[dropExpired], 2)
	// The refresh the client owes: binding again refreshes both.
	mustSucceed(t, c.bind(0x4000, peer), "channel refresh")
	c.roundTrip(t, 0x4000, peer, "refreshed")
	if got, _ := readPeer(t, peer, 0); got != "" {
		t.Fatalf("peer got %q", got)
	}

	// A CreatePermission keeps the permission alive, but not the channel.
	for range 3 {
		ts.dp.skew.Add(int64(channelLifetime / 3))
		a := peer.LocalAddr().(*net.UDPAddr)
		mustSucceed(t, c.do(stun.MethodCreatePermission, peerAttr(a.IP, a.Port)), "create permission")
	}
	ts.dp.skew.Add(int64(time.Second))
	c.sendChannelData(0x4000, "channel expired")
	waitMetric(t, ts.metrics.fastDrops[dropExpired], 3)
	wantCount(t, ts.metrics.fastToPeer, 2, "datagrams the data plane relayed (only the 2 live round trips)")
}

// wantCount waits until counter c reaches want, then checks it is exactly
// want: the data plane counts a relayed datagram after the send succeeds,
// so the other end may see the datagram (and the test go on) first.
func wantCount(t *testing.T, c prometheus.Counter, want float64, what string) {
	t.Helper()
	waitMetric(t, c, want)
	if got := testenv.MetricValue(t, c); got != want {
		t.Errorf("%s: %v, want %v", what, got, want)
	}
}

// waitMetric waits until counter c reaches want: the data plane counts a
// drop before it reads the next datagram.
func waitMetric(t *testing.T, c prometheus.Counter, want float64) {
	t.Helper()
	testenv.WaitFor(t, wait, fmt.Sprintf("a counter to reach %v", want),
		func() bool { return testenv.MetricValue(t, c) >= want })
}

// TestNothingRelayedAfterRefreshZero: deleting the allocation ends the
// data plane's relaying at once, both ways.
func TestNothingRelayedAfterRefreshZero(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig())
	c := allocateRaw(t, ts, "udp")
	peer := peerSocket(t)
	mustSucceed(t, c.bind(0x4000, peer), "channel bind")
	c.roundTrip(t, 0x4000, peer, "before")
	mustSucceed(t, c.do(stun.MethodRefresh, lifetimeAttr(0)), "refresh 0")
	ts.waitAllocations(t, 0)
	if a := ts.dp.lookup(connIDOf(c.conn.LocalAddr())); a != nil {
		t.Fatal("data plane still holds the allocation")
	}
	c.sendChannelData(0x4000, "after")
	peer.WriteToUDPAddrPort([]byte("after, from peer"), c.relay)
	// A Binding answered after both proves the server read them.
	bindingAfter(t, c)
	if got, _ := readPeer(t, peer, 0); got != "" {
		t.Errorf("peer got %q after Refresh(0)", got)
	}
	if got, ok := c.queuedChannelData(t); ok {
		t.Errorf("client got %q after Refresh(0)", got)
	}
	wantCount(t, ts.metrics.fastToPeer, 1, "datagrams the data plane relayed to the peer")
}

// TestChannelBindLearnsTheNumberPionBinds: with two CHANNEL-NUMBERs, pion
// binds the first; the data plane must relay on that one and not on the
// other, which pion never bound.
func TestChannelBindLearnsTheNumberPionBinds(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig())
	c := allocateRaw(t, ts, "udp")
	peer := peerSocket(t)
	a := peer.LocalAddr().(*net.UDPAddr)
	mustSucceed(t, c.do(stun.MethodChannelBind, channelAttr(0x4001), channelAttr(0x4002), peerAttr(a.IP, a.Port)), "channel bind with two numbers")
	dp := ts.dp.lookup(connIDOf(c.conn.LocalAddr()))
	if dp == nil {
		t.Fatal("the data plane does not mirror the allocation")
	}
	if dp.byNumber(0x4001) == nil || dp.byNumber(0x4002) != nil {
		t.Errorf("the data plane holds channel 0x4001: %v, 0x4002: %v; pion bound 0x4001 only",
			dp.byNumber(0x4001) != nil, dp.byNumber(0x4002) != nil)
	}
	c.roundTrip(t, 0x4001, peer, "on the bound number")
}

// bindingAfter sends a Binding request on the client's connection and
// waits for its answer.
func bindingAfter(t *testing.T, c *channelClient) {
	t.Helper()
	m := c.build(stun.MethodBinding, false)
	c.rawClient.roundTrip(m)
}

// TestChannelRebindRefused: a bound channel number cannot move to another
// peer (RFC 8656 §12.2: 400), and keeps relaying to the first one; a peer
// with no permission gets nothing through the relay.
func TestChannelRebindRefused(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig())
	c := allocateRaw(t, ts, "udp")
	first, second, stranger := peerSocket(t), peerSocket(t), peerSocket(t)
	mustSucceed(t, c.bind(0x4000, first), "channel bind")
	if res := c.bind(0x4000, second); errorCode(res) != int(stun.CodeBadRequest) {
		t.Fatalf("rebinding to another peer: %v, want 400", res)
	}
	// The stranger has no permission: its datagram reaches nobody, and
	// the first peer's, sent after it, is the first the client sees.
	stranger.WriteToUDPAddrPort([]byte("stranger"), c.relay)
	c.roundTrip(t, 0x4000, first, "still the first")
	if got, _ := readPeer(t, second, 0); got != "" {
		t.Errorf("second peer got %q", got)
	}
	// The refused request's entry went with pion's error answer.
	ts.dp.pendMu.Lock()
	defer ts.dp.pendMu.Unlock()
	if n := len(ts.dp.pending); n != 0 {
		t.Errorf("%d requests still pending after every answer", n)
	}
}

// allocateForPeerOn127002 starts a server whose policy allows only
// 127.0.0.2 as a peer and returns its config, a UDP client's allocation
// and a peer there. The peer is not on 127.0.0.1, the relay address, which
// the policy treats as another client's relay.
func allocateForPeerOn127002(t *testing.T) (Config, *testServer, *channelClient, *net.UDPConn) {
	t.Helper()
	cfg := testConfig()
	cfg.Peers.Allow = []string{"127.0.0.2/32"}
	ts := startServer(t, cfg)
	return cfg, ts, allocateRaw(t, ts, "udp"), peerSocketAt(t, net.IPv4(127, 0, 0, 2))
}

// TestReloadDenyingAPeerStopsItsChannels: a reload whose policy refuses a
// peer stops the channels already bound to it, both ways, and Send too.
func TestReloadDenyingAPeerStopsItsChannels(t *testing.T) {
	t.Parallel()
	cfg, ts, c, peer := allocateForPeerOn127002(t)
	mustSucceed(t, c.bind(0x4000, peer), "channel bind")
	c.roundTrip(t, 0x4000, peer, "allowed")

	cfg.Peers.Allow = nil // 127.0.0.2 is loopback: refused by default
	if err := ts.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	c.sendChannelData(0x4000, "denied, from client")
	peer.WriteToUDPAddrPort([]byte("denied, from peer"), c.relay)
	a := peer.LocalAddr().(*net.UDPAddr)
	send, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		peerAttr(a.IP, a.Port), rawAttr(stun.AttrData, []byte("denied, send")))
	if err != nil {
		t.Fatal(err)
	}
	c.send(send.Raw)
	bindingAfter(t, c)
	waitMetric(t, ts.metrics.fastDrops[dropRefused], 3) // ChannelData both ways, and the Send
	if got, _ := readPeer(t, peer, 0); got != "" {
		t.Errorf("peer got %q after the reload", got)
	}
	if got, ok := c.queuedChannelData(t); ok {
		t.Errorf("client got %q after the reload", got)
	}
}

// TestFastPathAllocatesNothing relays ChannelData, then Send and Data
// indications, both ways through real sockets, from a UDP and a TCP client, and counts heap allocations
// in the whole process: the server's per-packet path (front door, data
// plane, relay socket) must allocate nothing.
func TestFastPathAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, tc := range []struct {
		name string
		// grant sets the allocation up and returns what the client sends.
		grant func(*testing.T, *channelClient, *net.UDPConn) []byte
	}{
		{"channel_data", func(t *testing.T, c *channelClient, peer *net.UDPConn) []byte {
			mustSucceed(t, c.bind(0x4000, peer), "channel bind")
			c.roundTrip(t, 0x4000, peer, "warm up")
			msg := make([]byte, 4+160)
			binary.BigEndian.PutUint16(msg, 0x4000)
			binary.BigEndian.PutUint16(msg[2:], 160)
			return msg
		}},
		{"send_data", func(t *testing.T, c *channelClient, peer *net.UDPConn) []byte {
			c.permit(t, peer)
			c.sendRoundTrip(t, peer, "warm up")
			return sendIndication(t, peer, make([]byte, 160))
		}},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				ts := startServer(t, testConfig(), infoLogger)
				c := allocateRaw(t, ts, network)
				peer := peerSocket(t)
				wantNoAllocations(t, c, peer, tc.grant(t, c, peer))
				for dir, m := range map[string]prometheus.Counter{"to the peer": ts.metrics.fastToPeer, "to the client": ts.metrics.fastFromPeer} {
					if got := testenv.MetricValue(t, m); got < 2000 {
						t.Errorf("data plane relayed %v %s, want every packet", got, dir)
					}
				}
			})
		}
	}
}

// TestFastPathAnswersFromTheAddressTheClientUsed: on a wildcard socket
// (the default ":3478") the data plane's ChannelData leaves from the
// address the client sent to, as pion's answers do; the client's socket
// is connected to that address and would drop anything else.
func TestFastPathAnswersFromTheAddressTheClientUsed(t *testing.T) {
	t.Parallel()
	ts := startServerFront(t, func(c *stunsrv.Config) { c.Listen = []string{"0.0.0.0:0"} }, testConfig())
	server := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: ts.udp.(*net.UDPAddr).Port}
	u, p, _ := ts.MintCredential("wildcard", 0)
	raw := dialRaw(t, "udp", server, u, p)
	res := raw.do(stun.MethodAllocate, udpTransport())
	var relay stun.XORMappedAddress
	if err := relay.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		t.Fatalf("allocate: %v", res)
	}
	ip, _ := netip.AddrFromSlice(relay.IP)
	c := &channelClient{rawClient: raw, relay: netip.AddrPortFrom(ip.Unmap(), uint16(relay.Port))}
	peer := peerSocket(t)
	mustSucceed(t, c.bind(0x4000, peer), "channel bind")
	for _, msg := range []string{"one", "two"} {
		c.roundTrip(t, 0x4000, peer, msg)
	}
	wantCount(t, ts.metrics.fastFromPeer, 2, "datagrams the data plane relayed to the client")
}

// TestRelayReadLoopSurvivesReadErrors makes the relay socket's reads fail
// (a read deadline in the past fails every read with a timeout): the loop
// counts the errors and keeps the allocation, and relays again both ways
// once the socket reads again, the peer's datagram sent meanwhile first.
func TestRelayReadLoopSurvivesReadErrors(t *testing.T) {
	t.Parallel()
	ts, c, peer := udpAllocation(t)
	mustSucceed(t, c.bind(0x4000, peer), "channel bind")
	c.roundTrip(t, 0x4000, peer, "before")

	ts.dp.mu.RLock()
	relay := ts.dp.relays[int(c.relay.Port())]
	ts.dp.mu.RUnlock()
	relay.udp.SetReadDeadline(time.Now())
	waitMetric(t, ts.metrics.relayReadErrors, 3)
	peer.WriteToUDPAddrPort([]byte("while reads fail"), c.relay)
	relay.udp.SetReadDeadline(time.Time{})

	if n, got, ok := c.readChannelData(t, wait); !ok || n != 0x4000 || got != "while reads fail" {
		t.Fatalf("client got %q on %#x (ok %v), want the datagram queued while reads failed", got, n, ok)
	}
	c.roundTrip(t, 0x4000, peer, "after")
	ts.waitAllocations(t, 1)
}

// TestStalledTCPClientIsClosed: a TCP client that stops reading while its
// peer floods it is closed once a write to it has waited the stream write
// timeout, instead of holding its relay for good; another client's relay
// keeps working.
func TestStalledTCPClientIsClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the 10s stream write timeout")
	}
	ts := startServer(t, testConfig())
	stalled := allocateRaw(t, ts, "tcp")
	peer := peerSocket(t)
	mustSucceed(t, stalled.bind(0x4000, peer), "channel bind")
	legit := allocateRaw(t, ts, "udp")
	legitPeer := peerSocket(t)
	mustSucceed(t, legit.bind(0x4000, legitPeer), "channel bind")
	connections := func() float64 { return testenv.GatherValue(t, ts.frontReg, "icebox_stun_tcp_connections") }
	if got := connections(); got != 1 {
		t.Fatalf("%v TCP connections, want the stalled client's", got)
	}
	// The stalled client never reads again; its peer sends far more than
	// the socket buffers between them hold.
	payload := make([]byte, 1000)
	for range 100000 {
		if _, err := peer.WriteToUDPAddrPort(payload, stalled.relay); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, time.Minute, "the server to close the client that stopped reading",
		func() bool { return connections() == 0 })
	legit.roundTrip(t, 0x4000, legitPeer, "after the stalled client")
}

// pauses is a slog.Handler that holds the goroutine logging a message
// ending in one of its gates' suffixes until the gate opens: pion logs
// "Binding channel N to PEER" while it handles a ChannelBind, after icebox
// noted the request and before pion answers it, so a test can hold
// requests in flight there and choose the order of pion's answers.
type pauses struct{ gates []*gate }

// gate holds the first goroutine logging a message ending in suffix.
type gate struct {
	suffix  string
	reached chan struct{}
	resume  chan struct{}
	hold    sync.Once
	open    sync.Once
}

func (p *pauses) at(suffix string) *gate {
	g := &gate{suffix: suffix, reached: make(chan struct{}), resume: make(chan struct{})}
	p.gates = append(p.gates, g)
	return g
}

func (p *pauses) Enabled(context.Context, slog.Level) bool { return true } // pion's chatter too
func (p *pauses) WithAttrs([]slog.Attr) slog.Handler       { return p }
func (p *pauses) WithGroup(string) slog.Handler            { return p }

func (p *pauses) Handle(_ context.Context, r slog.Record) error {
	for _, g := range p.gates {
		if strings.HasSuffix(r.Message, g.suffix) {
			g.hold.Do(func() {
				close(g.reached)
				<-g.resume
			})
		}
	}
	return nil
}

// release lets the held goroutine go on; idempotent.
func (g *gate) release() { g.open.Do(func() { close(g.resume) }) }

// waitHeld waits until a goroutine is held at the gate.
func (g *gate) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(wait):
		t.Fatalf("no log message ending in %q", g.suffix)
	}
}

// answerTo reads c's answers until the one to req.
func answerTo(t *testing.T, c *channelClient, req *stun.Message) *stun.Message {
	t.Helper()
	for {
		res := c.read(time.Now().Add(wait))
		if res == nil {
			t.Fatalf("no answer to %v", req.Type)
		}
		if res.TransactionID == req.TransactionID {
			return res
		}
	}
}

// TestSameTransactionIDOnTwoTransports: an attacker's two transports send
// a ChannelBind with the same transaction ID; both are noted before pion
// answers either. pion grants the first (transport one) and then refuses
// the second (transport two has the channel bound to another peer: 400).
// The data plane must learn the grant for transport one only, and keep
// relaying transport two's channel to the peer pion bound it to, never to
// the refused request's peer; another client relays throughout.
func TestSameTransactionIDOnTwoTransports(t *testing.T) {
	t.Parallel()
	granted, refused, bound := peerSocket(t), peerSocket(t), peerSocket(t)
	p := &pauses{}
	grant, refuse := p.at(" to "+granted.LocalAddr().String()), p.at(" to "+refused.LocalAddr().String())
	ts := startServer(t, testConfig(), func(o *Options) { o.Logger = slog.New(p) })
	// Before the server closes, should the test stop early.
	t.Cleanup(grant.release)
	t.Cleanup(refuse.release)

	legit, legitPeer := allocateRaw(t, ts, "udp"), peerSocket(t)
	mustSucceed(t, legit.bind(0x4000, legitPeer), "legitimate channel bind")
	legit.roundTrip(t, 0x4000, legitPeer, "before")

	// One UDP and one TCP transport: pion reads each on a goroutine of
	// its own, so both requests can be in flight at once.
	one, two := allocateRaw(t, ts, "udp"), allocateRaw(t, ts, "tcp")
	mustSucceed(t, two.bind(0x4000, bound), "channel bind on transport two")
	txid := stun.NewTransactionIDSetter(stun.NewTransactionID())
	peer := func(c *net.UDPConn) stun.Setter {
		a := c.LocalAddr().(*net.UDPAddr)
		return peerAttr(a.IP, a.Port)
	}
	first := one.build(stun.MethodChannelBind, true, txid, channelAttr(0x4000), peer(granted))
	second := two.build(stun.MethodChannelBind, true, txid, channelAttr(0x4000), peer(refused))
	if first.TransactionID != second.TransactionID {
		t.Fatal("the two requests' transaction IDs differ")
	}

	one.send(first.Raw)
	grant.waitHeld(t)
	two.send(second.Raw)
	refuse.waitHeld(t) // both noted, neither answered
	grant.release()
	mustSucceed(t, answerTo(t, one, first), "channel bind on transport one")
	refuse.release()
	if res := answerTo(t, two, second); errorCode(res) != int(stun.CodeBadRequest) {
		t.Fatalf("rebinding transport two's channel: %v (error %d), want 400", res, errorCode(res))
	}

	// Transport two's channel still reaches the peer pion bound it to.
	two.sendChannelData(0x4000, "after the race")
	if got, from := readPeer(t, bound, wait); got != "after the race" || from != two.relay {
		t.Errorf("bound peer got %q from %v, want the datagram from the relay %v", got, from, two.relay)
	}
	if got, _ := readPeer(t, refused, 0); got != "" {
		t.Errorf("the peer of the refused request got %q", got)
	}
	// Transport one's grant was learned: its channel takes the fast path.
	// The data plane counts a datagram once its batch is sent, which may
	// be after the peer has it: the two relayed so far first.
	waitMetric(t, ts.metrics.fastToPeer, 2)
	before := testenv.MetricValue(t, ts.metrics.fastToPeer)
	one.roundTrip(t, 0x4000, granted, "granted")
	wantCount(t, ts.metrics.fastToPeer, before+1, "datagrams the data plane relayed to the peer")
	legit.roundTrip(t, 0x4000, legitPeer, "after")

	ts.dp.pendMu.Lock()
	defer ts.dp.pendMu.Unlock()
	if n := len(ts.dp.pending); n != 0 {
		t.Errorf("%d requests still pending after every answer", n)
	}
}
