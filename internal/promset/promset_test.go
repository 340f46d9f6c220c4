package promset

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// exported returns the names of the metric families reg exports.
func exported(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	return names
}

func TestNamesHelpAndLabels(t *testing.T) {
	s := New("part")
	s.Counter("c_total", "A counter.").Inc()
	s.Gauge("g", "A gauge.").Set(2)
	s.CounterVec("v_total", "A vector.", "a", "b").WithLabelValues("x", "y").Inc()
	dirs := s.Counters("d_total", "By direction.", "direction", "in", "out")
	dirs["out"].Add(3)
	s.Histogram("h_seconds", "A histogram.", []float64{1, 2}).Observe(1.5)
	reg := prometheus.NewRegistry()
	if err := s.Register(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf
	}
	want := map[string]string{
		"icebox_part_c_total":   "A counter.",
		"icebox_part_g":         "A gauge.",
		"icebox_part_v_total":   "A vector.",
		"icebox_part_d_total":   "By direction.",
		"icebox_part_h_seconds": "A histogram.",
	}
	if len(got) != len(want) {
		t.Errorf("exported %v, want %d families", slices.Sorted(func(yield func(string) bool) {
			for n := range got {
				if !yield(n) {
					return
				}
			}
		}), len(want))
	}
	for name, help := range want {
		if mf := got[name]; mf == nil || mf.GetHelp() != help {
			t.Errorf("%s: got %v, want help %q", name, mf, help)
		}
	}
	// Counters resolved a child per value, exported before any count.
	d := got["icebox_part_d_total"].GetMetric()
	if len(d) != 2 {
		t.Fatalf("icebox_part_d_total has %d children, want in and out", len(d))
	}
	for _, m := range d {
		l := m.GetLabel()
		if len(l) != 1 || l[0].GetName() != "direction" {
			t.Fatalf("labels %v, want direction only", l)
		}
		want := map[string]float64{"in": 0, "out": 3}[l[0].GetValue()]
		if v := m.GetCounter().GetValue(); v != want {
			t.Errorf("direction=%s: %v, want %v", l[0].GetValue(), v, want)
		}
	}
	if b := got["icebox_part_h_seconds"].GetMetric()[0].GetHistogram().GetBucket(); len(b) != 2 || b[0].GetUpperBound() != 1 {
		t.Errorf("buckets %v, want 1 and 2", b)
	}
}

// A name already taken fails Register, names the metric, and leaves none
// of the Set registered, so that the part can be started again later.
func TestRegisterIsAllOrNothing(t *testing.T) {
	reg := prometheus.NewRegistry()
	taken := prometheus.NewCounter(prometheus.CounterOpts{Name: "icebox_part_b_total", Help: "Taken."})
	reg.MustRegister(taken)

	s := New("part")
	s.Counter("a_total", "First.")
	s.Counter("b_total", "Taken.")
	s.Gauge("c", "After the taken one.")
	err := s.Register(reg)
	var already prometheus.AlreadyRegisteredError
	if !errors.As(err, &already) {
		t.Fatalf("Register: %v, want AlreadyRegisteredError", err)
	}
	if !strings.Contains(err.Error(), "part metrics: registering icebox_part_b_total") {
		t.Errorf("error %q does not name the part and the metric", err)
	}
	if got := exported(t, reg); !slices.Equal(got, []string{"icebox_part_b_total"}) {
		t.Errorf("after a failed Register the registry exports %v, want only the one taken before", got)
	}

	reg.Unregister(taken)
	if err := s.Register(reg); err != nil {
		t.Fatalf("Register once the name is free: %v", err)
	}
	if got := exported(t, reg); !slices.Equal(got, []string{"icebox_part_a_total", "icebox_part_b_total", "icebox_part_c"}) {
		t.Errorf("exported %v", got)
	}
}

func TestUnregisterFreesEveryName(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := New("part")
	s.Counter("a_total", "A.")
	s.Counters("b_total", "B.", "reason", "x")
	if err := s.Register(reg); err != nil {
		t.Fatal(err)
	}
	s.Unregister(reg)
	if got := exported(t, reg); len(got) != 0 {
		t.Fatalf("after Unregister the registry exports %v", got)
	}
	again := New("part")
	again.Counter("a_total", "A.")
	again.Counters("b_total", "B.", "reason", "x")
	if err := again.Register(reg); err != nil {
		t.Fatalf("a new Set with the same names: %v", err)
	}
}

func TestNilRegistererExportsNothingAndCountsAnyway(t *testing.T) {
	s := New("part")
	c := s.Counter("a_total", "A.")
	if err := s.Register(nil); err != nil {
		t.Fatal(err)
	}
	s.Unregister(nil)
	c.Inc()
	m := &dto.Metric{}
	if err := c.Write(m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("counter %v (%v), want 1", m, err)
	}
}

// Counting on a resolved child is what the hot paths do; it must not
// allocate.
func TestCountingAllocatesNothing(t *testing.T) {
	dirs := New("part").Counters("d_total", "D.", "direction", "in", "out")
	out := dirs["out"]
	if n := testing.AllocsPerRun(100, func() { out.Add(100) }); n != 0 {
		t.Fatalf("%v allocations per count", n)
	}
}
