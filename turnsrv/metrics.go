package turnsrv

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
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

	all []prometheus.Collector
}

func newMetrics() *metrics {
	m := &metrics{}
	m.allocActive = m.gauge("icebox_turn_allocations_active", "TURN allocations currently held.")
	m.allocTotal = m.counter("icebox_turn_allocations_total", "TURN allocations created.")
	m.unanswered = m.counter("icebox_turn_unanswered_total", "Requests without a credential left unanswered: their source had used up quotas.answer_rate for now.")
	m.authFailures = m.counters("icebox_turn_auth_failures_total", "Failed TURN authentications, by reason.", "reason", authReasons...)
	m.peerRefusals = m.counters("icebox_turn_peer_refusals_total", "Permissions, channel binds and sends refused by the peer policy, by reason.", "reason", refusalReasons...)
	m.quotaRefusals = m.counters("icebox_turn_quota_refusals_total", "Allocations refused with 486, permissions and channels refused with 508 (or 400 for more than 16 peers in one request), by the quota that was reached.", "quota",
		quotaUser, quotaIP, quotaTotal, quotaFair, quotaPermissions, quotaChannels, quotaPeersPerRequest)
	bytes := m.counters("icebox_turn_relayed_bytes_total", "Payload bytes through relay sockets, by direction.", "direction", toPeer, fromPeer)
	packets := m.counters("icebox_turn_relayed_packets_total", "Datagrams through relay sockets, by direction.", "direction", toPeer, fromPeer)
	m.fastDrops = m.counters("icebox_turn_channel_drops_total", "ChannelData and Send/Data indications dropped by icebox's data plane, by reason: channel or permission expired, peer refused by the policy, send failed.", "reason", dropReasons...)
	fast := m.counters("icebox_turn_channel_fast_packets_total", "ChannelData and Send/Data indications relayed by icebox's own data plane (the rest of icebox_turn_relayed_packets_total went through pion), by direction.", "direction", toPeer, fromPeer)
	bwDrops := m.counters("icebox_turn_bandwidth_drops_total", "Datagrams dropped because their allocation had relayed quotas.bytes_per_second in that direction, by direction: to_peer on pion's path and icebox's data plane alike, from_peer on the data plane only (what goes to pion from a peer is not charged).", "direction", toPeer, fromPeer)
	m.relayReadErrors = m.counter("icebox_turn_relay_read_errors_total", "Failed reads of relay sockets other than a closed socket; each is retried after a short pause, the allocation lives on.")
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

// gauge, counter and counters make a collector that register exports.

func (m *metrics) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	m.all = append(m.all, g)
	return g
}

func (m *metrics) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	m.all = append(m.all, c)
	return c
}

// counters makes a counter with one label and resolves the child for each
// of its values, so that counting is a map lookup and an atomic add.
func (m *metrics) counters(name, help, label string, values ...string) map[string]prometheus.Counter {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
	m.all = append(m.all, vec)
	children := make(map[string]prometheus.Counter, len(values))
	for _, v := range values {
		children[v] = vec.WithLabelValues(v)
	}
	return children
}

func (m *metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	var errs []error
	for _, c := range m.all {
		if err := r.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("turn: registering metrics: %w", err)
	}
	return nil
}

func (m *metrics) unregister(r prometheus.Registerer) {
	if r == nil {
		return
	}
	for _, c := range m.all {
		r.Unregister(c)
	}
}
