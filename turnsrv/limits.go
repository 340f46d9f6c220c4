package turnsrv

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"icebox/internal/ipclass"
	"icebox/internal/persource"
	"icebox/internal/tokenbucket"
)

// connID names a client transport: its address and whether it came over a
// stream (TCP or TLS) rather than UDP.
type connID struct {
	src    netip.AddrPort
	stream bool
}

func connIDOf(a net.Addr) connID {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return connID{src: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
	case *net.TCPAddr:
		ap := a.AddrPort()
		return connID{src: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), stream: true}
	}
	return connID{}
}

// sourceKey is what per-address limits count by, the front door's too.
func sourceKey(a netip.Addr) netip.Addr { return ipclass.SourceKey(a) }

// userOf is the quota owner of a TURN REST username: the part after the
// first ':' ("" when there is none, which no per-user quota applies to).
func userOf(username string) string {
	for i := 0; i < len(username); i++ {
		if username[i] == ':' {
			return username[i+1:]
		}
	}
	return ""
}

// quotas counts allocations per user, per source and in total.
//
// pion asks QuotaHandler before it creates an allocation and reports the
// creation later, from the same goroutine but with other requests from
// other goroutines in between. So admit reserves a slot at once, and
// created turns the reservation into the allocation; a reservation whose
// creation failed (no relay port free) lapses after pendingTTL.
type quotas struct {
	mu      sync.Mutex
	perUser map[string]int
	perIP   map[netip.Addr]int
	total   int // held and reserved
	active  int // held
	pending map[connID]pendingAlloc
	// allocs counts allocations by client transport, so inspect can tell
	// a request for an allocation that no longer exists (437).
	allocs map[connID]int
	// changed is closed and replaced whenever active changes, so Close and
	// tests can wait for allocations to come and go without polling.
	changed chan struct{}
}

type pendingAlloc struct {
	user string
	ip   netip.Addr
	at   time.Time
}

const pendingTTL = 10 * time.Second

func newQuotas() *quotas {
	return &quotas{
		perUser: map[string]int{},
		perIP:   map[netip.Addr]int{},
		pending: map[connID]pendingAlloc{},
		allocs:  map[connID]int{},
		changed: make(chan struct{}),
	}
}

// admit reserves an allocation for user from c, or returns which quota
// refuses it.
func (q *quotas) admit(user string, c connID, lim QuotaConfig, now time.Time) (refusedBy string) {
	ip := sourceKey(c.src.Addr())
	q.mu.Lock()
	defer q.mu.Unlock()
	for id, p := range q.pending {
		if now.Sub(p.at) > pendingTTL || id == c {
			delete(q.pending, id)
			q.add(p.user, p.ip, -1)
		}
	}
	switch {
	case lim.Total > 0 && q.total >= lim.Total:
		return quotaTotal
	case lim.PerIP > 0 && q.perIP[ip] >= lim.PerIP:
		return quotaIP
	case lim.PerIP > 0 && persource.FairShareFull(q.perIP[ip], q.total, lim.Total):
		// per_ip alone let 32 addresses take all 1,000.
		return quotaFair
	case lim.PerUser > 0 && user != "" && q.perUser[user] >= lim.PerUser:
		return quotaUser
	}
	q.pending[c] = pendingAlloc{user: user, ip: ip, at: now}
	q.add(user, ip, 1)
	return ""
}

// created accounts an allocation pion made for user from c.
func (q *quotas) created(user string, c connID) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.pending[c]; ok {
		delete(q.pending, c) // already counted by admit
	} else {
		q.add(user, sourceKey(c.src.Addr()), 1)
	}
	q.allocs[c]++
	q.setActive(q.active + 1)
}

// deleted releases an allocation.
func (q *quotas) deleted(user string, c connID) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.add(user, sourceKey(c.src.Addr()), -1)
	if q.allocs[c]--; q.allocs[c] <= 0 {
		delete(q.allocs, c)
	}
	q.setActive(q.active - 1)
}

