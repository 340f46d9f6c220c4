package signal

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// registry creates the package's collectors, named icebox_signal_*, and
// registers them when a Registerer was given. Each part declares its own
// metrics next to the code that updates them; labelled children are
// resolved once there, so counting costs no allocation on the frame path.
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
