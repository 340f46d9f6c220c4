package turnsrv

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"icebox/internal/stunwire"
	"icebox/internal/udpio"
)

// icebox relays ChannelData and Send/Data indications itself; pion/turn
// keeps the control plane (Allocate, Refresh, CreatePermission,
// ChannelBind, authentication, lifetimes). pion's per-packet path costs several heap
// allocations, locks and a payload copy per datagram; this one costs none.
//
// The data plane mirrors what pion granted. Allocations come from pion's
// events; channel bindings and permissions from the client's requests
// matched with pion's success answers, which refresh them exactly when
// pion does, so both expire together: channels after 10 minutes,
// permissions after 5 (RFC 8656 §12 and §9). pion's delete events remove
// them early. A datagram the data plane knows nothing about goes to pion
// unchanged, so a gap in the mirror costs speed, never correctness; a
// datagram on a channel the mirror saw expire, or towards a peer the
// current policy refuses, is dropped.

// Lifetimes of RFC 8656 §12 (channels) and §9 (permissions).
const (
	channelLifetime    = 10 * time.Minute
	permissionLifetime = 5 * time.Minute
)

// TURN message types the data plane reads and writes.
const (
	typeSendIndication = 0x0016 // method Send (0x006), class indication
	typeDataIndication = 0x0017 // method Data (0x007), class indication
)

// maxPeersPerRequest is as many peers as the data plane learns from one
// CreatePermission; inspect refuses a request naming more.
const maxPeersPerRequest = 16

// maxPending bounds requests awaiting pion's answer. Any answer, success
// or error, removes its request, so only requests in flight are held;
// ones pion never answered are forgotten after pendingAge once it fills.
const (
	maxPending = 16384
	pendingAge = 5 * time.Second
)

// dropReason labels icebox_turn_fast_path_drops_total.
const (
	dropExpired = "expired" // channel or permission past its lifetime
	dropRefused = "refused" // the peer policy refuses the peer (after a reload)
	dropWrite   = "write_error"
)

var dropReasons = []string{dropExpired, dropRefused, dropWrite}

type dataPlane struct {
	s     *Server
	start time.Time
	// skew moves the data plane's clock forward: tests expire channels
	// and permissions without waiting.
	skew atomic.Int64

	mu     sync.RWMutex
	allocs map[connID]*dpAlloc // by client transport; nil value: ambiguous, leave to pion
	count  map[connID]int      // allocations per client transport (normally 1)
	relays map[int]*relayConn  // live relay sockets by port

	pendMu  sync.Mutex
	pending map[pendingKey]pendingRequest
}

// pendingKey names a request awaiting pion's answer: its transaction ID
// with the transport it came on. Clients pick transaction IDs, so two
// transports may send the same one at once; the answer goes back on the
// request's transport, and only that request's entry may learn from it.
type pendingKey struct {
	client connID
	txid   [12]byte
}

func newDataPlane(s *Server) *dataPlane {
	return &dataPlane{
		s:       s,
		start:   time.Now(),
		allocs:  map[connID]*dpAlloc{},
		count:   map[connID]int{},
		relays:  map[int]*relayConn{},
		pending: map[pendingKey]pendingRequest{},
	}
}

// now is monotonic nanoseconds since start.
func (d *dataPlane) now() int64 { return int64(time.Since(d.start)) + d.skew.Load() }

// dpAlloc is one allocation as the data plane sees it.
type dpAlloc struct {
	client connID
	relay  *relayConn
	// out reaches the client: set from the socket or connection pion
	// answered the client's ChannelBind on.
	out atomic.Pointer[clientOut]

	mu       sync.Mutex                   // serialises writers of channels and perms
	channels atomic.Pointer[[]*dpChannel] // copy on write; readers take no lock
	perms    atomic.Pointer[[]*dpPerm]
}

// clientOut is how a peer's datagram reaches the client: over the UDP
// socket the client uses, or its stream connection.
type clientOut struct {
	udp    net.PacketConn
	to     *net.UDPAddr
	toAP   netip.AddrPort
	stream net.Conn
}

type dpChannel struct {
	number  uint16
	peer    netip.AddrPort
	expires atomic.Int64 // dataPlane.now() units
	verdict atomic.Pointer[policyVerdict]
}

type dpPerm struct {
	ip      netip.Addr
	expires atomic.Int64
	verdict atomic.Pointer[policyVerdict]
}

