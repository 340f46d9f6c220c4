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

// Which quota refused an allocation; labels icebox_turn_quota_refusals_total.
const (
	quotaUser  = "user"
	quotaIP    = "ip"
	quotaTotal = "total"
	quotaFair  = "fair_share" // the source has its share of a server more than half full
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

	all []prometheus.Collector
}

func newMetrics() *metrics {
	m := &metrics{
		authFailures:  map[string]prometheus.Counter{},
		peerRefusals:  map[string]prometheus.Counter{},
		quotaRefusals: map[string]prometheus.Counter{},
		fastDrops:     map[string]prometheus.Counter{},
	}
	allocActive := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "icebox_turn_allocations_active", Help: "TURN allocations currently held.",
	})
	allocTotal := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "icebox_turn_allocations_total", Help: "TURN allocations created.",
	})
	unanswered := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "icebox_turn_unanswered_total",
		Help: "Requests without a credential left unanswered: their source had used up quotas.answer_rate for now.",
	})
	auth := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_turn_auth_failures_total", Help: "Failed TURN authentications, by reason.",
	}, []string{"reason"})
	peer := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_turn_peer_refusals_total", Help: "Permissions, channel binds and sends refused by the peer policy, by reason.",
	}, []string{"reason"})
	quota := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_turn_quota_refusals_total", Help: "Allocations refused with 486, by the quota that was reached.",
	}, []string{"quota"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_turn_relayed_bytes_total", Help: "Payload bytes through relay sockets, by direction.",
	}, []string{"direction"})
	packets := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_turn_relayed_packets_total", Help: "Datagrams through relay sockets, by direction.",
	}, []string{"direction"})

	drops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_turn_channel_drops_total", Help: "ChannelData and Send/Data indications dropped by icebox's data plane, by reason: channel or permission expired, peer refused by the policy, send failed, pion busy (a datagram the data plane left to pion while pion had 64 of that relay to read).",
	}, []string{"reason"})
	fast := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_turn_channel_fast_packets_total", Help: "ChannelData and Send/Data indications relayed by icebox's own data plane (the rest of icebox_turn_relayed_packets_total went through pion), by direction.",
	}, []string{"direction"})
	m.fastToPeer, m.fastFromPeer = fast.WithLabelValues("to_peer"), fast.WithLabelValues("from_peer")
	for _, r := range dropReasons {
		m.fastDrops[r] = drops.WithLabelValues(r)
	}
	m.allocActive, m.allocTotal, m.unanswered = allocActive, allocTotal, unanswered
	for _, r := range authReasons {
		m.authFailures[r] = auth.WithLabelValues(r)
	}
	for _, r := range refusalReasons {
		m.peerRefusals[r] = peer.WithLabelValues(r)
	}
	for _, r := range []string{quotaUser, quotaIP, quotaTotal, quotaFair} {
		m.quotaRefusals[r] = quota.WithLabelValues(r)
	}
	m.toPeerBytes, m.fromPeerBytes = bytes.WithLabelValues("to_peer"), bytes.WithLabelValues("from_peer")
	m.toPeerPackets, m.fromPeerPackets = packets.WithLabelValues("to_peer"), packets.WithLabelValues("from_peer")
	m.relayReadErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "icebox_turn_relay_read_errors_total", Help: "Failed reads of relay sockets other than a closed socket; each is retried after a short pause, the allocation lives on.",
	})
	m.all = []prometheus.Collector{allocActive, allocTotal, unanswered, auth, peer, quota, bytes, packets, drops, fast, m.relayReadErrors}
	return m
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
