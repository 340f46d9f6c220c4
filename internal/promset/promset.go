// Package promset makes the Prometheus collectors of one part of icebox,
// named icebox_<subsystem>_<name>, keeps them, and registers them together.
//
// promauto.With does the making and registering too, but panics when a
// name is taken; a part of icebox instead fails to start with an error
// (a second server on the same registry, a reload that overlaps), and
// must not leave half its metrics registered when it does.
package promset

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Namespace prefixes every metric icebox exports.
const Namespace = "icebox"

// A Set holds the collectors of one subsystem. Make them all before
// Register; a Set is not safe for concurrent use while being filled, its
// collectors are.
type Set struct {
	subsystem string
	names     []string // fully qualified, for errors
	all       []prometheus.Collector
}

// New returns an empty Set for icebox_<subsystem>_* metrics.
func New(subsystem string) *Set { return &Set{subsystem: subsystem} }

func (s *Set) opts(name, help string) prometheus.Opts {
	return prometheus.Opts{Namespace: Namespace, Subsystem: s.subsystem, Name: name, Help: help}
}

func (s *Set) keep(name string, c prometheus.Collector) {
	s.names = append(s.names, prometheus.BuildFQName(Namespace, s.subsystem, name))
	s.all = append(s.all, c)
}

// Counter makes icebox_<subsystem>_<name>.
func (s *Set) Counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts(s.opts(name, help)))
	s.keep(name, c)
	return c
}

// Gauge makes icebox_<subsystem>_<name>.
func (s *Set) Gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts(s.opts(name, help)))
	s.keep(name, g)
	return g
}

// CounterVec makes icebox_<subsystem>_<name> with labels. Resolve its
// children once (WithLabelValues) where they are made, not per event.
func (s *Set) CounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts(s.opts(name, help)), labels)
	s.keep(name, v)
	return v
}

// GaugeVec makes icebox_<subsystem>_<name> with labels.
func (s *Set) GaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts(s.opts(name, help)), labels)
	s.keep(name, v)
	return v
}

// Counters makes icebox_<subsystem>_<name> with one label and resolves
// the child of each of its values, so that counting is a lookup and an
// atomic add. A value not given here has no child.
func (s *Set) Counters(name, help, label string, values ...string) map[string]prometheus.Counter {
	v := s.CounterVec(name, help, label)
	children := make(map[string]prometheus.Counter, len(values))
	for _, value := range values {
		children[value] = v.WithLabelValues(value)
	}
	return children
}

// Histogram makes icebox_<subsystem>_<name> with the given buckets.
func (s *Set) Histogram(name, help string, buckets []float64) prometheus.Histogram {
	o := s.opts(name, help)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: o.Namespace, Subsystem: o.Subsystem, Name: o.Name, Help: o.Help, Buckets: buckets,
	})
	s.keep(name, h)
	return h
}

// Register registers every collector of the Set with reg, or none: if one
// fails, those already registered are unregistered again and the error
// names the metric. With a nil reg the collectors work but are not
// exported.
func (s *Set) Register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for i, c := range s.all {
		if err := reg.Register(c); err != nil {
			for _, done := range s.all[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("%s metrics: registering %s: %w", s.subsystem, s.names[i], err)
		}
	}
	return nil
}

// Unregister removes every collector of the Set from reg (nil: nothing).
func (s *Set) Unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range s.all {
		reg.Unregister(c)
	}
}