// policyVerdict caches the peer policy's answer for one channel or
// permission until a reload swaps the policy.
type policyVerdict struct {
	lv     *live
	reason string
	// relayPortsOnly: the peer's address is the relay address, where only
	// live relay ports may be reached (peerPolicy.relayPortsOnly); made
	// once with the verdict, the port is checked per packet.
	relayPortsOnly bool
}

type pendingRequest struct {
	method  uint16
	channel uint16
	peers   []netip.AddrPort
	at      int64
}

// allocationCreated mirrors a new allocation; pion calls it before the
// client hears of it.
func (d *dataPlane) allocationCreated(client net.Addr, relay net.Addr) {
	ua, ok := relay.(*net.UDPAddr)
	if !ok {
		return
	}
	id := connIDOf(client)
	d.mu.Lock()
	defer d.mu.Unlock()
	rc := d.relays[ua.Port]
	if rc == nil || rc.udp == nil {
		return
	}
	a := &dpAlloc{client: id, relay: rc}
	a.channels.Store(&[]*dpChannel{})
	a.perms.Store(&[]*dpPerm{})
	d.count[id]++
	if d.count[id] == 1 {
		d.allocs[id] = a
	} else {
		// The same client address towards two of our addresses: pion
		// tells them apart by the server address, which the data plane
		// does not read. Leave both to pion.
		d.allocs[id] = nil
	}
	rc.alloc.Store(a)
}

// allocationDeleted forgets an allocation: nothing more is relayed for it.
func (d *dataPlane) allocationDeleted(client net.Addr) {
	id := connIDOf(client)
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.allocs[id]
	if d.count[id]--; d.count[id] <= 0 {
		delete(d.count, id)
		delete(d.allocs, id)
	}
	if a != nil && a.relay != nil {
		a.relay.alloc.CompareAndSwap(a, nil)
	}
}

func (d *dataPlane) relayOpened(port int, c *relayConn) {
	d.mu.Lock()
	d.relays[port] = c
	d.mu.Unlock()
}

func (d *dataPlane) relayClosed(port int, c *relayConn) {
	d.mu.Lock()
	if d.relays[port] == c {
		delete(d.relays, port)
	}
	d.mu.Unlock()
	c.alloc.Store(nil)
}

func (d *dataPlane) lookup(id connID) *dpAlloc {
	d.mu.RLock()
	a := d.allocs[id]
	d.mu.RUnlock()
	return a
}

// noteRequest remembers a ChannelBind or CreatePermission that pion is
// about to handle, to apply when pion answers it with success. A Refresh
// needs nothing: pion deletes an allocation (OnAllocationDeleted) before
// it answers a Refresh with lifetime 0.
func (d *dataPlane) noteRequest(b []byte, from connID) {
	if len(b) < stunwire.HeaderSize || b[0]&0xC0 != 0 || binary.BigEndian.Uint32(b[4:8]) != stunwire.MagicCookie {
		return
	}
	typ := binary.BigEndian.Uint16(b[0:2])
	if stunwire.Class(typ) != stunwire.ClassRequest {
		return // not a request
	}
	method := stunwire.Method(typ)
	if method != methodChannelBind && method != methodCreatePermission {
		return
	}
	end := min(stunwire.HeaderSize+int(binary.BigEndian.Uint16(b[2:4])), len(b))
	req := pendingRequest{method: method, at: d.now()}
	signed, sawChannel := false, false
	// A truncated attribute ends the walk before MESSAGE-INTEGRITY, and
	// pion refuses the request: nothing to learn either.
	a := stunwire.AttrsOf(b, end)
	for off, at, n, ok := a.First(); ok; off, at, n, ok = a.After(off, n) {
		if at == stunwire.AttrIntegrity {
			signed = true
			break // what follows is not covered by it
		}
		v := b[off+4 : off+4+n]
		switch {
		case at == stunwire.AttrChannelNumber && !sawChannel:
			// pion binds the first CHANNEL-NUMBER, as channelNumber
			// reads it; inspect refuses one after MESSAGE-INTEGRITY.
			sawChannel = true
			if len(v) == 4 {
				req.channel = binary.BigEndian.Uint16(v)
			}
		case at == stunwire.AttrXORPeerAddress:
			if ap, ok := xorPeerAddrPort(v, b[4:stunwire.HeaderSize]); ok && len(req.peers) < maxPeersPerRequest {
				req.peers = append(req.peers, ap)
			}
		}
	}
	if !signed {
		return // pion answers 401; nothing to learn
	}
	key := pendingKey{client: from, txid: [12]byte(b[8:stunwire.HeaderSize])}
	d.pendMu.Lock()
	defer d.pendMu.Unlock()
	if len(d.pending) >= maxPending {
		for k, r := range d.pending {
			if req.at-r.at > int64(pendingAge) {
				delete(d.pending, k)
			}
		}
		if len(d.pending) >= maxPending {
			return // pion relays what this request grants
		}
	}
	d.pending[key] = req
}