// failed releases the reservation c made, if any, as soon as pion reports
// that its request failed (e.g. no relay port free), rather than after
// pendingTTL: a client retrying should not be refused by its own failures.
func (q *quotas) failed(c connID) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if p, ok := q.pending[c]; ok {
		delete(q.pending, c)
		q.add(p.user, p.ip, -1)
	}
}

// hasAllocation reports whether client transport c holds an allocation.
func (q *quotas) hasAllocation(c connID) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.allocs[c] > 0
}

func (q *quotas) setActive(n int) {
	q.active = n
	close(q.changed)
	q.changed = make(chan struct{})
}

func (q *quotas) add(user string, ip netip.Addr, d int) {
	q.total += d
	if user != "" {
		if q.perUser[user] += d; q.perUser[user] <= 0 {
			delete(q.perUser, user)
		}
	}
	if q.perIP[ip] += d; q.perIP[ip] <= 0 {
		delete(q.perIP, ip)
	}
}

// held returns the number of allocations held and a channel closed at the
// next change.
func (q *quotas) held() (int, <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.active, q.changed
}

// authGuard throttles sources that keep failing authentication and keeps
// their failures from flooding the log.
type authGuard struct {
	mu  sync.Mutex
	src map[netip.Addr]*authSource
}

// authSource is a token bucket of allowed failures plus log bookkeeping.
type authSource struct {
	tokens    float64
	last      time.Time
	lastLog   time.Time
	quiet     int // failures since lastLog that were not logged
	throttled bool
}

// maxAuthSources bounds the guard's memory under a spray of sources.
const maxAuthSources = 1 << 16

func (g *authGuard) refill(s *authSource, now time.Time, lim QuotaConfig) {
	if lim.AuthFailures <= 0 || lim.AuthFailureWindow <= 0 {
		s.tokens = 1
		return
	}
	burst := float64(lim.AuthFailures)
	s.tokens += float64(now.Sub(s.last)) / float64(lim.AuthFailureWindow) * burst
	if s.tokens > burst {
		s.tokens = burst
	}
	s.last = now
}

// blocked reports whether ip has used up its failures.
func (g *authGuard) blocked(ip netip.Addr, now time.Time, lim QuotaConfig) bool {
	if lim.AuthFailures <= 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.src[ip]
	if s == nil {
		return false
	}
	g.refill(s, now, lim)
	if s.tokens >= 1 {
		s.throttled = false
		return false
	}
	return true
}

// failed records a failure from ip. It says whether to log it (at most one
// per window and source, with how many were left out before it) and
// whether ip has just become throttled. Only a tied failure, one whose
// source is proven, uses up the source's allowance: anyone can forge a
// UDP source.
func (g *authGuard) failed(ip netip.Addr, now time.Time, lim QuotaConfig, tied bool) (logIt bool, quiet int, throttled bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.src[ip]
	if s == nil {
		if g.src == nil {
			g.src = map[netip.Addr]*authSource{}
		}
		if len(g.src) >= maxAuthSources {
			g.sweep(now, lim)
		}
		s = &authSource{tokens: float64(lim.AuthFailures), last: now}
		g.src[ip] = s
	}
	g.refill(s, now, lim)
	if tied {
		s.tokens--
	}
	if lim.AuthFailures > 0 && s.tokens < 1 && !s.throttled {
		s.throttled, throttled = true, true
	}
	if s.lastLog.IsZero() || now.Sub(s.lastLog) >= lim.AuthFailureWindow {
		logIt, quiet = true, s.quiet
		s.lastLog, s.quiet = now, 0
	} else {
		s.quiet++
	}
	return logIt, quiet, throttled
}

