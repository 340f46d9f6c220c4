package turnsrv

import (
	"net"
	"strings"
	"testing"
	"time"

	"icebox/internal/testenv"
)

// TestBandwidthCap: an allocation relays at most quotas.bytes_per_second
// each way, in bursts of a second's worth, and drops and counts the rest,
// while another allocation on the same server relays everything.
//
// The attacker sends in rounds small enough for any socket buffer, each
// round handled before the next is sent (a Binding answered on the same
// socket, or the counters), so every datagram reaches icebox and the
// counts are exact: what is not relayed was dropped by the cap.
func TestBandwidthCap(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Quotas.BytesPerSecond = minBytesPerSecond
	ts := startServer(t, cfg)
	attacker, attackerPeer := allocateRaw(t, ts, "udp"), peerSocket(t)
	legit, legitPeer := allocateRaw(t, ts, "udp"), peerSocket(t)
	mustSucceed(t, attacker.bind(0x4000, attackerPeer), "channel bind")
	mustSucceed(t, legit.bind(0x4000, legitPeer), "channel bind")
	legit.roundTrip(t, 0x4000, legitPeer, "before")
	// The fast-path counters hold the legitimate client's datagrams too,
	// counted a moment after they arrive: the attacker's are what is
	// above these.
	legitTo, legitFrom := 1.0, 1.0

	const rounds, perRound, size = 10, 40, 1000
	const sent = rounds * perRound
	payload := strings.Repeat("x", size)
	m := ts.metrics

	t.Run("client to peer", func(t *testing.T) {
		start := time.Now()
		for range rounds {
			for range perRound {
				attacker.sendChannelData(0x4000, payload)
			}
			bindingAfter(t, attacker)
		}
		testenv.WaitFor(t, wait, "every datagram relayed or dropped", func() bool {
			return testenv.MetricValue(t, m.fastToPeer)-legitTo+testenv.MetricValue(t, m.toPeerBandwidthDrops) >= sent
		})
		relayed := int(testenv.MetricValue(t, m.fastToPeer) - legitTo)
		wantPaced(t, relayed, sent, size, time.Since(start))
		if got := countQueued(t, attackerPeer, func([]byte) bool { return true }); got != relayed {
			t.Errorf("the peer got %d datagrams, icebox relayed %d", got, relayed)
		}
		wantCount(t, m.toPeerBandwidthDrops, float64(sent-relayed), "datagrams to the peer dropped by the cap")
		legit.roundTrip(t, 0x4000, legitPeer, "beside the attacker")
		legitTo, legitFrom = legitTo+1, legitFrom+1
	})

	t.Run("peer to client", func(t *testing.T) {
		handled := func() float64 {
			return testenv.MetricValue(t, m.fastFromPeer) - legitFrom + testenv.MetricValue(t, m.fromPeerBandwidthDrops)
		}
		start := time.Now()
		for r := range rounds {
			for range perRound {
				attackerPeer.WriteToUDPAddrPort([]byte(payload), attacker.relay)
			}
			waitMetricFunc(t, handled, float64((r+1)*perRound))
		}
		relayed := int(testenv.MetricValue(t, m.fastFromPeer) - legitFrom)
		wantPaced(t, relayed, sent, size, time.Since(start))
		isChannelData := func(b []byte) bool { return b[0]>>6 == 1 }
		if got := countQueued(t, attacker.conn.(*net.UDPConn), isChannelData); got != relayed {
			t.Errorf("the client got %d datagrams, icebox relayed %d", got, relayed)
		}
		legit.roundTrip(t, 0x4000, legitPeer, "after")
	})

	// A stranger (an address without a permission: permissions are per
	// IP, so not 127.0.0.1) flooding the legitimate allocation's relay
	// port spends none of its budget: its peer's next second's worth all
	// reaches the client.
	t.Run("stranger spends nothing", func(t *testing.T) {
		stranger := peerSocketAt(t, net.IPv4(127, 0, 0, 2))
		received := testenv.MetricValue(t, m.fromPeerPackets)
		drops := testenv.MetricValue(t, m.fromPeerBandwidthDrops)
		for r := range rounds {
			for range perRound {
				stranger.WriteToUDPAddrPort([]byte(payload), legit.relay)
			}
			waitMetricFunc(t, func() float64 { return testenv.MetricValue(t, m.fromPeerPackets) - received }, float64((r+1)*perRound))
		}
		burst := minBytesPerSecond / size
		for range burst {
			legitPeer.WriteToUDPAddrPort([]byte(payload), legit.relay)
		}
		for i := range burst {
			if _, got, ok := legit.readChannelData(t, wait); !ok || got != payload {
				t.Fatalf("datagram %d of the peer's %d: got %d bytes (ok %v); drops %v fast %v received %v", i+1, burst, len(got), ok,
					testenv.MetricValue(t, m.fromPeerBandwidthDrops), testenv.MetricValue(t, m.fastFromPeer), testenv.MetricValue(t, m.fromPeerPackets)-received)
			}
		}
		wantCount(t, m.fromPeerBandwidthDrops, drops, "datagrams from peers dropped by the cap")
	})
}

// wantPaced checks that relayed of sent datagrams of size bytes, sent over
// elapsed, are what a cap of minBytesPerSecond lets through: at least a
// second's worth at once, at most that plus what elapsed refilled.
func wantPaced(t *testing.T, relayed, sent, size int, elapsed time.Duration) {
	t.Helper()
	burst := minBytesPerSecond / size
	most := burst + int(elapsed.Seconds()*minBytesPerSecond)/size + 1
	t.Logf("relayed %d of %d in %v (%d to %d allowed)", relayed, sent, elapsed, burst, most)
	if relayed < burst || relayed > most || relayed >= sent {
		t.Errorf("relayed %d of %d datagrams of %d bytes in %v; want %d to %d at %d bytes/s",
			relayed, sent, size, elapsed, burst, most, minBytesPerSecond)
	}
}

// waitMetricFunc waits until value() reaches want.
func waitMetricFunc(t *testing.T, value func() float64, want float64) {
	t.Helper()
	testenv.WaitFor(t, wait, "the counters to reach the datagrams sent", func() bool { return value() >= want })
}

// countQueued reads, without waiting, every datagram already queued on c
// and counts those keep accepts.
func countQueued(t *testing.T, c *net.UDPConn, keep func([]byte) bool) int {
	t.Helper()
	buf := make([]byte, 2048)
	count := 0
	for {
		n, ok := readQueued(t, c, buf)
		if !ok {
			return count
		}
		if n > 0 && keep(buf[:n]) {
			count++
		}
	}
}

// BenchmarkRelayAdmit is what the bandwidth cap adds to each relayed
// datagram: one admitted 160-byte datagram per direction, at the default
// quotas.bytes_per_second, the clock moving on so the gate never fills.
func BenchmarkRelayAdmit(b *testing.B) {
	rc := &relayConn{s: wrapperServer()}
	now := rc.s.dp.now()
	b.ReportAllocs()
	for b.Loop() {
		now += int64(time.Millisecond)
		if !rc.admitToPeer(160, now) || !rc.admitFromPeer(160, now) {
			b.Fatal("refused under the cap")
		}
	}
}
