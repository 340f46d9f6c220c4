package signal

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// A room is one pairing: the connections that named the same controllerId.
// Frames go only to the other members of the sender's room.
//
// Frames sent while their sender is alone are kept, within limits, and
// handed to the next member to join: the app sends its offer as soon as it
// has its ICE servers, often before the device it calls is connected.
type room struct {
	name string // controllerId; "" is the open room
	open bool   // open_room: no capacity limit, controllerIds not checked

	mu           sync.Mutex
	members      []*conn
	backlog      []pending
	backlogBytes int
}

// pending is a backlogged frame, holding a reference to fb.
type pending struct {
	from *conn
	fb   *frameBuf
	k    kind
}

// Bounds on a room's backlog. A call setup is one SDP plus a few dozen
// candidates; anything beyond is dropped and counted. The backlog also
// stays within half the newcomer's send queue, so that delivering it
// cannot make the newcomer look like a slow reader.
const (
	maxBacklog      = 64
	maxBacklogBytes = 256 << 10
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

	active         prometheus.Gauge   // rooms with at least one member
	backlogDropped prometheus.Counter // frames lost because a lone sender's backlog was full
}

func newHub(reg *registry) *hub {
	return &hub{
		rooms:          make(map[string]*room),
		active:         reg.gauge("rooms", "Pairings with at least one connection."),
		backlogDropped: reg.counter("backlog_dropped_total", "Frames dropped because a lone sender's backlog was full."),
	}
}

// join adds c to the room called name. greeting, when not nil, is queued
// to c before anything else can be, followed by the room's backlog. With
// the room full, c is not added and join returns errRoomFull.
func (h *hub) join(c *conn, name string, capacity int, greeting *frameBuf) (*room, errCode) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[name]
	if r == nil {
		r = &room{name: name, open: name == openRoom}
		h.rooms[name] = r
		h.active.Inc()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.members) >= capacity {
		return nil, errRoomFull
	}
	r.members = append(r.members, c)
	if greeting != nil {
		c.send(greeting, kindIceServers)
	}
	for _, p := range r.backlog {
		c.send(p.fb, p.k)
		p.fb.release()
	}
	clear(r.backlog)
	r.backlog, r.backlogBytes = r.backlog[:0], 0
	return r, 0
}

// leave removes c from r, with the frames it left in the backlog: a
// newcomer must not answer an offer from a peer that is gone.
func (h *hub) leave(c *conn, r *room) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members = slices.DeleteFunc(r.members, func(m *conn) bool { return m == c })
	r.backlog = slices.DeleteFunc(r.backlog, func(p pending) bool {
		if p.from == c {
			r.backlogBytes -= len(p.fb.b)
			p.fb.release()
			return true
		}
		return false
	})
	if len(r.members) == 0 {
		delete(h.rooms, r.name)
		h.active.Dec()
	}
}

// forward queues fb, sent by from, to every other member of r, or keeps it
// for the next member when from is alone. Each queue and the backlog take
// their own reference; the caller keeps its own.
func (h *hub) forward(set *settings, r *room, from *conn, fb *frameBuf, k kind) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sent := false
	for _, m := range r.members {
		if m != from {
			m.send(fb, k)
			sent = true
		}
	}
	if sent {
		return
	}
	frames, bytes := backlogLimits(set)
	if len(r.backlog) >= frames || r.backlogBytes+len(fb.b) > bytes {
		h.backlogDropped.Inc()
		return
	}
	fb.hold()
	r.backlog = append(r.backlog, pending{from, fb, k})
	r.backlogBytes += len(fb.b)
}
