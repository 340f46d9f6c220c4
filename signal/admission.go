package signal

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"sync"
	"time"
	"unicode"

	"icebox/internal/promset"
	"icebox/internal/tokenbucket"
)

// Admission at WsInit: whether a connection gets TURN credentials at all,
// and whom they name. Nothing that costs the server (a TURN credential, a
// place in a pairing) is handed out before this has passed.

// admitInit checks c's join token against the pairing named at WsInit
// (URL or WsInit data), or the open room, before any credential is minted,
// then spends one credential from its source's mint budget, and picks the
// TURN user its credentials carry. With require_token, the pairing must be
// named by then: a token is an HMAC over its pairing, and one that cannot
// be checked gets nothing. It returns the refusal, or 0.
func (c *conn) admitInit(set *settings, name string, now time.Time) errCode {
	known := name != "" || set.OpenRoom // name "" is then the open room
	switch {
	case c.token == "" && set.RequireToken:
		return errNotAuthorised
	case c.token != "" && known:
		if !c.tokenValid(name, now) {
			return errNotAuthorised
		}
	case c.token != "" && set.RequireToken:
		c.s.log.Debug("signal: token refused", "conn", c.id, "err", "no pairing named at WsInit to check it against")
		return errNotAuthorised
	case c.token != "":
		// Not required and the pairing comes later: checked at join.
		if checkTokenForm(c.token, now) != nil {
			return errNotAuthorised
		}
	}
	if ok, _ := c.s.mints.take(set, c.peer, mintViaWebSocket); !ok {
		return errMintLimited
	}
	c.turnUser = turnUser(name, c)
	return 0
}

// mintBudget is the TURN credentials each source (clientKey) may still
// have minted: a token bucket per source, credentials_per_minute
// sustained, credential_burst at once. Without it one address minted
// 1,837 credentials in 5 s. Refreshes of a connection's credentials are
// not charged: the server paces them (at most one per connection per half
// the credentials' life) and max_conns_per_ip bounds the connections.
type mintBudget struct {
	now     func() time.Time
	refused mintMetrics

	mu      sync.Mutex
	buckets map[netip.Prefix]tokenbucket.Bucket
	sweepAt int // len(buckets) at which full buckets are dropped
}

type mintVia int

const (
	mintViaWebSocket mintVia = iota // WsInit
	mintViaHTTP                     // GET /ice-servers
	numMintVias
)

// minSweep is the number of sources below which buckets are never swept.
const minSweep = 1024

func newMintBudget(set *promset.Set, now func() time.Time) *mintBudget {
	if now == nil {
		now = time.Now
	}
	return &mintBudget{now: now, refused: newMintMetrics(set), buckets: make(map[netip.Prefix]tokenbucket.Bucket), sweepAt: minSweep}
}

// take spends one credential from peer's budget. When none is left it
// says how long until one is.
func (m *mintBudget) take(set *settings, peer netip.Prefix, via mintVia) (bool, time.Duration) {
	now := m.now()
	rate := set.CredentialsPerMinute / 60
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.buckets) >= m.sweepAt {
		m.sweep(now, rate, set.CredentialBurst)
	}
	b := m.buckets[peer]
	ok := b.Allow(now, rate, set.CredentialBurst)
	m.buckets[peer] = b
	if ok {
		return true, 0
	}
	m.refused[via].Inc()
	return false, b.Wait(rate, 1)
}

// sweep forgets the sources whose budget has refilled, which a fresh
// bucket stands for, so that many sources minting once cost no memory
// for long; sweeping again only after the map doubles keeps it O(1) per
// take.
func (m *mintBudget) sweep(now time.Time, rate float64, burst int) {
	for p, b := range m.buckets {
		if b.Full(now, rate, burst) {
			delete(m.buckets, p)
		}
	}
	m.sweepAt = max(2*len(m.buckets), minSweep)
}

// turnUser is the user TURN's per-user quota counts for c: its pairing,
// so one call's allocations are counted together however many times its
// members reconnect; or, for the open room and connections that name no
// pairing at WsInit, its source address (IPv4, or IPv6 /64).
func turnUser(pairing string, c *conn) string {
	if pairing == "" {
		return "addr-" + c.peer.Addr().String()
	}
	return namedTURNUser("pair-", pairing)
}

// namedTURNUser is the TURN user for a name a client or backend chose
// (a pairing, /ice-servers' ?user=), after prefix, which says which kind
// of name it is: the name itself when short and printable, else a hash
// of it, since a long or odd name would bloat or break every TURN
// request.
func namedTURNUser(prefix, name string) string {
	if len(name) <= maxTURNUser && printable(name) {
		return prefix + name
	}
	h := sha256.Sum256([]byte(name))
	return prefix + hex.EncodeToString(h[:12])
}

// maxTURNUser bounds a name used as is in a TURN username.
const maxTURNUser = 64

func printable(s string) bool {
	for _, r := range s {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// fanoutAllowed spends n bytes times the open room's other members, on
// this node and the others, from c's fan-out budget (open_room_fanout per
// second, bursts of 4 s worth), so that one member's burst cannot become
// a thousandfold flood out.
func (c *conn) fanoutAllowed(set *settings, n int) bool {
	c.room.mu.Lock()
	others := len(c.room.members) - 1
	c.room.mu.Unlock()
	if cl := c.s.hub.cluster; cl != nil {
		others += cl.Members(c.room.name) // each gets it too, from its node
	}
	cost := n * max(others, 0)
	burst := 4 * set.OpenRoomFanout
	return cost <= burst && c.fanout.AllowN(time.Now(), float64(set.OpenRoomFanout), burst, cost)
}
