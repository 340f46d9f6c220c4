package signal

import (
	"maps"
	"slices"
	"sync"
	"time"

	"icebox/internal/promset"
)

// A room is one pairing: the connections that named the same controllerId.
// Frames go only to the other members of the sender's room.
//
// What a member sends while it is alone is kept, within limits, and handed
// to the next member to join: the app sends its offer as soon as it has its
// ICE servers, often before the device it calls is connected. Only a call
// setup is kept (docs/protocol.md, "Kept offer"): the sender's latest offer
// and its candidates, for keptTTL at most. Since kept frames go to the
// next member and leave with their sender, the backlog only ever holds
// frames of the room's one member.
type room struct {
	name string // controllerId; "" is the open room
	open bool   // open_room's shared room: open_room_capacity members, controllerIds not checked

	mu           sync.Mutex
	members      []*conn
	backlog      []pending
	backlogBytes int

	// remote are the members on other nodes that the members here were
	// told of in WsPresence, with their opt-in; changed only with mu held,
	// together with the WsPresence frames that tell of it. nil without a
	// cluster and in the open room.
	remote map[string]bool
}

// pending is a backlogged frame, in a copy of its own.
type pending struct {
	from *conn
	msg  []byte
	k    kind
	at   time.Time // when it was kept
}

// Bounds on a room's backlog. A call setup is one SDP plus a few dozen
// candidates; anything beyond is dropped and counted. The backlog also
// stays within half the newcomer's send queue, so that delivering it
// cannot make the newcomer look like a slow reader: it holds the lesser
// of these and half of send_queue / send_queue_bytes (backlogLimits),
// which Config.Validate checks against max_frame_size.
const (
	maxBacklog      = 64
	maxBacklogBytes = 256 << 10
	// keptTTL is how long an offer waits for someone to answer it. The
	// app waits that long in front of a device that is off; past it, the
	// person has given up, and the TURN credentials in the offer's
	// candidates may be near their end.
	keptTTL = 5 * time.Minute
)

func backlogLimits(set *settings) (frames, bytes int) {
	return min(maxBacklog, set.SendQueue/2), min(maxBacklogBytes, set.SendQueueBytes/2)
}

// openRoom is the name of the shared room of open_room; controllerIds are
// never empty, so it cannot collide with a pairing.
const openRoom = ""

// hub holds the rooms by name.
type hub struct {
	mu    sync.Mutex
	rooms map[string]*room

	now     func() time.Time // the clock of keptTTL
	cluster Cluster          // nil: pairings live in this process only

	hubMetrics
}

func newHub(set *promset.Set, now func() time.Time) *hub {
	if now == nil {
		now = time.Now
	}
	return &hub{rooms: make(map[string]*room), now: now, hubMetrics: newHubMetrics(set)}
}

// join adds c to the room called name. greeting, when not nil, is queued
// to c before anything else can be, followed, for a client that opted in,
// by the WsPresence list of the others, then by the room's backlog. The
// others that opted in learn that c joined. elsewhere members of the
// pairing on other nodes count toward capacity (unknownElsewhere: c joins
// only a pairing that has members here and none known elsewhere). With
// the room full, c is not added and join returns errRoomFull.
func (h *hub) join(c *conn, name string, capacity int, greeting []byte, elsewhere int) (*room, errCode) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[name]
	if elsewhere == unknownElsewhere && (r == nil || h.cluster.Members(name) > 0) {
		return nil, errClusterUnavailable
	}
	elsewhere = max(elsewhere, 0)
	members := 0
	if r != nil {
		members = len(r.members) // changed only under h.mu too
	}
	if members+elsewhere >= capacity {
		return nil, errRoomFull // before making a room: a refusal leaves none behind
	}
	if r == nil {
		r = &room{name: name, open: name == openRoom}
		if h.cluster != nil && !r.open {
			r.remote = make(map[string]bool)
			h.cluster.EachMember(name, func(id string, presence bool) { r.remote[id] = presence })
		}
		h.rooms[name] = r
		h.active.Inc()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if greeting != nil {
		c.send(greeting, kindIceServers)
	}
	if !r.open {
		if c.presence {
			sendPresence(presenceHere, r.members, r.remote, c)
		}
		announce(presenceJoined, c, r.members)
	}
	r.members = append(r.members, c)
	h.expireLocked(r)
	for _, p := range r.backlog {
		c.send(p.msg, p.k)
	}
	h.dropKeptLocked(r, func(pending) bool { return true })
	return r, 0
}

// leave removes c from r, with the frames it left in the backlog: a
// newcomer must not answer an offer from a peer that is gone. The other
// nodes are told after the hub's locks are let go: telling them publishes
// on NATS, which on a congested link waits on this goroutine, and under
// h.mu that would hold up every join and leave on this node. Nothing
// here depends on when they hear of it: c's id is its own, and it has
// stopped sending.
func (h *hub) leave(c *conn, r *room) {
	h.mu.Lock()
	r.mu.Lock()
	r.members = slices.DeleteFunc(r.members, func(m *conn) bool { return m == c })
	h.dropKeptLocked(r, func(p pending) bool { return p.from == c })
	if !r.open {
		announce(presenceLeft, c, r.members)
	}
	if len(r.members) == 0 {
		delete(h.rooms, r.name)
		h.active.Dec()
	}
	r.mu.Unlock()
	h.mu.Unlock()
	if h.cluster != nil {
		h.cluster.Leave(r.name, c.id)
	}
}

