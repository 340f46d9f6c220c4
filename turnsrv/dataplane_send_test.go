package turnsrv

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// permit creates a permission for peer's address.
func (c *channelClient) permit(t *testing.T, peer *net.UDPConn) {
	t.Helper()
	a := peer.LocalAddr().(*net.UDPAddr)
	mustSucceed(t, c.do(stun.MethodCreatePermission, peerAttr(a.IP, a.Port)), "create permission")
}

// sendIndication is a Send indication of payload to peer, as pion's client
// builds it.
func sendIndication(t *testing.T, peer *net.UDPConn, payload []byte) []byte {
	t.Helper()
	return sendIndicationTo(t, peer.LocalAddr().(*net.UDPAddr).AddrPort(), payload)
}

// sendIndicationTo is sendIndication to any address, one no socket has
// too.
func sendIndicationTo(t *testing.T, peer netip.AddrPort, payload []byte) []byte {
	t.Helper()
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		peerAttr(peer.Addr().AsSlice(), int(peer.Port())), rawAttr(stun.AttrData, payload))
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// readDataIndication returns the next Data indication's raw bytes,
// skipping anything else; nil at the deadline.
func (c *channelClient) readDataIndication(t *testing.T, d time.Duration) []byte {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	for {
		b := c.readFrame(t)
		if b == nil || binary.BigEndian.Uint16(b) == typeDataIndication {
			return b
		}
	}
}

// wantDataIndication checks raw is the Data indication pion itself would
// send for payload from peer: same attributes in the same order, no
// FINGERPRINT, byte for byte (given its transaction ID).
func wantDataIndication(t *testing.T, raw []byte, peer *net.UDPConn, payload string) {
	t.Helper()
	if raw == nil {
		t.Fatalf("no Data indication carrying %q", payload)
	}
	got := &stun.Message{Raw: raw}
	if err := got.Decode(); err != nil {
		t.Fatalf("Data indication does not decode: %v", err)
	}
	a := peer.LocalAddr().(*net.UDPAddr)
	want, err := stun.Build(stun.NewTransactionIDSetter(got.TransactionID),
		stun.NewType(stun.MethodData, stun.ClassIndication),
		peerAttr(a.IP, a.Port), rawAttr(stun.AttrData, []byte(payload)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, want.Raw) {
		t.Fatalf("Data indication\n got %x\nwant %x (what pion sends)", raw, want.Raw)
	}
}

// sendRoundTrip sends msg to peer in a Send indication, checks it arrives
// from the relay address, and has the peer send it back, which the client
// must get as pion's Data indication.
func (c *channelClient) sendRoundTrip(t *testing.T, peer *net.UDPConn, msg string) {
	t.Helper()
	c.send(sendIndication(t, peer, []byte(msg)))
	got, from := readPeer(t, peer, wait)
	if got != msg || from != c.relay {
		t.Fatalf("peer got %q from %v, want %q from the relay %v", got, from, msg, c.relay)
	}
	peer.WriteToUDPAddrPort([]byte(msg+" back"), c.relay)
	wantDataIndication(t, c.readDataIndication(t, wait), peer, msg+" back")
}

// TestSendDataFastPath relays Send and Data indications both ways for UDP
// and TCP clients with a permission and no channel, and checks that
// icebox's data plane did it, not pion.
func TestSendDataFastPath(t *testing.T) {
	t.Parallel()
	onEachTransport(t, func(t *testing.T, ts *testServer, c *channelClient, peer *net.UDPConn) {
		c.permit(t, peer)
		// Payload lengths 1, 2, 3 and 4 modulo 4 exercise the padding.
		for _, msg := range []string{"a", "odd length", "four", "twelve bytes"} {
			c.sendRoundTrip(t, peer, msg)
		}
		wantCount(t, ts.metrics.fastToPeer, 4, "Send indications the data plane relayed to the peer")
		wantCount(t, ts.metrics.fastFromPeer, 4, "Data indications the data plane sent to the client")
		wantCount(t, ts.metrics.toPeerPackets, 4, "relayed packets to the peer, pion's and the data plane's")
	})
}

// TestSendDataWithoutPermission: a peer without permission gets nothing
// through the relay either way; the client's first datagram after it gets
// one is the first the peer sees.
func TestSendDataWithoutPermission(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			// Permissions go by IP address: the stranger needs its own.
			cfg := testConfig()
			cfg.Peers.Allow = append(cfg.Peers.Allow, "127.0.0.2/32")
			ts := startServer(t, cfg)
			c := allocateRaw(t, ts, network)
			friend, stranger := peerSocket(t), peerSocketAt(t, net.IPv4(127, 0, 0, 2))
			c.permit(t, friend)

			c.send(sendIndication(t, stranger, []byte("to stranger, no permission")))
			stranger.WriteToUDPAddrPort([]byte("from stranger, no permission"), c.relay)
			// The friend's datagram, read from the relay socket after the
			// stranger's, is the first the client sees.
			friend.WriteToUDPAddrPort([]byte("from friend"), c.relay)
			wantDataIndication(t, c.readDataIndication(t, wait), friend, "from friend")

			c.permit(t, stranger)
			c.send(sendIndication(t, stranger, []byte("to stranger, permitted")))
			if got, _ := readPeer(t, stranger, wait); got != "to stranger, permitted" {
				t.Fatalf("stranger's first datagram: %q, want the one sent once permitted", got)
			}
			wantCount(t, ts.metrics.fastToPeer, 1, "Send indications the data plane relayed")
		})
	}
}