// sweep forgets sources that have recovered and whose log window is over;
// if that frees nothing the map is dropped whole, trading a little
// throttling for bounded memory.
func (g *authGuard) sweep(now time.Time, lim QuotaConfig) {
	for ip, s := range g.src {
		g.refill(s, now, lim)
		if s.tokens >= float64(lim.AuthFailures) && now.Sub(s.lastLog) >= lim.AuthFailureWindow {
			delete(g.src, ip)
		}
	}
	if len(g.src) >= maxAuthSources {
		clear(g.src)
	}
}

// authKeys hands the key that verified a request's MESSAGE-INTEGRITY from
// the inspection in front of pion to pion's AuthHandler, which sees only
// username, realm and source. Both run on the goroutine reading that
// client's transport, one right after the other, and pion finishes with a
// message before it reads the next. So each reader (a UDP socket, a stream
// connection) has at most one key waiting: putting a new one drops the
// reader's previous one if pion never took it (it answered 438, or the
// request failed before authentication). The map holds at most one entry
// per reader, whatever clients send, and every operation is O(1).
type authKeys struct {
	mu sync.Mutex
	m  map[authSlot]verifiedKey
}

type authSlot struct {
	conn connID
	user string
}

type verifiedKey struct {
	key   []byte
	owner *keyOwner
}

// keyOwner is a reader's record of the key it left for pion.
type keyOwner struct {
	last authSlot
	has  bool
}

func (k *authKeys) put(o *keyOwner, s authSlot, key []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[authSlot]verifiedKey{}
	}
	k.dropLocked(o)
	k.m[s] = verifiedKey{key, o}
	o.last, o.has = s, true
}

// drop forgets o's waiting key, e.g. when its connection closes.
func (k *authKeys) drop(o *keyOwner) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dropLocked(o)
}

func (k *authKeys) dropLocked(o *keyOwner) {
	if o.has {
		if v, ok := k.m[o.last]; ok && v.owner == o {
			delete(k.m, o.last)
		}
		o.has = false
	}
}

func (k *authKeys) take(s authSlot) ([]byte, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[s]
	delete(k.m, s)
	return v.key, ok
}

// answerBudget rations the answers pion gives to requests that carry no
// credential (401s with a nonce, 400s): per source (IPv4
// address or IPv6 /64) a bucket of 2×quotas.answer_rate refilled at
// answer_rate per second, so a forged source gets at most that many
// answers reflected at it. A legitimate client needs one such answer per
// allocation. Memory is bounded by maxAnswerSources; past it, sources
// whose bucket is full again are forgotten, and if none is, new sources
// share one overflow bucket.
type answerBudget struct {
	mu        sync.Mutex
	src       map[netip.Addr]*tokenbucket.Bucket
	overflow  tokenbucket.Bucket
	lastSweep time.Time
}

const (
	maxAnswerSources = 1 << 16
	// overflowRate is what all sources beyond maxAnswerSources share.
	overflowRate = 1000
)

func (a *answerBudget) allow(ip netip.Addr, now time.Time, rate int) bool {
	if rate <= 0 {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.src[ip]
	if b == nil {
		if a.src == nil {
			a.src = map[netip.Addr]*tokenbucket.Bucket{}
		}
		if len(a.src) >= maxAnswerSources && now.Sub(a.lastSweep) >= 2*time.Second {
			a.sweep(now, rate)
		}
		if len(a.src) >= maxAnswerSources {
			return a.overflow.Allow(now, overflowRate, overflowRate)
		}
		b = &tokenbucket.Bucket{}
		a.src[ip] = b
	}
	return b.Allow(now, float64(rate), 2*rate)
}

// sweep forgets sources whose bucket has refilled: they are as if new.
// It runs only when the map is full, at most once per refill time (2 s),
// so its cost is spread over many requests.
func (a *answerBudget) sweep(now time.Time, rate int) {
	a.lastSweep = now
	for ip, b := range a.src {
		if b.Full(now, float64(rate), 2*rate) {
			delete(a.src, ip)
		}
	}
}
