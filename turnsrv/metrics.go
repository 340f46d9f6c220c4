package turnsrv

import (
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/promset"
)

// Why an authentication failed; the values label
// icebox_turn_auth_failures_total.
const (
	authMalformed = "malformed"    // username is not "<expiry>[:<user>]"
	authExpired   = "expired"      // expiry has passed
	authTooLong   = "ttl_too_long" // expiry further ahead than max_ttl
	authRealm     = "realm"        // another realm than ours
	authBadMAC    = "bad_mac"      // no secret verifies MESSAGE-INTEGRITY
	authThrottled = "throttled"    // dropped: too many failures from this source
)

var authReasons = []string{authMalformed, authExpired, authTooLong, authRealm, authBadMAC, authThrottled}

// Which quota refused an allocation, a permission or a channel; labels
// icebox_turn_quota_refusals_total.
const (
	quotaUser  = "user"
	quotaIP    = "ip"
	quotaTotal = "total"
	quotaFair  = "fair_share" // the source has its share of a server more than half full

	quotaPermissions     = "permissions"       // the allocation holds quotas.permissions peer addresses
	quotaChannels        = "channels"          // the allocation holds quotas.channels channels
	quotaPeersPerRequest = "peers_per_request" // a CreatePermission named more than maxPeersPerRequest peers
)

// metrics holds every collector, with label children resolved once so the
// hot paths only do atomic adds. There are no per-user or per-address
// labels: cardinality stays fixed whatever clients do.
type metrics struct {
	allocActive prometheus.Gauge
	allocTotal  prometheus.Counter
	unanswered  prometheus.Counter

	authFailures  map[string]prometheus.Counter
	peerRefusals  map[string]prometheus.Counter
	quotaRefusals map[string]prometheus.Counter

	toPeerBytes, fromPeerBytes     prometheus.Counter
	toPeerPackets, fromPeerPackets prometheus.Counter

	fastDrops map[string]prometheus.Counter
	// fastToPeer and fastFromPeer count ChannelData relayed by icebox's
	// data plane rather than pion (a subset of the packets above).
	fastToPeer, fastFromPeer prometheus.Counter
	// relayReadErrors counts failed reads of relay sockets, each retried.
	relayReadErrors prometheus.Counter
	// toPeerBandwidthDrops and fromPeerBandwidthDrops count datagrams
	// over quotas.bytes_per_second, by direction; they count nowhere else.
	toPeerBandwidthDrops, fromPeerBandwidthDrops prometheus.Counter

	set *promset.Set // all of the above, for Register
}

func newMetrics() *metrics {
	set := promset.New("turn")
	m := &metrics{set: set}
	m.allocActive = set.Gauge("allocations_active", "TURN allocations currently held.")
	m.allocTotal = set.Counter("allocations_total", "TURN allocations created.")
	m.unanswered = set.Counter("unanswered_total", "Requests without a credential left unanswered: their source had used up quotas.answer_rate for now.")
	m.authFailures = set.Counters("auth_failures_total", "Failed TURN authentications, by reason.", "reason", authReasons...)
	m.peerRefusals = set.Counters("peer_refusals_total", "Permissions, channel binds and sends refused by the peer policy, by reason.", "reason", refusalReasons...)
	m.quotaRefusals = set.Counters("quota_refusals_total", "Allocations refused with 486, permissions and channels refused with 508 (or 400 for more than 16 peers in one request), by the quota that was reached.", "quota",
		quotaUser, quotaIP, quotaTotal, quotaFair, quotaPermissions, quotaChannels, quotaPeersPerRequest)
	bytes := set.Counters("relayed_bytes_total", "Payload bytes through relay sockets, by direction.", "direction", toPeer, fromPeer)
	packets := set.Counters("relayed_packets_total", "Datagrams through relay sockets, by direction.", "direction", toPeer, fromPeer)
	m.fastDrops = set.Counters("channel_drops_total", "ChannelData and Send/Data indications dropped by icebox's data plane, by reason: channel or permission expired, peer refused by the policy, send failed.", "reason", dropReasons...)
	fast := set.Counters("channel_fast_packets_total", "ChannelData and Send/Data indications relayed by icebox's own data plane (the rest of icebox_turn_relayed_packets_total went through pion), by direction.", "direction", toPeer, fromPeer)
	bwDrops := set.Counters("bandwidth_drops_total", "Datagrams dropped because their allocation had relayed quotas.bytes_per_second in that direction, by direction: to_peer on pion's path and icebox's data plane alike, from_peer on the data plane only (what goes to pion from a peer is not charged).", "direction", toPeer, fromPeer)
	m.relayReadErrors = set.Counter("relay_read_errors_total", "Failed reads of relay sockets other than a closed socket; each is retried after a short pause, the allocation lives on.")
	m.toPeerBytes, m.fromPeerBytes = bytes[toPeer], bytes[fromPeer]
	m.toPeerPackets, m.fromPeerPackets = packets[toPeer], packets[fromPeer]
	m.fastToPeer, m.fastFromPeer = fast[toPeer], fast[fromPeer]
	m.toPeerBandwidthDrops, m.fromPeerBandwidthDrops = bwDrops[toPeer], bwDrops[fromPeer]
	return m
}

// The values of the direction label.
const (
	toPeer   = "to_peer"
	fromPeer = "from_peer"
)
