package signal

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"icebox/internal/ipclass"
	"icebox/internal/persource"
)

// serveConnect upgrades to a WebSocket and hands it to a reader goroutine
// of its own, or refuses it (refuseNow). Either way the handler returns at
// once, so that net/http's per-request state is freed rather than held for
// the life of the connection.
func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request) {
	set := s.settings()
	q := r.URL.Query()
	room := q.Get("controllerId")
	if room == "" {
		room = q.Get("room")
	}
	if len(room) > maxControllerID {
		// Cutting it short could pair strangers whose names share a prefix.
		http.Error(w, "controllerId too long", http.StatusBadRequest)
		return
	}
	peer := set.clientKey(r)
	refusal := errCode(0)
	if !s.originAllowed(set, r) {
		refusal = errOrigin
	} else if !s.admit(set, peer) {
		refusal = errBusy
	}
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		if refusal == 0 {
			s.peers.Release(peer.Addr())
		}
		return // Upgrade has answered with an HTTP error
	}
	if refusal != 0 {
		s.cm.refusedUpgrade.Inc()
		s.refuseNow(set, ws, refusal)
		return
	}
	c := &conn{
		s:          s,
		ws:         ws,
		id:         randomID(),
		peer:       peer,
		queryRoom:  room,
		queryToken: q.Get("token"),
	}
	c.writeFn = c.write
	s.mu.Lock()
	closing := s.closing
	if !closing {
		s.conns[c] = struct{}{}
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if closing { // Shutdown began during the upgrade
		s.peers.Release(peer.Addr())
		s.cm.refusedUpgrade.Inc()
		s.refuseNow(set, ws, errBusy)
		return
	}
	s.cm.active.Inc()
	s.log.Debug("signal: connected", "conn", c.id, "remote", r.RemoteAddr)
	go c.run()
}

// admit counts a connection against max_conns and max_conns_per_ip, and
// against the fair share (persource.FairShareFull).
func (s *Server) admit(set *settings, peer netip.Prefix) bool {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	return !closing && s.peers.Take(peer.Addr(), persource.Limits{Total: set.MaxConns, PerSource: set.MaxConnsPerIP, FairShare: true}) == persource.Admitted
}

// httpAdmission bounds the TCP connections on signaling's port that are
// not (yet) WebSockets: TLS sniffing and handshakes, requests, header
// trickles, idle keep-alives. Each holds a goroutine and buffers until a
// timeout, and nothing else bounded them, so one address could open tens
// of thousands. They are counted apart from WebSockets: max_conns in
// total, max_conns_per_ip plus browserConns per source, and the fair
// share.
type httpAdmission struct {
	held     persource.Counter
	mu       sync.Mutex
	admitted map[net.Conn]netip.Addr // for the release, which must match a take
}

// browserConns is what a browser may hold besides its WebSockets: up to
// six HTTP/1.1 connections per host for a page, kept alive, and a spare,
// so that a page's own connections never keep its WebSocket out.
const browserConns = 8

// holdConn counts c, or closes it and counts the refusal when its source
// is over the limits.
func (s *Server) holdConn(c net.Conn) bool {
	set := s.settings()
	src := ipclass.PeerAddrPort(c.RemoteAddr()).Addr()
	if s.httpConns.held.Take(src, set.connLimits(src)) != persource.Admitted {
		s.cm.refusedConnect.Inc()
		c.Close()
		return false
	}
	a := &s.httpConns
	a.mu.Lock()
	if a.admitted == nil {
		a.admitted = make(map[net.Conn]netip.Addr)
	}
	a.admitted[c] = src
	a.mu.Unlock()
	return true
}

// connLimits bounds what src may hold of the connections that are not
// admitted WebSockets: those not yet upgraded, and refused ones waiting
// for the client's close frame.
func (set *settings) connLimits(src netip.Addr) persource.Limits {
	limits := persource.Limits{Total: set.MaxConns, PerSource: set.MaxConnsPerIP + browserConns, FairShare: true}
	if set.trusted(src) { // a proxy's connections carry many clients
		limits.PerSource, limits.FairShare = set.MaxConns, false
	}
	return limits
}

// releaseConn gives back c's place, if holdConn gave it one.
func (s *Server) releaseConn(c net.Conn) {
	a := &s.httpConns
	a.mu.Lock()
	src, ok := a.admitted[c]
	delete(a.admitted, c)
	a.mu.Unlock()
	if ok {
		a.held.Release(src)
	}
}