// xorPeerAddrPort decodes a well-formed IPv4 XOR-PEER-ADDRESS value with
// its port; cookieID is the magic cookie and transaction ID, 16 bytes.
// Relay sockets are IPv4, so the data plane learns and relays only IPv4
// peers: an IPv6 peer (which inspect answers with 443 before pion grants
// it) and pion's lenient short forms are left to pion, unlike inspect's
// use of xorPeer.
func xorPeerAddrPort(v, cookieID []byte) (netip.AddrPort, bool) {
	if len(v) != 8 {
		return netip.AddrPort{}, false
	}
	var buf [16]byte
	ip, ok := xorPeer(v, cookieID, buf[:])
	if !ok || len(ip) != 4 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:4]) ^ stunwire.MagicCookie>>16
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip)), port), true
}

// noteResponse applies a request pion answered with success: to is the
// client transport the answer goes to, out how pion reached it there, and
// how the data plane will.
func (d *dataPlane) noteResponse(b []byte, to connID, out clientOut) {
	if len(b) < stunwire.HeaderSize {
		return
	}
	class := stunwire.Class(binary.BigEndian.Uint16(b[0:2]))
	if class != stunwire.ClassSuccess && class != stunwire.ClassError {
		return // not a response
	}
	key := pendingKey{client: to, txid: [12]byte(b[8:stunwire.HeaderSize])}
	d.pendMu.Lock()
	req, ok := d.pending[key]
	delete(d.pending, key)
	d.pendMu.Unlock()
	if !ok || class != stunwire.ClassSuccess {
		return // unknown, or an error response: nothing granted
	}
	a := d.lookup(to)
	if a == nil {
		return
	}
	now := d.now()
	switch req.method {
	case methodChannelBind:
		if len(req.peers) != 1 {
			return
		}
		a.learnOut(out)
		a.bind(req.channel, req.peers[0], now)
		a.permit(req.peers[0].Addr(), now)
	case methodCreatePermission:
		a.learnOut(out)
		for _, p := range req.peers {
			a.permit(p.Addr(), now)
		}
	}
}

// learnOut keeps the first way pion answered the client on: peers'
// datagrams reach the client the same way.
func (a *dpAlloc) learnOut(out clientOut) {
	if a.out.Load() == nil {
		a.out.Store(&out)
	}
}

func (a *dpAlloc) bind(number uint16, peer netip.AddrPort, now int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := *a.channels.Load()
	for _, ch := range old {
		if ch.number == number && ch.peer == peer {
			ch.expires.Store(now + int64(channelLifetime))
			return
		}
	}
	ch := &dpChannel{number: number, peer: peer}
	ch.expires.Store(now + int64(channelLifetime))
	// pion granted this binding, so an older one for the number or the
	// peer is gone from pion (expired and rebound).
	next := without(old, func(c *dpChannel) bool { return c.number == number || c.peer == peer })
	*next = append(*next, ch)
	a.channels.Store(next)
}

func (a *dpAlloc) unbind(number uint16) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.channels.Store(without(*a.channels.Load(), func(c *dpChannel) bool { return c.number == number }))
}

// without returns a new slice of s's elements but those drop matches:
// readers of the old one are undisturbed.
func without[T any](s []T, drop func(T) bool) *[]T {
	next := make([]T, 0, len(s))
	for _, e := range s {
		if !drop(e) {
			next = append(next, e)
		}
	}
	return &next
}

