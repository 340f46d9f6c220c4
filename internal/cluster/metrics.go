package cluster

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
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
	o := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "icebox", Subsystem: "cluster", Name: name, Help: help}
	}
	m := &metrics{
		connected:         prometheus.NewGauge(prometheus.GaugeOpts(o("nats_connected", "1 while this node is connected to NATS."))),
		connects:          prometheus.NewCounter(prometheus.CounterOpts(o("nats_connections_total", "Connections and reconnections to NATS; after each, this node forgets the other nodes' members until they announce them again."))),
		nodes:             prometheus.NewGauge(prometheus.GaugeOpts(o("nodes", "Other nodes heard within node_timeout."))),
		nodesLost:         prometheus.NewCounter(prometheus.CounterOpts(o("nodes_lost_total", "Nodes taken for dead or restarted; their members left their pairings."))),
		claims:            prometheus.NewCounter(prometheus.CounterOpts(o("room_lookups_total", "Joins that asked the other nodes who is in the pairing."))),
		claimsUnavailable: prometheus.NewCounter(prometheus.CounterOpts(o("room_lookups_failed_total", "Room lookups that could not reach NATS or every live node; the join was refused unless all members were local."))),
		claimsWaited:      prometheus.NewCounter(prometheus.CounterOpts(o("room_lookups_waited_total", "Joins that overlapped an earlier join to the same pairing on another node and waited for it to end, so that exactly one of the two finds the other there."))),
		framesOut:         prometheus.NewCounter(prometheus.CounterOpts(o("frames_sent_total", "Frames forwarded to members on other nodes."))),
		framesIn:          prometheus.NewCounter(prometheus.CounterOpts(o("frames_received_total", "Frames received from members on other nodes."))),
		framesDropped:     prometheus.NewCounter(prometheus.CounterOpts(o("frames_dropped_total", "Frames for other nodes dropped while NATS was unreachable."))),
		bad:               prometheus.NewCounter(prometheus.CounterOpts(o("bad_messages_total", "NATS messages dropped: bad MAC, malformed, or NATS errors such as a slow consumer."))),
		stale:             prometheus.NewCounter(prometheus.CounterOpts(o("stale_messages_total", "Authenticated NATS messages dropped as not fresh: taken before (a replay), from a node's earlier run, or sent more than node_timeout from this node's clock."))),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "icebox", Subsystem: "cluster", Name: "forward_latency_seconds",
			Help:    "From a frame's forwarding on the sending node to its delivery here (needs the nodes' clocks in sync).",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14),
		}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.connected, m.connects, m.nodes, m.nodesLost, m.claims, m.claimsUnavailable, m.claimsWaited, m.framesOut, m.framesIn, m.framesDropped, m.bad, m.stale, m.latency} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}