// TestSendPermissionExpiry ages the data plane's clock past a
// permission's 5 minutes: Send and Data indications stop both ways until
// the client creates the permission again.
func TestSendPermissionExpiry(t *testing.T) {
	t.Parallel()
	ts, c, peer := udpAllocation(t)
	c.permit(t, peer)
	c.sendRoundTrip(t, peer, "fresh")

	ts.dp.skew.Add(int64(permissionLifetime + time.Second))
	c.send(sendIndication(t, peer, []byte("lapsed, to peer")))
	peer.WriteToUDPAddrPort([]byte("lapsed, from peer"), c.relay)
	waitMetric(t, ts.metrics.fastDrops[dropExpired], 2)

	c.permit(t, peer)
	c.sendRoundTrip(t, peer, "refreshed") // the first either end sees since the lapse
	wantCount(t, ts.metrics.fastDrops[dropExpired], 2, "expired drops")
	wantCount(t, ts.metrics.fastToPeer, 2, "Send indications the data plane relayed")
}

// TestReloadDenyingAPeerStopsSendAndData: a reload whose policy refuses a
// peer stops Send and Data indications under the permission granted
// before; a reload allowing it again lets them through.
func TestReloadDenyingAPeerStopsSendAndData(t *testing.T) {
	t.Parallel()
	cfg, ts, c, peer := allocateForPeerOn127002(t)
	c.permit(t, peer)
	c.sendRoundTrip(t, peer, "allowed")

	denied := cfg
	denied.Peers.Allow = nil // 127.0.0.2 is loopback: refused by default
	if err := ts.Reload(denied); err != nil {
		t.Fatal(err)
	}
	c.send(sendIndication(t, peer, []byte("denied, to peer")))
	peer.WriteToUDPAddrPort([]byte("denied, from peer"), c.relay)
	waitMetric(t, ts.metrics.fastDrops[dropRefused], 2)

	if err := ts.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	c.sendRoundTrip(t, peer, "allowed again") // the first either end sees since the denial
	wantCount(t, ts.metrics.fastDrops[dropRefused], 2, "refused drops")
}

// TestBatchedSendsKeepBytesAndOrder: a burst of ChannelData and Send
// indications, relayed in place from the front door's buffers and sent to
// the peer in batches, reaches the peer whole, exact and in order, also
// over TCP where frames straddle the front door's reads.
func TestBatchedSendsKeepBytesAndOrder(t *testing.T) {
	t.Parallel()
	onEachTransport(t, func(t *testing.T, ts *testServer, c *channelClient, peer *net.UDPConn) {
		peer.SetReadBuffer(4 << 20)
		mustSucceed(t, c.bind(0x4000, peer), "channel bind")
		const count = 300
		var burst []byte
		want := make([]string, count)
		for i := range count {
			size := 1 + (i*37)%1200
			if i < 2 || i == 150 || i == 151 {
				// An empty Send, then an empty ChannelData: first, and
				// again mid-burst, where datagrams before them still wait
				// in the batch and must leave first.
				size = 0
			}
			payload := bytes.Repeat([]byte{byte(i)}, size)
			want[i] = string(payload)
			var frame []byte
			if i%3 == 0 {
				frame = sendIndication(t, peer, payload)
			} else {
				frame = binary.BigEndian.AppendUint16(nil, 0x4000)
				frame = binary.BigEndian.AppendUint16(frame, uint16(len(payload)))
				frame = append(frame, payload...)
				for c.stream && len(frame)%4 != 0 {
					frame = append(frame, 0)
				}
			}
			if c.stream {
				burst = append(burst, frame...)
			} else {
				c.send(frame)
			}
		}
		if c.stream {
			c.send(burst) // one write: frames straddle the server's reads
		}
		for i := range count {
			got, from := readPeer(t, peer, wait)
			if got != want[i] || from != c.relay {
				t.Fatalf("datagram %d: %d bytes (first %q) from %v, want %d bytes of %#x from %v",
					i, len(got), got[:min(len(got), 4)], from, len(want[i]), i, c.relay)
			}
		}
		wantCount(t, ts.metrics.fastToPeer, count, "datagrams the data plane relayed to the peer")
	})
}