func (a *dpAlloc) permit(ip netip.Addr, now int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := *a.perms.Load()
	for _, p := range old {
		if p.ip == ip {
			p.expires.Store(now + int64(permissionLifetime))
			return
		}
	}
	p := &dpPerm{ip: ip}
	p.expires.Store(now + int64(permissionLifetime))
	next := append(old[:len(old):len(old)], p)
	a.perms.Store(&next)
}

func (a *dpAlloc) unpermit(ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.perms.Store(without(*a.perms.Load(), func(p *dpPerm) bool { return p.ip == ip }))
}

// newPeers counts the distinct addresses among peers that a holds no
// permission for.
func (a *dpAlloc) newPeers(peers []netip.Addr) int {
	n := 0
	for i, p := range peers {
		if a.byIP(p) == nil && !slices.Contains(peers[:i], p) {
			n++
		}
	}
	return n
}

func (a *dpAlloc) byNumber(n uint16) *dpChannel {
	for _, ch := range *a.channels.Load() {
		if ch.number == n {
			return ch
		}
	}
	return nil
}

func (a *dpAlloc) byPeer(p netip.AddrPort) *dpChannel {
	for _, ch := range *a.channels.Load() {
		if ch.peer == p {
			return ch
		}
	}
	return nil
}

func (a *dpAlloc) byIP(ip netip.Addr) *dpPerm {
	for _, p := range *a.perms.Load() {
		if p.ip == ip {
			return p
		}
	}
	return nil
}

// unexpired reports whether ch and the permission for its peer are unexpired.
func (a *dpAlloc) unexpired(ch *dpChannel, now int64) bool {
	if now >= ch.expires.Load() {
		return false
	}
	p := a.byIP(ch.peer.Addr())
	return p != nil && now < p.expires.Load()
}

// refusal is the current peer policy's verdict on ip, cached in verdict
// and recomputed only after a reload.
func (d *dataPlane) refusal(verdict *atomic.Pointer[policyVerdict], ip netip.Addr) *policyVerdict {
	lv := d.s.live.Load()
	if v := verdict.Load(); v != nil && v.lv == lv {
		return v
	}
	p := lv.policy
	v := &policyVerdict{lv: lv, reason: p.refusal(ip.AsSlice()), relayPortsOnly: p.relayPortsOnly(ip)}
	verdict.Store(v)
	return v
}

// pass checks a datagram on ch at now against lifetimes and policy,
// counting what it drops.
func (d *dataPlane) pass(a *dpAlloc, ch *dpChannel, now int64) bool {
	if !a.unexpired(ch, now) {
		d.s.metrics.fastDrops[dropExpired].Inc()
		return false
	}
	return d.allowed(&ch.verdict, ch.peer)
}

// passPerm is pass for a Send or Data indication: the permission for the
// peer's address must be unexpired.
func (d *dataPlane) passPerm(p *dpPerm, peer netip.AddrPort, now int64) bool {
	if now >= p.expires.Load() {
		d.s.metrics.fastDrops[dropExpired].Inc()
		return false
	}
	return d.allowed(&p.verdict, peer)
}

// allowed applies the current peer policy to peer, counting a refusal.
func (d *dataPlane) allowed(verdict *atomic.Pointer[policyVerdict], peer netip.AddrPort) bool {
	m := d.s.metrics
	v := d.refusal(verdict, peer.Addr())
	if v.reason != "" {
		m.fastDrops[dropRefused].Inc()
		return false
	}
	if v.relayPortsOnly && !d.s.relayPorts.has(int(peer.Port())) {
		m.peerRefusals[refuseRelayPort].Inc()
		return false
	}
	return true
}

// fromClient relays one ChannelData message from a client if the data
// plane knows its channel, and reports whether it did (or dropped it); if
// not, pion gets the message. b is the whole message, padding included.
func (d *dataPlane) fromClient(b []byte, from connID, snd *peerSender) bool {
	a := d.lookup(from)
	if a == nil {
		return false
	}
	ch := a.byNumber(binary.BigEndian.Uint16(b[0:2]))
	size := 4 + int(binary.BigEndian.Uint16(b[2:4]))
	if ch == nil || size > len(b) {
		return false
	}
	if now := d.now(); d.pass(a, ch, now) {
		d.toPeer(a.relay, b[4:size], ch.peer, snd, now)
	}
	return true
}