// forward queues msg, sent by from, to every other member of r, or keeps a
// copy for the next member when from is alone. Each queue takes a copy; the
// caller keeps msg.
//
// The cluster's Forward stays under r.mu: whether from is alone on every
// node, and so whether msg is kept, must be decided in one step with
// RemoteJoined, which under r.mu adds a member from another node and
// sends it what was kept. Outside r.mu, a frame could be kept after that
// (lost to the member that joined) or reach it before the offer kept
// ahead of it.
func (h *hub) forward(set *settings, r *room, from *conn, msg []byte, k kind) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sent := false
	for _, m := range r.members {
		if m != from {
			m.send(msg, k)
			sent = true
		}
	}
	if h.cluster != nil && h.cluster.Forward(r.name, from.id, byte(k), msg) {
		sent = true
	}
	if !sent {
		h.keepLocked(set, r, from, msg, k)
	}
}

// keepLocked keeps a copy of msg, which from sent while alone in r, for the next
// member: offers, and candidates unless from's last SDP was an answer (then
// they, like the answer, were meant for a peer that has left). A new offer
// replaces from's kept offer and everything kept with it.
func (h *hub) keepLocked(set *settings, r *room, from *conn, msg []byte, k kind) {
	if k == kindAnswer || k == kindCandidates && from.lastDesc == kindAnswer {
		h.backlogDropped.Inc()
		return
	}
	h.expireLocked(r)
	if k == kindOffer && slices.ContainsFunc(r.backlog, func(p pending) bool { return p.from == from && p.k == kindOffer }) {
		h.dropKeptLocked(r, func(p pending) bool { return p.from == from })
	}
	frames, bytes := backlogLimits(set)
	if len(r.backlog) >= frames || r.backlogBytes+len(msg) > bytes {
		h.backlogDropped.Inc()
		return
	}
	r.backlog = append(r.backlog, pending{from, append([]byte(nil), msg...), k, h.now()})
	r.backlogBytes += len(msg)
	h.keptBytes.Add(float64(len(msg)))
}

// expireLocked drops what was kept longer than keptTTL, and all a sender
// kept with an offer that expired.
func (h *hub) expireLocked(r *room) {
	now := h.now()
	var stale []*conn
	for _, p := range r.backlog {
		if now.Sub(p.at) >= keptTTL && !slices.Contains(stale, p.from) {
			stale = append(stale, p.from)
		}
	}
	if stale != nil {
		h.dropKeptLocked(r, func(p pending) bool { return slices.Contains(stale, p.from) })
	}
}

// dropKeptLocked removes the backlog entries that drop selects.
func (h *hub) dropKeptLocked(r *room, drop func(pending) bool) {
	r.backlog = slices.DeleteFunc(r.backlog, func(p pending) bool {
		if !drop(p) {
			return false
		}
		r.backlogBytes -= len(p.msg)
		h.keptBytes.Sub(float64(len(p.msg)))
		return true
	})
}

// Presence events, the "event" of a WsPresence frame.
const (
	presenceHere   = "here"   // to a newcomer: who was in the pairing before it
	presenceJoined = "joined" // to the others: a member joined
	presenceLeft   = "left"   // to the others: a member left
)

// presenceData is the data of WsPresence (docs/protocol.md).
type presenceData struct {
	Event string         `json:"event"`
	Peers []presencePeer `json:"peers"`
}

type presencePeer struct {
	ID       string `json:"id"`       // the connection's random id
	Presence bool   `json:"presence"` // it opted in too: a page, not the app
}

// sendPresence queues a WsPresence frame listing peers (but not to),
// then the members on other nodes remote, to to.
func sendPresence(event string, peers []*conn, remote map[string]bool, to *conn) {
	d := presenceData{Event: event, Peers: make([]presencePeer, 0, len(peers)+len(remote))}
	for _, p := range peers {
		if p != to {
			d.Peers = append(d.Peers, presencePeer{p.id, p.presence})
		}
	}
	for _, id := range slices.Sorted(maps.Keys(remote)) {
		d.Peers = append(d.Peers, presencePeer{id, remote[id]})
	}
	to.send(mustFrame(kindPresence, d), kindPresence)
}

// announce tells the members that opted in that c joined or left.
func announce(event string, c *conn, members []*conn) {
	var msg []byte
	for _, m := range members {
		if m == c || !m.presence {
			continue
		}
		if msg == nil {
			msg = mustFrame(kindPresence, presenceData{event, []presencePeer{{c.id, c.presence}}})
		}
		m.send(msg, kindPresence)
	}
}
