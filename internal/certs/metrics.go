package certs

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the icebox_tls_* collectors every Source of one daemon
// shares.
type Metrics struct {
	loads    *prometheus.CounterVec
	expiry   *prometheus.GaugeVec
	obtained *prometheus.CounterVec
	failures *prometheus.CounterVec
	reg      prometheus.Registerer
}

// NewMetrics makes the collectors and registers them with reg (nil: none).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_tls_certificate_loads_total",
			Help: "Certificate files read, by source (config key) and result: loaded, or refused (the old certificate stays).",
		}, []string{"source", "result"}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "icebox_tls_certificate_expiry_timestamp_seconds",
			Help: "When the certificate in service runs out (Unix time), by source.",
		}, []string{"source"}),
		obtained: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_tls_acme_obtained_total",
			Help: "Certificates obtained from the ACME CA, by kind: new or renewal.",
		}, []string{"kind"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_tls_acme_failures_total",
			Help: "Failed attempts to obtain a certificate from the ACME CA, by kind: new or renewal. The certificate in service stays.",
		}, []string{"kind"}),
	}
	for _, kind := range []string{"new", "renewal"} {
		m.obtained.WithLabelValues(kind)
		m.failures.WithLabelValues(kind)
	}
	if reg == nil {
		return m, nil
	}
	var done []prometheus.Collector
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, errors.Join(errors.New("certs: register metrics"), err)
		}
		done = append(done, c)
	}
	m.reg = reg
	return m, nil
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.loads, m.expiry, m.obtained, m.failures}
}

// Unregister removes the collectors from the registry NewMetrics used.
func (m *Metrics) Unregister() {
	if m == nil || m.reg == nil {
		return
	}
	for _, c := range m.collectors() {
		m.reg.Unregister(c)
	}
}