// toPeer sends payload out of relay to peer, an IPv4 peer (the only
// kind xorPeerAddrPort reads), within the allocation's bandwidth at now:
// queued on snd when the caller batches its sends, else at once (an empty
// datagram too: a batch entry needs a byte to point at; what snd holds
// goes first, so that order is kept).
func (d *dataPlane) toPeer(relay *relayConn, payload []byte, peer netip.AddrPort, snd *peerSender, now int64) {
	m := d.s.metrics
	if !relay.admitToPeer(len(payload), now) {
		return
	}
	if snd != nil && snd.w != nil && relay.raw != nil {
		if len(payload) > 0 {
			snd.queue(relay, payload, peer)
			return
		}
		snd.flush()
	}
	n, err := relay.udp.WriteToUDPAddrPort(payload, peer)
	if err != nil {
		m.fastDrops[dropWrite].Inc()
		return
	}
	m.toPeerBytes.Add(float64(n))
	m.toPeerPackets.Inc()
	m.fastToPeer.Inc()
}

// peerSender batches one reading goroutine's sends to peers: the
// datagrams of one read that go out of the same relay socket in a row
// leave in one sendmmsg.
type peerSender struct {
	m     *metrics
	w     *udpio.Writer // nil where the OS has no sendmmsg
	relay *relayConn    // the socket queued datagrams go out of
	bytes int
}

func newPeerSender(m *metrics) *peerSender {
	// Relay sockets are IPv4 (ipv6 false); Use names the socket per batch.
	return &peerSender{m: m, w: udpio.NewWriter(nil, false, relayBatch)}
}

func (p *peerSender) queue(relay *relayConn, payload []byte, peer netip.AddrPort) {
	if p.relay != relay {
		p.flush()
		p.relay = relay
		p.w.Use(relay.raw)
	}
	p.w.Queue(payload, peer, udpio.Local{})
	p.bytes += len(payload)
	if p.w.Pending() == p.w.Cap() {
		p.flush()
	}
}

// flush sends what is queued and counts it.
func (p *peerSender) flush() {
	n := p.w.Pending()
	if n == 0 {
		return
	}
	failed, failedBytes := p.w.Flush()
	if failed > 0 {
		p.m.fastDrops[dropWrite].Add(float64(failed))
	}
	if sent := n - failed; sent > 0 {
		p.m.toPeerBytes.Add(float64(p.bytes - failedBytes))
		p.m.toPeerPackets.Add(float64(sent))
		p.m.fastToPeer.Add(float64(sent))
	}
	p.bytes = 0
}

// fromSend relays the DATA of a client's Send indication if the data
// plane holds a permission for its peer, and reports whether it did (or
// dropped it); if not, pion gets the message. RFC 8656 §11.4: a Send
// indication carries no MESSAGE-INTEGRITY, so the allocation found by the
// client's transport is all there is to check. Anything pion would read
// differently (a short address, a second DATA, a message cut short) goes
// to pion.
func (d *dataPlane) fromSend(b []byte, from connID, snd *peerSender) bool {
	if len(b) < 2 || binary.BigEndian.Uint16(b[0:2]) != typeSendIndication {
		return false
	}
	a := d.lookup(from)
	if a == nil {
		return false
	}
	peer, data, ok := parseSend(b)
	if !ok {
		return false
	}
	p := a.byIP(peer.Addr())
	if p == nil {
		return false // pion refuses it, or knows what the mirror missed
	}
	if now := d.now(); d.passPerm(p, peer, now) {
		d.toPeer(a.relay, data, peer, snd, now)
	}
	return true
}

// parseSend returns the peer and data of a well-formed Send indication, as
// pion reads them (the first XOR-PEER-ADDRESS and DATA); ok is false for
// anything else, and for peers in pion's lenient short forms.
func parseSend(b []byte) (peer netip.AddrPort, data []byte, ok bool) {
	if len(b) < stunwire.HeaderSize || binary.BigEndian.Uint16(b[0:2]) != typeSendIndication ||
		binary.BigEndian.Uint32(b[4:8]) != stunwire.MagicCookie {
		return peer, nil, false
	}
	end := stunwire.HeaderSize + int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) || end%4 != 0 {
		return peer, nil, false
	}
	havePeer := false
	a := stunwire.AttrsOf(b, end)
	off, at, n, more := a.First()
	for ; more; off, at, n, more = a.After(off, n) {
		v := off + 4
		switch {
		case at == stunwire.AttrXORPeerAddress && !havePeer:
			if peer, ok = xorPeerAddrPort(b[v:v+n], b[4:stunwire.HeaderSize]); !ok {
				return peer, nil, false
			}
			havePeer = true
		case at == stunwire.AttrData && data == nil:
			data = b[v : v+n]
		}
	}
	return peer, data, havePeer && data != nil && !a.Truncated(off)
}

