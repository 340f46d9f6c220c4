package signal

import "slices"

// Cluster spans pairings over several icebox nodes (internal/cluster
// implements it over NATS). Without one, a Server's pairings live in
// this process only, exactly as before.
type Cluster interface {
	// Claim holds a place for member in room while it asks the other
	// nodes how many members and pending joins room has there. An error
	// means they could not be asked.
	Claim(room, member string) (elsewhere int, err error)
	// Confirm ends a claim: admitted members are announced to the other
	// nodes with their WsPresence opt-in, refused ones give their place
	// back.
	Confirm(room, member string, presence, admitted bool)
	// Leave takes member out of room on the other nodes.
	Leave(room, member string)
	// Members is how many members room has on other nodes now.
	Members(room string) int
	// EachMember calls f for each member room has on other nodes now,
	// with its WsPresence opt-in.
	EachMember(room string, f func(member string, presence bool))
	// Forward sends a frame member sent to room to room's members on
	// other nodes, byte for byte, and reports whether room has any
	// (then the frame was theirs, even if it could not be sent).
	Forward(room, member string, kind byte, frame []byte) bool
	// Beyond lists room's members here that come after its first
	// capacity members on all nodes, in join order: after a partition
	// healed, they are one too many.
	Beyond(room string, capacity int) []string
}

// joinRoom admits c to the pairing name, counting the members the pairing
// has on other nodes toward capacity. When the other nodes cannot be
// asked, c may still join a pairing whose members are all here.
func (s *Server) joinRoom(c *conn, name string, capacity int, greeting []byte) (*room, errCode) {
	if s.hub.cluster == nil {
		return s.hub.join(c, name, capacity, greeting, 0)
	}
	elsewhere, err := s.hub.cluster.Claim(name, c.id)
	if err != nil {
		s.log.Warn("signal: join needs the other nodes, which cannot be reached", "conn", c.id, "err", err)
		elsewhere = unknownElsewhere
	}
	r, code := s.hub.join(c, name, capacity, greeting, elsewhere)
	if err == nil || code == 0 {
		// Admitted without asking the others, it is recorded all the
		// same: the other nodes learn of it when NATS is back.
		s.hub.cluster.Confirm(name, c.id, c.presence, code == 0)
	}
	return r, code
}

// unknownElsewhere, as join's elsewhere, says the other nodes could not
// be asked: only a pairing that has members here, and none known
// elsewhere, takes c.
const unknownElsewhere = -1

// RemoteFrame delivers a frame a member on another node sent to room, to
// room's members here. For internal/cluster.
func (s *Server) RemoteFrame(name string, k byte, frame []byte) {
	if kind(k) >= numKinds {
		return
	}
	r := s.hub.lockRoom(name)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	for _, m := range r.members {
		m.send(frame, kind(k))
	}
}

// RemoteJoined applies a member's join on another node to room, tells the
// members here that opted in, then hands it what room's lone member here
// sent meanwhile, ahead of anything forwarded later. For internal/cluster.
func (s *Server) RemoteJoined(name, member string, presence bool, apply func()) {
	h := s.hub
	h.mu.Lock()
	r := h.rooms[name]
	if r == nil {
		// Applied under h.mu: a join here that makes the room lists
		// the member in its WsPresence "here", or it is not applied yet.
		apply()
		h.mu.Unlock()
		return
	}
	r.mu.Lock()
	h.mu.Unlock()
	defer r.mu.Unlock()
	apply()
	if _, known := r.remote[member]; !known && !r.open {
		r.remote[member] = presence
		announce(presenceJoined, &conn{id: member, presence: presence}, r.members)
	}
	for _, p := range r.backlog {
		h.cluster.Forward(name, p.from.id, byte(p.k), p.msg)
	}
	h.dropKeptLocked(r, func(pending) bool { return true })
	s.closeBeyondLocked(r)
}

// closeBeyondLocked closes, with 4005 as a third joiner gets, the members
// of r here that joined after the pairing was full on all nodes: after a
// partition healed, the pairing grew on both sides. Every node closes its
// own, the later joiners, so the earliest room_capacity members stay.
func (s *Server) closeBeyondLocked(r *room) {
	beyond := s.hub.cluster.Beyond(r.name, s.settings().capacity(r.name))
	for _, m := range r.members {
		if !slices.Contains(beyond, m.id) || m.closing() {
			continue
		}
		s.log.Warn("signal: pairing over capacity after the cluster's nodes met again; closing its later member", "conn", m.id)
		s.em.inc(errRoomFull)
		m.send(s.errFrames.get(errRoomFull), kindError)
		m.setWhy(byRefusal)
		m.closeWith(errRoomFull.info().close, errRoomFull.info().name)
	}
}

// RemoteLeft tells the members of room here that opted in that a member
// on another node left, or that its node is gone. For internal/cluster.
func (s *Server) RemoteLeft(name, member string, presence bool) {
	r := s.hub.lockRoom(name)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	if _, known := r.remote[member]; !known {
		return
	}
	back := false // its node was forgotten, then heard again, meanwhile
	s.hub.cluster.EachMember(name, func(id string, _ bool) { back = back || id == member })
	if back {
		return
	}
	delete(r.remote, member)
	announce(presenceLeft, &conn{id: member, presence: presence}, r.members)
}

// lockRoom returns the room called name, locked, or nil if there is none.
func (h *hub) lockRoom(name string) *room {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[name]
	if r != nil {
		r.mu.Lock()
	}
	return r
}
