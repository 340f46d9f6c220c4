package stunsrv

import (
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/promset"
)

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

	set *promset.Set // all of the above, for Register
}

func newStats() *stats {
	set := promset.New("stun")
	requests := set.CounterVec("requests_total",
		"STUN datagrams and TCP and TLS frames on the front door (the STUN port, TURN's TLS port and TURN on the shared TLS port), by transport, address family and outcome.",
		"transport", "family", "outcome")
	st := &stats{
		set:      set,
		tcpConns: set.Gauge("tcp_connections", "Open TCP and TLS connections on the front door."),
	}
	refused := set.CounterVec("tcp_refused_total",
		"TCP and TLS connections closed at once, by reason: a cap (total, per_source, tls_handshakes in flight) or a failed or timed-out TLS handshake.",
		"reason")
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
	st.writeErrors = set.Counter("write_errors_total", "Binding answers the kernel refused to send.")
	st.readErrors = set.Counter("read_errors_total", "Socket reads and accepts on the STUN port that failed; each is retried after a brief pause.")
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