// Size of a Data indication's header and attribute headers before the
// data, as pion's stun.Build writes them: the STUN header, XOR-PEER-ADDRESS
// (IPv4: relay sockets are IPv4, so are their peers), the DATA attribute's
// header. No FINGERPRINT: pion sends none.
const dataIndicationHead4 = stunwire.HeaderSize + 4 + 8 + 4

// fromPeer sends a peer's datagram, at slot[headroom:headroom+n] with room
// for padding after it, to the client: as ChannelData if the data plane
// knows the peer's channel, else as a Data indication if it holds a
// permission for the peer. It reports whether it did (or dropped it).
// Frames for a stream client are queued on rc and written together.
func (d *dataPlane) fromPeer(rc *relayConn, a *dpAlloc, slot []byte, n int, peer netip.AddrPort) bool {
	out := a.out.Load()
	if out == nil {
		return false
	}
	now := d.now()
	var frame []byte
	if ch := a.byPeer(peer); ch != nil {
		if !d.pass(a, ch, now) {
			return true
		}
		if !rc.admitFromPeer(n, now) {
			return true
		}
		frame = slot[headroom-4 : headroom+n]
		binary.BigEndian.PutUint16(frame[0:2], ch.number)
		binary.BigEndian.PutUint16(frame[2:4], uint16(n))
		if out.stream != nil {
			// RFC 8656 §12.5: padded to four bytes over streams.
			frame = slot[headroom-4 : headroom+(n+3)&^3]
			clear(frame[4+n:])
		}
	} else {
		p := a.byIP(peer.Addr())
		if p == nil {
			return false
		}
		if !d.passPerm(p, peer, now) || !rc.admitFromPeer(n, now) {
			return true
		}
		frame = rc.dataIndication(slot, n, peer)
	}
	if out.stream != nil {
		rc.queueStream(out.stream, frame)
		return true
	}
	if rc.queueUDP(out, frame) {
		return true
	}
	if _, err := out.udp.WriteTo(frame, out.to); err != nil {
		d.s.metrics.fastDrops[dropWrite].Inc()
		return true
	}
	d.s.metrics.fastFromPeer.Inc()
	return true
}

// dataIndication writes a Data indication around the IPv4 peer's datagram
// at slot[headroom:headroom+n] (RFC 8656 §11.6) and returns it: the same
// bytes pion's stun.Build would send, with a transaction ID from the
// relay's own generator.
func (c *relayConn) dataIndication(slot []byte, n int, peer netip.AddrPort) []byte {
	const head = dataIndicationHead4
	padded := (n + 3) &^ 3
	clear(slot[headroom+n : headroom+padded])
	m := slot[headroom-head : headroom+padded]
	binary.BigEndian.PutUint16(m[0:2], typeDataIndication)
	binary.BigEndian.PutUint16(m[2:4], uint16(len(m)-stunwire.HeaderSize))
	binary.BigEndian.PutUint32(m[4:8], stunwire.MagicCookie)
	binary.LittleEndian.PutUint64(m[8:16], c.txid.Uint64())
	binary.LittleEndian.PutUint32(m[16:20], uint32(c.txid.Uint64()))
	// XOR-PEER-ADDRESS
	a := m[stunwire.HeaderSize : head-4]
	binary.BigEndian.PutUint16(a[0:2], stunwire.AttrXORPeerAddress)
	binary.BigEndian.PutUint16(a[2:4], uint16(len(a)-4))
	binary.BigEndian.PutUint16(a[4:6], stunwire.FamilyIPv4)
	binary.BigEndian.PutUint16(a[6:8], peer.Port()^stunwire.MagicCookie>>16)
	ip := peer.Addr().As4()
	for i := range ip {
		a[8+i] = ip[i] ^ m[4+i]
	}
	// DATA
	binary.BigEndian.PutUint16(m[head-4:head-2], stunwire.AttrData)
	binary.BigEndian.PutUint16(m[head-2:head], uint16(n))
	return m
}
