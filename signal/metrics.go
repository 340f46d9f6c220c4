package signal

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/promset"
)

// Every metric the package exports, icebox_signal_*, is declared in this
// file (README.md lists them); labelled children are resolved once here,
// so counting costs no allocation on the frame path.

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

func newConnMetrics(set *promset.Set) *connMetrics {
	m := &connMetrics{
		active: set.Gauge("connections", "WebSockets open now."),
		refusedWaiting: set.Gauge("refused_closing",
			"Refused WebSockets waiting for the client's close frame; each holds a place of its source's connections."),
		refreshes: set.Counter("credential_refreshes_total", "WsIceServers frames re-sent before the credentials expired."),
	}
	refused := set.CounterVec("connections_refused_total",
		"Connections turned away, by stage: upgrade, a WebSocket upgrade refused by origin, limits or shutdown; connect, a TCP connection closed before its first request because its source held too many.", "stage")
	m.refusedUpgrade, m.refusedConnect = refused.WithLabelValues("upgrade"), refused.WithLabelValues("connect")
	in := set.CounterVec("frames_received_total", "Frames received from clients, by id; invalid: not a frame.", "kind")
	out := set.CounterVec("frames_sent_total", "Frames queued to clients, by id.", "kind")
	for k := range numKinds {
		m.framesIn[k] = in.WithLabelValues(k.String())
		m.framesOut[k] = out.WithLabelValues(k.String())
	}
	disc := set.CounterVec("disconnects_total", "WebSockets closed, by reason.", "reason")
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

func newHubMetrics(set *promset.Set) hubMetrics {
	return hubMetrics{
		active:         set.Gauge("rooms", "Pairings with at least one connection."),
		backlogDropped: set.Counter("backlog_dropped_total", "Frames a lone sender sent that were not kept for the next to join: backlog full, or an answer to a peer that has left."),
		keptBytes:      set.Gauge("kept_bytes", "Bytes of offers and candidates kept for the next member of a pairing."),
	}
}

// errorMetrics counts refusals by code.
type errorMetrics [numCodes]prometheus.Counter

func newErrorMetrics(set *promset.Set) *errorMetrics {
	vec := set.CounterVec("errors_total", "WsError frames sent, by code.", "code", "reason")
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

func newMintMetrics(set *promset.Set) mintMetrics {
	refused := set.CounterVec("credentials_refused_total",
		"TURN credentials refused because their source spent credentials_per_minute / credential_burst, by where they were asked for.", "via")
	var m mintMetrics
	m[mintViaWebSocket] = refused.WithLabelValues("websocket")
	m[mintViaHTTP] = refused.WithLabelValues("ice_servers")
	return m
}
