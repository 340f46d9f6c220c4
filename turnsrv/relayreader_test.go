package turnsrv

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"icebox/internal/testenv"
	"icebox/stunsrv"
)

// watched reports whether the relay reader reads c's relay socket.
func (ts *testServer) watched(t *testing.T, c *channelClient) bool {
	t.Helper()
	ts.dp.mu.RLock()
	relay := ts.dp.relays[int(c.relay.Port())]
	ts.dp.mu.RUnlock()
	if relay == nil {
		t.Fatalf("no relay socket on port %d", c.relay.Port())
	}
	r := ts.dp.reader
	if r == nil {
		t.Skip("no relay reader on this platform")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return relay.token != 0 && r.relays[relay.token] == relay
}

// TestRelayReaderChurn creates and deletes allocations from several
// clients at once while their peers send: each deletion comes right after
// a burst from the peer, so relay sockets close with datagrams in them
// (and their descriptors are reused by the next allocations). Every
// datagram a client or a peer receives must be its own, every round trip
// must arrive, and the reader must serve allocations made afterwards.
func TestRelayReaderChurn(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig())
	const workers, allocs, trips = 4, 8, 4
	t.Run("group", func(t *testing.T) {
		for w := range workers {
			t.Run(fmt.Sprint("worker", w), func(t *testing.T) {
				t.Parallel()
				for k := range allocs {
					churnOnce(t, ts, fmt.Sprintf("w%d-a%d-", w, k), trips)
				}
			})
		}
	})
	if t.Failed() {
		return
	}
	c, peer := allocateRaw(t, ts, "udp"), peerSocket(t)
	mustSucceed(t, c.bind(0x4000, peer), "channel bind")
	for i := range 3 {
		c.roundTrip(t, 0x4000, peer, fmt.Sprint("after the churn ", i))
	}
	if !ts.watched(t, c) {
		t.Fatal("the relay reader does not read a relay made after the churn")
	}
}

// churnOnce allocates, relays trips round trips tagged with tag both ways,
// lets the peer send a burst, and deletes the allocation at once.
func churnOnce(t *testing.T, ts *testServer, tag string, trips int) {
	c, peer := allocateRaw(t, ts, "udp"), peerSocket(t)
	mustSucceed(t, c.bind(0x4000, peer), "channel bind")
	for i := range trips {
		c.roundTrip(t, 0x4000, peer, fmt.Sprint(tag, i))
	}
	if !ts.watched(t, c) {
		t.Fatal("the relay reader does not read a relay with a relayed flow")
	}
	for i := range 3 {
		peer.WriteToUDPAddrPort([]byte(fmt.Sprint(tag, "burst", i)), c.relay)
	}
	// Refresh(0) by hand: ChannelData from the burst may come first, and
	// must be this client's.
	req := c.build(stun.MethodRefresh, true, lifetimeAttr(0))
	c.send(req.Raw)
	c.conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			t.Fatalf("waiting for the Refresh answer: %v", err)
		}
		b := buf[:n]
		if b[0]>>6 == 1 {
			if l := int(binary.BigEndian.Uint16(b[2:4])); !strings.HasPrefix(string(b[4:4+l]), tag) {
				t.Fatalf("client %s got %q: another allocation's datagram", tag, b[4:4+l])
			}
			continue
		}
		m := &stun.Message{Raw: b}
		if err := m.Decode(); err != nil {
			t.Fatal(err)
		}
		if m.TransactionID == req.TransactionID {
			mustSucceed(t, m, "refresh 0")
			return
		}
	}
}

// TestPeerDatagramDeclinedByTheReaderReachesPion: a CreatePermission for
// 17 peers is granted by pion, but the data plane mirrors 16 peers per
// request; a datagram from the 17th reaches the relay reader, which leaves
// it to pion, and the client gets pion's Data indication.
func TestPeerDatagramDeclinedByTheReaderReachesPion(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Peers.Allow = []string{"127.0.0.0/8"}
	ts := startServer(t, cfg)
	c, peer := allocateRaw(t, ts, "udp"), peerSocket(t)
	mustSucceed(t, c.bind(0x4000, peer), "channel bind")
	c.roundTrip(t, 0x4000, peer, "one")
	c.roundTrip(t, 0x4000, peer, "two")
	if !ts.watched(t, c) {
		t.Fatal("the relay reader does not read a relay with a relayed flow")
	}

	var attrs []stun.Setter
	for i := range 16 {
		attrs = append(attrs, peerAttr(net.IPv4(127, 0, 1, byte(1+i)), 9))
	}
	// 127.0.0.1 is mirrored (the channel's peer): the 17th peer needs an
	// address of its own.
	unmirrored := peerSocketAt(t, net.IPv4(127, 0, 0, 2))
	a := unmirrored.LocalAddr().(*net.UDPAddr)
	attrs = append(attrs, peerAttr(a.IP, a.Port))
	mustSucceed(t, c.do(stun.MethodCreatePermission, attrs...), "create permission for 17 peers")
	// The reader counts a round's datagrams after sending them: wait for
	// both round trips' to be counted.
	wantCount(t, ts.metrics.fastFromPeer, 2, "datagrams the data plane relayed to the client")
	unmirrored.WriteToUDPAddrPort([]byte("through pion"), c.relay)
	wantDataIndication(t, c.readDataIndication(t, wait), unmirrored, "through pion")
	if got := testenv.MetricValue(t, ts.metrics.fastFromPeer); got != 2 {
		t.Errorf("the data plane relayed %v datagrams, want none: pion's to relay", got-2)
	}
	c.roundTrip(t, 0x4000, peer, "three")
}

// TestRelayReaderWithSeveralFrontDoorSockets: with two SO_REUSEPORT
// sockets in the front door, clients spread over both, and the relay
// reader sends each client's datagrams from a writer of its own socket.
func TestRelayReaderWithSeveralFrontDoorSockets(t *testing.T) {
	t.Parallel()
	ts := startServerFront(t, func(c *stunsrv.Config) { c.Sockets = 2 }, testConfig())
	const clients = 8
	for i := range clients {
		c, peer := allocateRaw(t, ts, "udp"), peerSocket(t)
		mustSucceed(t, c.bind(0x4000, peer), "channel bind")
		for j := range 3 {
			c.roundTrip(t, 0x4000, peer, fmt.Sprintf("client %d, %d", i, j))
		}
		if !ts.watched(t, c) {
			t.Fatalf("the relay reader does not read client %d's relay", i)
		}
	}
	wantCount(t, ts.metrics.fastFromPeer, clients*3, "datagrams the data plane relayed to clients")
}
