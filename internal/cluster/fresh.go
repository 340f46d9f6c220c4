package cluster

import "time"

// A message is taken once, and only while it is fresh. Its HMAC proves
// which node sent it, not when: anyone on the NATS account could send a
// captured frame again, or a member's join from an earlier call into a
// later call of the same pairing (whose subject is the same every time),
// or a heartbeat of a node's run before it reconnected. So every message
// carries its sender's boot id and a sequence number under the MAC, and
// when it was sent:
//
//   - sent more than node_timeout from this node's clock, it is dropped:
//     a node that knows nothing yet of the sender (just started) cannot
//     be fed an old run's messages;
//   - from a run (boot) other than the one this node follows for that
//     node, it is dropped, unless it is a heartbeat of a later run (a
//     restart or reconnection), or the followed run has been silent for
//     node_timeout: then this node follows the heartbeat's run from its
//     number on;
//   - a sequence number of that run not above the last one taken is
//     dropped.
//
// "Above the last", although a node's messages go to several subjects and
// a receiver follows some of them only: NATS delivers one publisher's
// messages in the order published to every subscriber, whatever their
// subjects (source-ordered delivery, across a cluster's routes too, which
// carry an account's messages on one connection), a run is one connection
// (a reconnection starts a new run), and a node takes every subscription's
// messages from one channel, in the order its connection read them. So a
// node's messages arrive in the order of their numbers, with gaps for the
// subjects the receiver does not follow. A window of recent numbers (as
// IPsec keeps) would take a message out of order, but also a replay of
// any recent one the receiver never got, such as a join on a pairing it
// did not follow yet; numbers per subject would need per-subject state
// kept as long as a subject can be replayed on.

// outside says whether a message sent off ago (negative: ahead of this
// node's clock) is too far from now to be fresh.
func outside(off, window time.Duration) bool { return off > window || off < -window }

// sender is what this node follows of another node's messages.
type sender struct {
	boot  uint64
	last  uint64    // the number of its last message taken
	heard time.Time // when
}

// ownBoot is an earlier run of this node, for telling a replay of its own
// messages from another node that uses its name.
type ownBoot struct {
	boot  uint64
	ended time.Time
}

// nextBoot is a boot id greater than prev: when the run starts, Unix ns.
func nextBoot(prev uint64) uint64 {
	return max(uint64(time.Now().UnixNano()), prev+1)
}

// freshLocked reports whether m, authenticated, is to be taken; see
// above. A message under this node's name is fresh unless one of this
// node's runs sent it (then it is a replay): the caller logs the clash.
func (n *Node) freshLocked(m message, now time.Time) bool {
	if outside(now.Sub(time.Unix(0, m.sent)), n.cfg.NodeTimeout) {
		return false
	}
	if m.node == n.name {
		if m.boot == n.boot {
			return false
		}
		for _, b := range n.ownBoots {
			if b.boot == m.boot {
				return false
			}
		}
		return true
	}
	s := n.senders[m.node]
	if s == nil || s.boot != m.boot {
		later := s == nil || m.boot > s.boot || now.Sub(s.heard) > n.cfg.NodeTimeout
		if m.typ != msgHeartbeat || !later {
			return false
		}
		if s == nil {
			s = &sender{}
			n.senders[m.node] = s
		}
		s.boot = m.boot
	} else if m.seq <= s.last {
		return false
	}
	s.last, s.heard = m.seq, now
	return true
}

// endBootLocked starts a new run of this node, remembering the one that
// ends for node_timeout, as long as its messages can be fresh.
func (n *Node) endBootLocked(now time.Time) {
	keep := n.ownBoots[:0]
	for _, b := range n.ownBoots {
		if now.Sub(b.ended) <= n.cfg.NodeTimeout {
			keep = append(keep, b)
		}
	}
	n.ownBoots = append(keep, ownBoot{n.boot, now})
	n.boot = nextBoot(n.boot)
}