// httpConnState is net/http's ConnState hook: a new connection over the
// limits is closed before its first read; one that becomes a WebSocket
// (hijacked) or closes gives its place back.
func (s *Server) httpConnState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		s.holdConn(c)
	case http.StateHijacked, http.StateClosed:
		s.releaseConn(c)
	}
}

// forget is the last step of a connection.
func (s *Server) forget(c *conn, why disconnectReason) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.peers.Release(c.peer.Addr())
	s.cm.active.Dec()
	s.cm.disconnects[why].Inc()
	s.wg.Done()
}

// refuseNow tells a connection that was never admitted why, and closes it.
// It returns once the WsError and the close frame are written, which a
// socket that has just been accepted takes in its send buffer at once.
// Waiting for the client's close frame, up to closeGrace, is left to a
// goroutine of its own, so that the handler returns at once here too; the
// socket then holds a place of its source's connections (connLimits),
// which it lost when it was hijacked, so that one address cannot keep
// hundreds of refused sockets and goroutines waiting. When its source has
// none free, the socket is closed right after the close frame.
func (s *Server) refuseNow(set *settings, ws *websocket.Conn, code errCode) {
	s.em.inc(code)
	src := ipclass.PeerAddrPort(ws.NetConn().RemoteAddr()).Addr()
	wait := s.httpConns.held.Take(src, set.connLimits(src)) == persource.Admitted
	if wait {
		s.cm.refusedWaiting.Inc()
	}
	deadline := time.Now().Add(s.closeGrace)
	ws.SetWriteDeadline(deadline)
	err := ws.WriteMessage(websocket.TextMessage, s.errFrames.get(code))
	if err == nil {
		s.cm.framesOut[kindError].Inc()
		err = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code.info().close, code.info().name), deadline)
	}
	if err != nil || !wait {
		ws.Close()
		if wait {
			s.cm.refusedWaiting.Dec()
			s.httpConns.held.Release(src)
		}
		return
	}
	ws.SetReadDeadline(deadline)
	go s.awaitClose(ws, src)
}

// awaitClose reads until the client's close frame or the read deadline,
// then closes ws, so that closing the socket does not reset the
// connection under the frames just sent, and gives back src's place.
func (s *Server) awaitClose(ws *websocket.Conn, src netip.Addr) {
	for {
		if _, _, err := ws.NextReader(); err != nil {
			break
		}
	}
	ws.Close()
	s.cm.refusedWaiting.Dec()
	s.httpConns.held.Release(src)
}

// originAllowed: native apps send no Origin; browsers must be listed, or
// come from this host when the list is empty.
func (s *Server) originAllowed(set *settings, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || set.anyOrigin {
		return true
	}
	n, err := normOrigin(origin)
	if err != nil {
		return false
	}
	if len(set.origins) == 0 {
		_, host, _ := strings.Cut(n, "://")
		return strings.EqualFold(host, r.Host)
	}
	return set.origins[n]
}

// clientKey is what the per-address limits count r by: its peer's IPv4
// address or IPv6 /64 (which one subscriber usually has whole), or, when
// the peer is a trusted proxy, the same of the client its
// X-Forwarded-For names: walking from the right, the first address that is
// not a trusted proxy. Each proxy appends the address it got the request
// from, so only the entries the trusted proxies wrote are believed; a
// malformed one ends the walk at the proxy that wrote it.
func (set *settings) clientKey(r *http.Request) netip.Prefix {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Prefix{}
	}
	client := ap.Addr().Unmap()
	if set.trusted(client) {
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			hop, ok := forwardedAddr(hops[i])
			if !ok {
				break
			}
			if client = hop.Unmap(); !set.trusted(client) {
				break
			}
		}
	}
	return ipclass.SourcePrefix(client)
}

// forwardedAddr reads one X-Forwarded-For entry: an address, which some
// proxies write with a port ("203.0.113.9:4711", "[2001:db8::9]:4711") or
// an IPv6 one in brackets.
func forwardedAddr(entry string) (netip.Addr, bool) {
	entry = strings.TrimSpace(entry)
	if a, err := netip.ParseAddr(entry); err == nil {
		return a, true
	}
	if ap, err := netip.ParseAddrPort(entry); err == nil {
		return ap.Addr(), true
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(entry, "["), "]"))
	return a, err == nil
}

// trusted reports whether a is one of trusted_proxies.
func (set *settings) trusted(a netip.Addr) bool {
	for _, p := range set.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
