package turnsrv

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
)

// TestRefusedPeerCostsOnlyItsOwnDatagram: a client's burst of Send
// indications, some to its peer's address with port 0, which the kernel
// refuses to send to (EINVAL). The data plane sends a read's datagrams to
// peers in one sendmmsg; the refused ones must be dropped and counted one
// by one while every other datagram of the batch reaches the peer. Over
// TCP the burst is one write, so the front door reads it in one go and the
// refused datagrams sit in the middle of one batch. Over UDP, whether
// several of the client's datagrams make one read depends on when the
// reader wakes, so only the TCP run is sure to cover a refusal mid-batch
// (stunsrv's TestBatchSendSkipsARefusedDatagram covers it for UDP
// sockets); the UDP run checks the counting.
func TestRefusedPeerCostsOnlyItsOwnDatagram(t *testing.T) {
	t.Parallel()
	onEachTransport(t, func(t *testing.T, ts *testServer, c *channelClient, peer *net.UDPConn) {
		c.permit(t, peer) // permissions go by address: port 0 is covered too
		refused := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0)
		const count, every = 24, 6
		var burst []byte
		var want []string
		for i := range count {
			payload := []byte("datagram " + strconv.Itoa(i))
			var frame []byte
			if i%every == 1 {
				frame = sendIndicationTo(t, refused, payload)
			} else {
				frame = sendIndication(t, peer, payload)
				want = append(want, string(payload))
			}
			if c.stream {
				burst = append(burst, frame...)
			} else {
				c.send(frame)
			}
		}
		if c.stream {
			c.send(burst)
		}
		for i, w := range want {
			got, from := readPeer(t, peer, wait)
			if got != w || from != c.relay {
				t.Fatalf("peer's datagram %d: %q from %v, want %q from the relay %v", i, got, from, w, c.relay)
			}
		}
		refusedCount := float64(count - len(want))
		wantCount(t, ts.metrics.fastDrops[dropWrite], refusedCount, "datagrams the kernel refused")
		wantCount(t, ts.metrics.fastToPeer, float64(len(want)), "datagrams the data plane relayed to the peer")
		wantCount(t, ts.metrics.toPeerPackets, float64(len(want)), "relayed packets to the peer")
	})
}
