package turnsrv

import (
	"sync/atomic"
	"time"
)

// rateGate paces one direction of an allocation's relayed bytes at
// quotas.bytes_per_second, in bursts of a second's worth. It is a token
// bucket kept as one number (GCRA: the time the bucket would be full
// again), so concurrent senders share it with one compare-and-swap and no
// lock. Towards peers it counts both paths, icebox's data plane and pion's
// WriteTo (pion has checked the permission by then); from peers it counts
// what the data plane relays, after its permission checks. Datagrams from
// peers that go to pion are ones the data plane's mirror does not know,
// mostly a stranger's that pion drops, and charging them would let anyone
// spend an allocation's budget.
type rateGate struct {
	due atomic.Int64 // dataPlane.now() units: when the bytes admitted so far are paid for
}

// admit reports whether n bytes may pass at now at rate bytes per second
// (0: no limit), and charges them if so.
func (g *rateGate) admit(now int64, n int, rate int) bool {
	if rate <= 0 {
		return true
	}
	cost := int64(n) * int64(time.Second) / int64(rate)
	for {
		due := g.due.Load()
		next := max(due, now) + cost
		if next-now > int64(time.Second) {
			return false
		}
		if g.due.CompareAndSwap(due, next) {
			return true
		}
	}
}

// admitToPeer and admitFromPeer charge n bytes, at now (dataPlane.now),
// to the allocation's bandwidth in one direction, counting a datagram
// they refuse. Only a datagram that is relayed is charged, after the
// permission, lifetime and policy checks: a stranger's datagrams to the
// relay port must not spend the allocation's budget and starve its peers.
func (c *relayConn) admitToPeer(n int, now int64) bool {
	if c.admit(&c.toPeerGate, n, now) {
		return true
	}
	c.s.metrics.toPeerBandwidthDrops.Inc()
	return false
}

func (c *relayConn) admitFromPeer(n int, now int64) bool {
	if c.admit(&c.fromPeerGate, n, now) {
		return true
	}
	c.s.metrics.fromPeerBandwidthDrops.Inc()
	return false
}

func (c *relayConn) admit(g *rateGate, n int, now int64) bool {
	rate := c.s.live.Load().cfg.Quotas.BytesPerSecond
	return rate <= 0 || g.admit(now, n, rate)
}
