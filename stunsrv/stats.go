package stunsrv

import "github.com/prometheus/client_golang/prometheus"

const (
	v4 = iota
	v6
)

// outcomeCounters are the per-transport, per-family outcomes of every
// datagram or frame, resolved once so that counting allocates nothing.
type outcomeCounters struct {
	answered  prometheus.Counter // Binding requests answered
	malformed prometheus.Counter // neither STUN nor ChannelData: dropped
	dropped   prometheus.Counter // well-formed but not ours to answer: anything but a Binding request while TURN is off, or from source port 0
	passed    prometheus.Counter // handed to the TURN server
}

type stats struct {
	udp, tcp, tls [2]outcomeCounters
	tcpConns      prometheus.Gauge
	tcpRefused    [numRefusals]prometheus.Counter
	// writeErrors counts answers the kernel refused to send, each once.
	// Clients retransmit, so this matters only when it keeps rising.
	writeErrors prometheus.Counter
	// readErrors counts failed socket reads; the loop goes on after each.
	readErrors prometheus.Counter

	collectors []prometheus.Collector
}

func newStats() *stats {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_stun_requests_total",
		Help: "STUN datagrams and TCP and TLS frames on the front door (the STUN port, TURN's TLS port and TURN on the shared TLS port), by transport, address family and outcome.",
	}, []string{"transport", "family", "outcome"})
	st := &stats{
		tcpConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "icebox_stun_tcp_connections",
			Help: "Open TCP and TLS connections on the front door.",
		}),
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_stun_tcp_refused_total",
		Help: "TCP and TLS connections closed at once, by reason: a cap (total, per_source, tls_handshakes in flight) or a failed or timed-out TLS handshake.",
	}, []string{"reason"})
	for i, name := range refusalNames {
		st.tcpRefused[i] = refused.WithLabelValues(name)
	}
	for fam, famName := range []string{"ipv4", "ipv6"} {
		for _, t := range []struct {
			name string
			c    *outcomeCounters
		}{{"udp", &st.udp[fam]}, {"tcp", &st.tcp[fam]}, {"tls", &st.tls[fam]}} {
			*t.c = outcomeCounters{
				answered:  requests.WithLabelValues(t.name, famName, "answered"),
				malformed: requests.WithLabelValues(t.name, famName, "malformed"),
				dropped:   requests.WithLabelValues(t.name, famName, "dropped"),
				passed:    requests.WithLabelValues(t.name, famName, "passed"),
			}
		}
	}
	st.writeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "icebox_stun_write_errors_total",
		Help: "Binding answers the kernel refused to send.",
	})
	st.readErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "icebox_stun_read_errors_total",
		Help: "Socket reads and accepts on the STUN port that failed; each is retried after a brief pause.",
	})
	st.collectors = []prometheus.Collector{requests, st.tcpConns, refused, st.writeErrors, st.readErrors}
	return st
}

func (st *stats) countWrite(err error) {
	if err != nil {
		st.writeErrors.Inc()
	}
}

// countFailed counts the answers of a batch that the kernel refused.
func (st *stats) countFailed(n int) {
	if n > 0 {
		st.writeErrors.Add(float64(n))
	}
}
