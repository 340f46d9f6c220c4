package cluster

import (
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/promset"
)

// metrics are icebox_cluster_*.
type metrics struct {
	connected         prometheus.Gauge
	connects          prometheus.Counter
	nodes             prometheus.Gauge
	nodesLost         prometheus.Counter
	claims            prometheus.Counter
	claimsUnavailable prometheus.Counter
	claimsWaited      prometheus.Counter
	framesOut         prometheus.Counter
	framesIn          prometheus.Counter
	framesDropped     prometheus.Counter
	bad               prometheus.Counter
	stale             prometheus.Counter
	latency           prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	set := promset.New("cluster")
	m := &metrics{
		connected:         set.Gauge("nats_connected", "1 while this node is connected to NATS."),
		connects:          set.Counter("nats_connections_total", "Connections and reconnections to NATS; after each, this node forgets the other nodes' members until they announce them again."),
		nodes:             set.Gauge("nodes", "Other nodes heard within node_timeout."),
		nodesLost:         set.Counter("nodes_lost_total", "Nodes taken for dead or restarted; their members left their pairings."),
		claims:            set.Counter("room_lookups_total", "Joins that asked the other nodes who is in the pairing."),
		claimsUnavailable: set.Counter("room_lookups_failed_total", "Room lookups that could not reach NATS or every live node; the join was refused unless all members were local."),
		claimsWaited:      set.Counter("room_lookups_waited_total", "Joins that overlapped an earlier join to the same pairing on another node and waited for it to end, so that exactly one of the two finds the other there."),
		framesOut:         set.Counter("frames_sent_total", "Frames forwarded to members on other nodes."),
		framesIn:          set.Counter("frames_received_total", "Frames received from members on other nodes."),
		framesDropped:     set.Counter("frames_dropped_total", "Frames for other nodes dropped while NATS was unreachable."),
		bad:               set.Counter("bad_messages_total", "NATS messages dropped: bad MAC, malformed, or NATS errors such as a slow consumer."),
		stale:             set.Counter("stale_messages_total", "Authenticated NATS messages dropped as not fresh: taken before (a replay), from a node's earlier run, or sent more than node_timeout from this node's clock."),
		latency: set.Histogram("forward_latency_seconds",
			"From a frame's forwarding on the sending node to its delivery here (needs the nodes' clocks in sync).",
			prometheus.ExponentialBuckets(50e-6, 2, 14)),
	}
	return m, set.Register(reg)
}
