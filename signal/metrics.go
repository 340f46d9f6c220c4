package signal

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// registry creates the package's collectors, named icebox_signal_*, and
// registers them when a Registerer was given. Every metric the package
// exports is declared in this file (README.md lists them); labelled
// children are resolved once here, so counting costs no allocation on
// the frame path.
type registry struct {
	reg prometheus.Registerer // nil: collectors work but are not exported
	err error
}

func (r *registry) register(c prometheus.Collector) {
	if r.reg == nil {
		return
	}
	if err := r.reg.Register(c); err != nil {
		r.err = errors.Join(r.err, err)
	}
}

func opts(name, help string) prometheus.Opts {
	return prometheus.Opts{Namespace: "icebox", Subsystem: "signal", Name: name, Help: help}
}

func (r *registry) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts(opts(name, help)))
	r.register(c)
	return c
}

func (r *registry) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts(opts(name, help)), labels)
	r.register(c)
	return c
}

func (r *registry) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts(opts(name, help)))
	r.register(g)
	return g
}

// connMetrics count what happens on connections.
type connMetrics struct {
	active prometheus.Gauge
	// refusedUpgrade and refusedConnect are
	// connections_refused_total{stage}: WebSocket upgrades turned away,
	// and TCP connections closed before any request because their source
	// held too many.
	refusedUpgrade, refusedConnect prometheus.Counter
	// refusedWaiting: refused WebSockets waiting for the client's close
	// frame (refuseNow).
	refusedWaiting prometheus.Gauge
	framesIn       [numKinds]prometheus.Counter
	framesOut      [numKinds]prometheus.Counter
	disconnects    [numReasons]prometheus.Counter
	refreshes      prometheus.Counter
}

func newConnMetrics(reg *registry) *connMetrics {
	m := &connMetrics{
		active: reg.gauge("connections", "WebSockets open now."),
		refusedWaiting: reg.gauge("refused_closing",
			"Refused WebSockets waiting for the client's close frame; each holds a place of its source's connections."),
		refreshes: reg.counter("credential_refreshes_total", "WsIceServers frames re-sent before the credentials expired."),
	}
	refused := reg.counterVec("connections_refused_total",
		"Connections turned away, by stage: upgrade, a WebSocket upgrade refused by origin, limits or shutdown; connect, a TCP connection closed before its first request because its source held too many.", "stage")
	m.refusedUpgrade, m.refusedConnect = refused.WithLabelValues("upgrade"), refused.WithLabelValues("connect")
	in := reg.counterVec("frames_received_total", "Frames received from clients, by id; invalid: not a frame.", "kind")
	out := reg.counterVec("frames_sent_total", "Frames queued to clients, by id.", "kind")
	for k := range numKinds {
		m.framesIn[k] = in.WithLabelValues(k.String())
		m.framesOut[k] = out.WithLabelValues(k.String())
	}
	disc := reg.counterVec("disconnects_total", "WebSockets closed, by reason.", "reason")
	for r := range numReasons {
		m.disconnects[r] = disc.WithLabelValues(r.String())
	}
	return m
}

// hubMetrics count pairings and what is kept for late joiners.
type hubMetrics struct {
	active         prometheus.Gauge   // rooms with at least one member
	backlogDropped prometheus.Counter // frames a lone sender sent that were not kept
	keptBytes      prometheus.Gauge   // bytes in all rooms' backlogs
}

func newHubMetrics(reg *registry) hubMetrics {
	return hubMetrics{
		active:         reg.gauge("rooms", "Pairings with at least one connection."),
		backlogDropped: reg.counter("backlog_dropped_total", "Frames a lone sender sent that were not kept for the next to join: backlog full, or an answer to a peer that has left."),
		keptBytes:      reg.gauge("kept_bytes", "Bytes of offers and candidates kept for the next member of a pairing."),
	}
}

// errorMetrics counts refusals by code.
type errorMetrics [numCodes]prometheus.Counter

func newErrorMetrics(reg *registry) *errorMetrics {
	vec := reg.counterVec("errors_total", "WsError frames sent, by code.", "code", "reason")
	var m errorMetrics
	for i := range m {
		c := firstCode + errCode(i)
		m[i] = vec.WithLabelValues(strconv.Itoa(int(c)), c.info().name)
	}
	return &m
}

func (m *errorMetrics) inc(c errCode) { m[c-firstCode].Inc() }

// mintMetrics count the TURN credentials refused by the mint budget, by
// where they were asked for.
type mintMetrics [numMintVias]prometheus.Counter

func newMintMetrics(reg *registry) mintMetrics {
	refused := reg.counterVec("credentials_refused_total",
		"TURN credentials refused because their source spent credentials_per_minute / credential_burst, by where they were asked for.", "via")
	var m mintMetrics
	m[mintViaWebSocket] = refused.WithLabelValues("websocket")
	m[mintViaHTTP] = refused.WithLabelValues("ice_servers")
	return m
}
