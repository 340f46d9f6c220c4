package certs

import (
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/promset"
)

// Metrics are the icebox_tls_* collectors every Source of one daemon
// shares.
type Metrics struct {
	loads    *prometheus.CounterVec
	expiry   *prometheus.GaugeVec
	obtained map[string]prometheus.Counter // by kind: new, renewal
	failures map[string]prometheus.Counter
	set      *promset.Set
	reg      prometheus.Registerer
}

// NewMetrics makes the collectors and registers them with reg (nil: none).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	set := promset.New("tls")
	m := &Metrics{
		loads: set.CounterVec("certificate_loads_total",
			"Certificate files read, by source (config key) and result: loaded, or refused (the old certificate stays).", "source", "result"),
		expiry: set.GaugeVec("certificate_expiry_timestamp_seconds",
			"When the certificate in service runs out (Unix time), by source.", "source"),
		obtained: set.Counters("acme_obtained_total",
			"Certificates obtained from the ACME CA, by kind: new or renewal.", "kind", "new", "renewal"),
		failures: set.Counters("acme_failures_total",
			"Failed attempts to obtain a certificate from the ACME CA, by kind: new or renewal. The certificate in service stays.", "kind", "new", "renewal"),
		set: set,
		reg: reg,
	}
	if err := set.Register(reg); err != nil {
		return nil, err
	}
	return m, nil
}

// Unregister removes the collectors from the registry NewMetrics used.
func (m *Metrics) Unregister() {
	if m != nil {
		m.set.Unregister(m.reg)
	}
}
