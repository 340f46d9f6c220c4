// Package persource counts what each source holds (connections,
// handshakes) against a total and a per-source cap, a source being an IPv4
// address or an IPv6 /64 (ipclass.SourcePrefix), so that one host cannot
// take every slot of a limit that all clients share.
package persource

import (
	"net/netip"
	"sync"

	"icebox/internal/ipclass"
)

// Limits bound what all sources together and each one may hold.
type Limits struct {
	// Total is what all sources may hold together.
	Total int
	// PerSource is what one source may hold.
	PerSource int
	// FairShare also applies FairShareFull.
	FairShare bool
}

// FairShareFull says whether a source that holds held, of the total that
// all sources hold out of max, has had its share: once half of max is
// held, a source that holds any may hold at most an eighth of what is
// still free. A source that holds nothing still gets in while anything is
// free, and each source past the half mark takes at most about a ninth of
// what it finds, so a few sources cannot take every slot (four with a
// per-source cap of a quarter of max leave three eighths of it free),
// though some dozens, arriving one after another, can.
func FairShareFull(held, total, max int) bool {
	return max > 0 && held > 0 && total >= max/2 && held >= (max-total+fairDivisor-1)/fairDivisor
}

// fairDivisor: above half of max, a source may hold 1/fairDivisor of what
// is free.
const fairDivisor = 8

// Refusal says why Take refused, or that it did not.
type Refusal uint8

const (
	Admitted      Refusal = iota
	OverTotal             // Limits.Total reached
	OverPerSource         // Limits.PerSource reached
	OverFairShare         // the source has had its fair share
)

// Counter is what the sources hold now. The zero value is ready.
type Counter struct {
	mu    sync.Mutex
	held  map[netip.Prefix]int
	total int
}

// Take counts one more for a's source, unless that would exceed l.
func (c *Counter) Take(a netip.Addr, l Limits) Refusal {
	src := ipclass.SourcePrefix(a)
	c.mu.Lock()
	defer c.mu.Unlock()
	held := c.held[src]
	switch {
	case c.total >= l.Total:
		return OverTotal
	case held >= l.PerSource:
		return OverPerSource
	case l.FairShare && FairShareFull(held, c.total, l.Total):
		return OverFairShare
	}
	if c.held == nil {
		c.held = make(map[netip.Prefix]int)
	}
	c.held[src] = held + 1
	c.total++
	return Admitted
}

// Release gives back one that Take counted for a's source.
func (c *Counter) Release(a netip.Addr) {
	src := ipclass.SourcePrefix(a)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.held[src]--; c.held[src] <= 0 {
		delete(c.held, src)
	}
}

// Total is what all sources hold now.
func (c *Counter) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}
