package persource

import (
	"net/netip"
	"testing"
)

func TestTake(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:1")
	mapped := netip.MustParseAddr("::ffff:192.0.2.1")
	var c Counter
	l := Limits{Total: 4, PerSource: 2}
	for i, step := range []struct {
		take, release netip.Addr
		want          Refusal
	}{
		{take: a}, {take: mapped}, // one source, however written
		{take: a, want: OverPerSource},
		{take: v6a}, {take: v6b}, // one /64
		{take: b, want: OverTotal},
		{release: mapped},
		{take: v6a, want: OverPerSource},
		{take: b},
	} {
		if step.release.IsValid() {
			c.Release(step.release)
			continue
		}
		if got := c.Take(step.take, l); got != step.want {
			t.Fatalf("step %d: Take(%v) = %v, want %v", i, step.take, got, step.want)
		}
	}
	if c.Total() != 4 {
		t.Fatalf("Total() = %d, want 4", c.Total())
	}
	for _, x := range []netip.Addr{a, v6a, v6b, b} {
		c.Release(x)
	}
	if c.Total() != 0 || len(c.held) != 0 {
		t.Fatalf("after releasing all: total %d, %d sources held", c.Total(), len(c.held))
	}
}

// TestFairShare: four sources that may each hold a quarter of Total, and
// take all they can one after another, leave three eighths of it free;
// without FairShare they take everything.
func TestFairShare(t *testing.T) {
	fill := func(fair bool) (c *Counter) {
		c = new(Counter)
		l := Limits{Total: 64, PerSource: 16, FairShare: fair}
		for i := range 4 {
			src := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
			for c.Take(src, l) == Admitted {
			}
		}
		return c
	}
	if held := fill(false).Total(); held != 64 {
		t.Errorf("without the fair share four sources hold %d of 64, want all", held)
	}
	c := fill(true)
	if held := c.Total(); held != 40 {
		t.Errorf("with the fair share four sources hold %d of 64, want 40", held)
	}
	// Whoever holds nothing gets in while anything is free.
	l := Limits{Total: 64, PerSource: 16, FairShare: true}
	for i := range 24 {
		if got := c.Take(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), l); got != Admitted {
			t.Fatalf("newcomer %d: %v, want Admitted", i, got)
		}
	}
	if got := c.Take(netip.MustParseAddr("203.0.113.200"), l); got != OverTotal {
		t.Fatalf("newcomer when full: %v, want OverTotal", got)
	}
}
