// Package cluster links the pairings of several icebox nodes over NATS
// core publish/subscribe: who is in which pairing on which node, and the
// frames between members on different nodes.
//
// Each node keeps its own members; nothing is stored in NATS. A join asks
// every live node who is in the pairing (a claim) and counts their
// members and pending claims toward the capacity, so that two concurrent
// joins on two nodes can never both take the last place (at worst both
// are refused). Two joins that overlap in time are ordered by their
// claims (time, node, member): a claim waits until every earlier claim it
// heard of is admitted or refused, so that exactly one of two joiners
// finds the other already there. Frames go to a subject per pairing, to which only nodes
// with members in it subscribe, and NATS keeps each sender's order.
// Nodes send heartbeats; a node silent for node_timeout is taken for dead
// and its members leave every pairing.
package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// errUnavailable is what Claim returns, wrapped, when NATS or a live node
// cannot be asked who is in a pairing. Unexported: callers only tell
// whether a claim failed (signal/ takes any error for "others unknown").
var errUnavailable = errors.New("cluster: other nodes unreachable")

// Handler is what a node delivers to: the signaling server's rooms.
type Handler interface {
	// RemoteFrame hands over a frame that a member on another node sent
	// to room, byte for byte, to go to its members here.
	RemoteFrame(room string, kind byte, frame []byte)
	// RemoteJoined says that member, on another node, joined room;
	// presence is its WsPresence opt-in. The handler calls apply, which
	// adds it to what Members and EachMember see, with the room locked,
	// so that the frames kept for the next member leave before any frame
	// forwarded after the join.
	RemoteJoined(room, member string, presence bool, apply func())
	// RemoteLeft says that member, on another node, left room, or that
	// its node is gone. Members no longer counts it.
	RemoteLeft(room, member string, presence bool)
}

// Options are what main hands a Node besides its Config.
type Options struct {
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: don't register
	// BeforeClaim, when not nil, is called by Claim with the place held
	// and before the other nodes are asked: tests use it to make joins
	// on several nodes overlap for sure.
	BeforeClaim func(room, member string)
}

// Node is this icebox node's link to the others. Its methods are safe for
// concurrent use.
type Node struct {
	cfg  Config
	name string
	// boot is this run: set at start and at each reconnection, when this
	// node is a new node to the others; guarded by mu.
	boot uint64
	// started: Start has subscribed, and connected may act; guarded by mu.
	started bool
	// ownBoots are the runs that ended within node_timeout; guarded by mu.
	ownBoots []ownBoot
	log      *slog.Logger
	// warnedVersion: the other-version warning is logged once, not per
	// message.
	warnedVersion atomic.Bool
	// warnedName: the same for another node using this node's name;
	// warnedClock for a message dropped for its sending time.
	warnedName, warnedClock atomic.Bool
	before                  func(room, member string) // Options.BeforeClaim
	m                       *metrics
	key                     []byte
	nc                      *nats.Conn
	inbox                   chan *nats.Msg
	h                       Handler
	replyP                  string // prefix of this node's claim reply subjects
	stop                    chan struct{}
	wg                      sync.WaitGroup

	closeOnce sync.Once

	mu     sync.Mutex
	sign   *signer          // guarded by mu
	out    []byte           // publishLocked's buffer, reused: nats.go copies what it publishes; guarded by mu
	rooms  map[string]*room // by name
	bySubj map[string]*room
	peers  map[string]*peer           // live nodes by name
	claims map[string]chan claimReply // by reply subject
	// senders are the other nodes' runs whose messages this node takes,
	// by node name. One silent for three node_timeouts is dropped (beat):
	// its messages are stale by then whatever the clocks, so none is taken
	// again, and nodes that come and go under new names (pods) do not
	// pile up.
	senders map[string]*sender
	// msgSeq numbers this node's messages.
	msgSeq uint64
	// claimRoom is the room of each claim in claims.
	claimRoom map[string]string
	seq       uint64
	// lastClaim is the latest start of a claim made or heard here, Unix
	// ns: a claim starts after every claim this node heard of, whatever
	// the skew between the nodes' clocks (a Lamport clock).
	lastClaim int64
	warm      time.Time // until then, after a (re)connection, the live nodes are not all known yet
	conn      uint64    // which connection to NATS this run is on: nats.go's reconnections + 1
}

// room is a pairing with at least one member, or a claim, on this node.
type room struct {
	name, subject string
	sub           *nats.Subscription
	local         map[string]localMember  // by member id
	remote        map[string]remoteMember // by member id
	// pending are the claims other nodes reported in their answers to
	// this node's claims and that are not admitted or refused yet.
	pending map[string]pendingClaim // by member id
	// changed is closed, and set to nil, when a pending claim ends.
	changed chan struct{}
}

type localMember struct {
	admitted bool  // false: claim pending
	presence bool  // opted in to WsPresence
	since    int64 // when its claim started, Unix ns: its place in the join order
}

// pendingClaim is a claim on another node that this node heard of.
type pendingClaim struct {
	node  string
	since int64     // the claimer's clock
	heard time.Time // this node's clock
}

// claimBefore orders concurrent joins the same way on every node: by the
// time each claim started, then by node and member for equal times.
func claimBefore(since1 int64, node1, member1 string, since2 int64, node2, member2 string) bool {
	if since1 != since2 {
		return since1 < since2
	}
	if node1 != node2 {
		return node1 < node2
	}
	return member1 < member2
}

// endPendingLocked forgets member's claim from node, if r holds one, and
// wakes the claims waiting for it.
func (r *room) endPendingLocked(node, member string) {
	if p, ok := r.pending[member]; ok && p.node == node {
		delete(r.pending, member)
		if r.changed != nil {
			close(r.changed)
			r.changed = nil
		}
	}
}

type remoteMember struct {
	node     string
	presence bool
	since    int64 // when it joined, on its node's clock: its place in the join order
}

// gone is a remote member taken out of a pairing, for Handler.RemoteLeft.
type gone struct {
	room, member string
	presence     bool
}

type peer struct {
	boot uint64
	seen time.Time
}

type claimReply struct {
	node   string
	others int
}

// inboxSize bounds the messages waiting for the dispatcher; NATS drops
// beyond it and says so (slow consumer), counted in bad_messages_total.
const inboxSize = 8192

// New checks cfg; Start connects.
func New(cfg Config, opts Options) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	name := cfg.Node
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("cluster: node name: %w (set cluster.node)", err)
		}
		name = strings.NewReplacer(".", "-", " ", "-").Replace(h)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:    cfg,
		name:   name,
		boot:   nextBoot(0),
		log:    log,
		before: opts.BeforeClaim,
		m:      m,
		key:    []byte(cfg.Secret),
		inbox:  make(chan *nats.Msg, inboxSize),
		stop:   make(chan struct{}),
		sign:   newSigner([]byte(cfg.Secret)),
		rooms:  make(map[string]*room),
		bySubj: make(map[string]*room),
		peers:  make(map[string]*peer),
		claims: make(map[string]chan claimReply),

		senders: make(map[string]*sender),

		claimRoom: make(map[string]string),
	}
	n.replyP = cfg.Subject + ".reply." + name + "." + strconv.FormatUint(n.boot, 16) + "."
	return n, nil
}

// Peers is how many other nodes this node hears.
func (n *Node) Peers() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.peers)
}

// Name is this node's name in the cluster.
func (n *Node) Name() string { return n.name }

// Start connects to NATS and delivers to h. NATS need not be up: the node
// keeps trying, and serves pairings whose members are all local meanwhile.
func (n *Node) Start(h Handler) error {
	n.h = h
	opts := []nats.Option{
		nats.Name("icebox " + n.name),
		nats.NoEcho(),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// Frames are not worth delivering late: while NATS is away
		// nothing is buffered (Forward drops and counts).
		nats.ReconnectBufSize(-1),
		nats.PingInterval(n.cfg.NodeTimeout),
		// A write to NATS that does not complete in claim_timeout is
		// given up (nats.go's default waits a minute): publishing
		// holds this node's lock, and nats.go's, so a congested link
		// would stall every join, leave, frame and delivery of the
		// node for that long. A frame that late is not worth
		// delivering, and a join waits no longer than claim_timeout
		// anyway. What the write held is lost; one that stopped part
		// way drops the connection, which nats.go then makes anew.
		nats.FlusherTimeout(n.cfg.ClaimTimeout),
		nats.MaxPingsOutstanding(2),
		nats.ConnectHandler(func(nc *nats.Conn) { n.connected(nc, nil) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { n.connected(nc, nil) }),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) { n.connected(nc, err) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			n.m.bad.Inc()
			n.log.Warn("cluster: NATS error", "err", err)
		}),
	}
	switch c := n.cfg; {
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if n.cfg.TLS.CA != "" {
		opts = append(opts, nats.RootCAs(n.cfg.TLS.CA))
	}
	if n.cfg.TLS.Cert != "" {
		opts = append(opts, nats.ClientCert(n.cfg.TLS.Cert, n.cfg.TLS.Key))
	}
	nc, err := nats.Connect(strings.Join(n.cfg.URLs, ","), opts...)
	if err != nil {
		return fmt.Errorf("cluster: connect to NATS: %w", err)
	}
	n.nc = nc
	for _, s := range []string{n.cfg.Subject + ".hb", n.cfg.Subject + ".claim", n.replyP + "*"} {
		if _, err := nc.ChanSubscribe(s, n.inbox); err != nil {
			nc.Close()
			return fmt.Errorf("cluster: subscribe %s: %w", s, err)
		}
	}
	if nc.IsConnected() {
		// Once nats-server has the subscriptions, nothing sent to this
		// node after Start is lost for want of them.
		if err := nc.FlushTimeout(n.cfg.ClaimTimeout); err != nil {
			n.log.Warn("cluster: NATS did not confirm the subscriptions", "err", err)
		}
	}
	n.setStarted()
	// Asked again after setStarted: a connection made in the background
	// before it was ignored by connected, and one made after it is
	// reported by nats.go; connected counts each connection once.
	if nc.IsConnected() {
		n.connected(nc, nil)
	} else {
		n.log.Warn("cluster: NATS unreachable at start; serving local pairings only until it is back", "urls", n.cfg.URLs)
	}
	n.wg.Add(2)
	go n.dispatch()
	go n.beat()
	return nil
}

// setStarted lets connected follow the connection: Start has subscribed.
func (n *Node) setStarted() {
	n.mu.Lock()
	n.started = true
	n.mu.Unlock()
}

// connected follows the NATS connection; nodes learn of each other from
// the next heartbeats.
//
// Joins and leaves sent while this node was cut off reached nobody, on
// either side: after a reconnection this node forgets every other node's
// members and, with a new boot id, makes the others forget its own. Both
// sides then meet anew and announce who is there (heardLocked).
func (n *Node) connected(nc *nats.Conn, err error) {
	if nc.IsConnected() {
		n.mu.Lock()
		if !n.started {
			// nats.go reports a first connection that succeeds at once
			// too, from its own goroutine, often before Start has its
			// subscriptions confirmed: Start's own call counts.
			n.mu.Unlock()
			return
		}
		// Start and nats.go's connect handler both report the first
		// connection: it is one run.
		conn := nc.Stats().Reconnects + 1
		if conn == n.conn {
			n.mu.Unlock()
			return
		}
		n.conn = conn
		n.m.connected.Set(1)
		n.log.Info("cluster: connected to NATS", "node", n.name, "server", nc.ConnectedUrlRedacted())
		// Every live node answers a first heartbeat at once (hello), but
		// give them one heartbeat: until then, joins wait (Claim).
		now := time.Now()
		n.warm = now.Add(n.cfg.Heartbeat)
		n.endBootLocked(now)
		var left []gone
		for name := range n.peers {
			left = append(left, n.forgetLocked(name, "this node was cut off from NATS")...)
		}
		// The others take this run's messages once they heard a
		// heartbeat of it: the first message of every run is one.
		n.publishOnLocked(nc, n.cfg.Subject+".hb", "", &message{typ: msgHeartbeat})
		n.m.connects.Inc()
		n.mu.Unlock()
		n.tellLeftLater(left)
		return
	}
	n.m.connected.Set(0)
	n.log.Warn("cluster: lost NATS; pairings with members elsewhere refuse new members until it is back", "err", err)
}

// Close leaves NATS; the other nodes drop this node's members once its
// heartbeats stop.
func (n *Node) Close() {
	if n == nil || n.nc == nil {
		return
	}
	n.closeOnce.Do(func() {
		close(n.stop)
		n.nc.Close()
		n.wg.Wait()
		n.m.connected.Set(0)
	})
}

// Ready reports whether NATS is reachable.
func (n *Node) Ready() error {
	if n.nc == nil || !n.nc.IsConnected() {
		return errors.New("cluster: NATS unreachable, serving local pairings only")
	}
	return nil
}

// roomSubject names room on NATS without revealing it: an HMAC of the name.
func (n *Node) roomSubject(name string) string {
	mac := hmac.New(sha256.New, n.key)
	mac.Write([]byte("icebox-room-v1:"))
	mac.Write([]byte(name))
	return n.cfg.Subject + ".room." + hex.EncodeToString(mac.Sum(nil)[:16])
}

// roomLocked returns the room called name, subscribing to it first.
func (n *Node) roomLocked(name string) (*room, error) {
	if r := n.rooms[name]; r != nil {
		return r, nil
	}
	r := &room{name: name, subject: n.roomSubject(name), local: make(map[string]localMember), remote: make(map[string]remoteMember), pending: make(map[string]pendingClaim)}
	sub, err := n.nc.ChanSubscribe(r.subject, n.inbox)
	if err != nil {
		return nil, err
	}
	r.sub = sub
	n.rooms[name] = r
	n.bySubj[r.subject] = r
	return r, nil
}

func (n *Node) dropIfEmptyLocked(r *room) {
	if len(r.local) > 0 || n.rooms[r.name] != r {
		return
	}
	r.sub.Unsubscribe()
	delete(n.rooms, r.name)
	delete(n.bySubj, r.subject)
}

// publishLocked signs and publishes m as this run's next message, sent
// now.
func (n *Node) publishLocked(subject, reply string, m *message) error {
	return n.publishOnLocked(n.nc, subject, reply, m)
}

// publishOnLocked is publishLocked on nc: the connection handler runs
// before Start has set n.nc.
func (n *Node) publishOnLocked(nc *nats.Conn, subject, reply string, m *message) error {
	n.msgSeq++
	m.node, m.boot, m.seq, m.sent = n.name, n.boot, n.msgSeq, time.Now().UnixNano()
	b := n.sign.encode(n.out[:0], subject, m)
	n.out = b
	if reply != "" {
		return nc.PublishRequest(subject, reply, b)
	}
	return nc.Publish(subject, b)
}

// Claim asks every live node how many members and pending claims room
// has there, holding a place for member meanwhile. The caller then
// admits member or not, and says which with Confirm.
func (n *Node) Claim(name, member string) (others int, err error) {
	n.m.claims.Inc()
	if n.nc == nil || !n.nc.IsConnected() {
		n.m.claimsUnavailable.Inc()
		return 0, errUnavailable
	}
	n.mu.Lock()
	if wait := time.Until(n.warm); wait > 0 {
		n.mu.Unlock()
		t := time.NewTimer(wait)
		<-t.C
		n.mu.Lock()
	}
	r, err := n.roomLocked(name)
	if err != nil {
		n.mu.Unlock()
		n.m.claimsUnavailable.Inc()
		return 0, fmt.Errorf("%w: %v", errUnavailable, err)
	}
	since := max(time.Now().UnixNano(), n.lastClaim+1)
	n.lastClaim = since
	r.local[member] = localMember{since: since}
	if n.before != nil {
		n.mu.Unlock()
		n.before(name, member)
		n.mu.Lock()
	}
	n.seq++
	reply := n.replyP + strconv.FormatUint(n.seq, 10)
	ch := make(chan claimReply, len(n.peers)+8)
	n.claims[reply] = ch
	n.claimRoom[reply] = name
	want := make(map[string]bool, len(n.peers))
	for p := range n.peers {
		want[p] = true
	}
	err = n.publishLocked(n.cfg.Subject+".claim", reply, &message{typ: msgClaim, member: member, payload: append(binary.BigEndian.AppendUint64(nil, uint64(since)), r.subject...)})
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.claims, reply)
		delete(n.claimRoom, reply)
		n.mu.Unlock()
	}()
	if err == nil {
		t := time.NewTimer(n.cfg.ClaimTimeout)
		defer t.Stop()
	wait:
		for len(want) > 0 {
			select {
			case rep := <-ch:
				delete(want, rep.node)
				others += rep.others
			case <-t.C:
				break wait
			}
		}
		if len(want) > 0 {
			err = fmt.Errorf("no answer from %s", strings.Join(slices.Sorted(maps.Keys(want)), ", "))
		} else {
			err = n.waitEarlier(r, member, since, t.C)
		}
	}
	if err != nil {
		n.Confirm(name, member, false, false)
		n.m.claimsUnavailable.Inc()
		n.log.Warn("cluster: cannot tell who is in a pairing; join refused", "err", err)
		return 0, fmt.Errorf("%w: %v", errUnavailable, err)
	}
	return others, nil
}

// waitEarlier waits until every claim on r that started before member's
// (since) and that this node heard of is admitted or refused, so that a
// joiner admitted after it is told of it: of two overlapping joins on
// two nodes, the later one finds the earlier already there and the
// earlier one hears of the later as joined, just as on one node.
func (n *Node) waitEarlier(r *room, member string, since int64, timeout <-chan time.Time) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	waited := false
	for {
		var earlier string
		for id, p := range r.pending {
			if time.Since(p.heard) > 2*n.cfg.ClaimTimeout {
				delete(r.pending, id) // its end was lost with NATS; its claim timed out long ago
				continue
			}
			if claimBefore(p.since, p.node, id, since, n.name, member) {
				earlier = p.node
				break
			}
		}
		if earlier == "" {
			return nil
		}
		if !waited {
			waited = true
			n.m.claimsWaited.Inc()
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		n.mu.Unlock()
		select {
		case <-changed:
			n.mu.Lock()
		case <-timeout:
			n.mu.Lock()
			return fmt.Errorf("an earlier join on %s did not end in time", earlier)
		}
	}
}

// Confirm ends member's claim on room: admitted, it is announced to the
// other nodes with its WsPresence opt-in; otherwise the place is given
// back. A member admitted without a claim (the other nodes could not be
// asked) is recorded too: it is announced once NATS is back, and takes
// its place in the join order after every join this node heard of.
func (n *Node) Confirm(name, member string, presence, admitted bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.rooms[name]
	if r == nil && admitted {
		var err error
		if r, err = n.roomLocked(name); err != nil {
			n.log.Warn("cluster: cannot follow a pairing; its member stays unknown to the other nodes", "err", err)
			return
		}
	}
	if r == nil {
		return
	}
	if !admitted {
		delete(r.local, member)
		if n.nc.IsConnected() {
			// Nodes that heard of the claim stop waiting for it.
			n.publishLocked(r.subject, "", &message{typ: msgLeft, member: member})
		}
		n.dropIfEmptyLocked(r)
		return
	}
	since := r.local[member].since
	if since == 0 { // no claim
		since = max(time.Now().UnixNano(), n.lastClaim+1)
		n.lastClaim = since
	}
	r.local[member] = localMember{admitted: true, presence: presence, since: since}
	if n.nc.IsConnected() {
		n.publishLocked(r.subject, "", joinedMessage(member, presence, since))
	}
}

// Leave takes member out of room on every node.
func (n *Node) Leave(name, member string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.rooms[name]
	if r == nil {
		return
	}
	delete(r.local, member)
	if n.nc.IsConnected() {
		n.publishLocked(r.subject, "", &message{typ: msgLeft, member: member})
	}
	n.dropIfEmptyLocked(r)
}

// Members is how many members room has on other nodes, as far as this
// node knows.
func (n *Node) Members(name string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.rooms[name]; r != nil {
		return len(r.remote)
	}
	return 0
}

// EachMember calls f for each member room has on other nodes, as far as
// this node knows, in no particular order.
func (n *Node) EachMember(name string, f func(member string, presence bool)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.rooms[name]; r != nil {
		for id, m := range r.remote {
			f(id, m.presence)
		}
	}
}

// Forward sends a frame member sent to room to its members on other
// nodes, and reports whether room has any: then the frame was theirs,
// sent or, without NATS, dropped and counted. One lock for both, since
// every frame of a clustered pairing comes this way.
func (n *Node) Forward(name, member string, kind byte, frame []byte) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.rooms[name]
	if r == nil || len(r.remote) == 0 {
		return false
	}
	if !n.nc.IsConnected() {
		n.m.framesDropped.Inc()
		return true
	}
	if err := n.publishLocked(r.subject, "", &message{typ: msgFrame, member: member, kind: kind, payload: frame}); err != nil {
		n.m.framesDropped.Inc()
		return true
	}
	n.m.framesOut.Inc()
	return true
}

// dispatch handles every message from NATS, one at a time and in the
// order NATS delivered them, so that a claim's answer and the joins and
// leaves after it are applied in the order they happened.
func (n *Node) dispatch() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case msg := <-n.inbox:
			n.handle(msg)
		}
	}
}

func (n *Node) handle(msg *nats.Msg) {
	n.mu.Lock()
	m, err := n.sign.decode(msg.Subject, msg.Data)
	now := time.Now()
	if err == nil && !n.freshLocked(m, now) {
		n.mu.Unlock()
		n.m.stale.Inc()
		if off := now.Sub(time.Unix(0, m.sent)); outside(off, n.cfg.NodeTimeout) && !n.warnedClock.Swap(true) {
			// A replay, or a node whose clock is off: the node would be
			// shut out for good without a word, and its members with it.
			n.log.Warn("cluster: a message sent further from this node's clock than node_timeout was dropped: a replay, or the nodes' clocks disagree; keep every node's clock in sync (NTP)", "node", m.node, "offset", off.Round(time.Millisecond))
		}
		return
	}
	if err != nil || m.node == n.name {
		n.mu.Unlock()
		n.m.bad.Inc()
		switch {
		case errors.Is(err, errOtherVersion) && !n.warnedVersion.Swap(true):
			n.log.Warn("cluster: a node runs another icebox version whose messages this one cannot read; run one version on every node (upgrade all together)", "want_wire_version", wireVersion)
		case err == nil && !n.warnedName.Swap(true):
			// NoEcho: a node never hears itself, so this is another
			// process with the same name (a config copied to every
			// node). The two would never see each other's members.
			n.log.Error("cluster: another node also calls itself by this node's name; give each node its own cluster.node", "node", n.name)
		}
		return
	}
	switch m.typ {
	case msgHeartbeat:
		isNew, left := n.heardLocked(m.node, m.boot)
		if !isNew && m.kind == hello {
			// It has just met this node (new, or back after a
			// partition it noticed and this node did not): it may
			// have forgotten this node's members.
			n.announceLocked()
		}
		n.mu.Unlock()
		n.tellLeftLater(left) // restarted, or reconnected to NATS
	case msgClaim:
		// The answer: how many members and claims the room has here,
		// and which members, for the claimer to forward to and to list
		// in WsPresence: each is its opt-in ('0' or '1'); and which
		// claims, for the claimer to wait for the earlier ones: each is
		// 'p'. Both go on with when they joined or started (16 hex
		// digits), then the id.
		if len(m.payload) < 8 {
			n.mu.Unlock()
			n.m.bad.Inc()
			return
		}
		n.lastClaim = max(n.lastClaim, int64(binary.BigEndian.Uint64(m.payload)))
		p := make([]byte, 4, 64)
		if r := n.bySubj[string(m.payload[8:])]; r != nil {
			binary.BigEndian.PutUint32(p, uint32(len(r.local)))
			for id, l := range r.local {
				tag := byte('p')
				if l.admitted {
					tag = presenceByte(l.presence)
				}
				p = appendClaimEntry(p, tag, l.since, id)
			}
		}
		if msg.Reply != "" && strings.HasPrefix(msg.Reply, n.cfg.Subject+".reply.") {
			n.publishLocked(msg.Reply, "", &message{typ: msgClaimReply, payload: p})
		}
		n.mu.Unlock()
	case msgClaimReply:
		if ch := n.claims[msg.Subject]; ch != nil && len(m.payload) >= 4 {
			// The claimer is subscribed to the room: the members named
			// here are known before any later leave is applied.
			if r := n.rooms[n.claimRoom[msg.Subject]]; r != nil {
				for e := range strings.SplitSeq(string(m.payload[4:]), ",") {
					tag, since, id, ok := parseClaimEntry(e)
					switch {
					case !ok:
					case tag == 'p':
						r.pending[id] = pendingClaim{m.node, since, time.Now()}
					default:
						r.remote[id] = remoteMember{m.node, tag == '1', since}
					}
				}
			}
			select {
			case ch <- claimReply{m.node, int(binary.BigEndian.Uint32(m.payload))}:
			default:
			}
		}
		n.mu.Unlock()
	case msgJoined:
		r := n.bySubj[msg.Subject]
		n.mu.Unlock()
		if r == nil {
			return
		}
		if len(m.payload) != 8 {
			n.m.bad.Inc()
			return
		}
		presence, since := m.kind == 1, int64(binary.BigEndian.Uint64(m.payload))
		n.h.RemoteJoined(r.name, m.member, presence, func() {
			n.mu.Lock()
			r.remote[m.member] = remoteMember{m.node, presence, since}
			r.endPendingLocked(m.node, m.member)
			n.mu.Unlock()
		})
	case msgLeft:
		var left []gone
		if r := n.bySubj[msg.Subject]; r != nil {
			r.endPendingLocked(m.node, m.member) // refused
			if r.remote[m.member].node == m.node {
				left = append(left, gone{r.name, m.member, r.remote[m.member].presence})
				delete(r.remote, m.member)
			}
		}
		n.mu.Unlock()
		n.tellLeft(left)
	case msgFrame:
		r := n.bySubj[msg.Subject]
		n.mu.Unlock()
		if r == nil {
			return
		}
		n.m.framesIn.Inc()
		if d := time.Since(time.Unix(0, m.sent)); d >= 0 {
			n.m.latency.Observe(d.Seconds())
		}
		n.h.RemoteFrame(r.name, m.kind, m.payload)
	default:
		n.mu.Unlock()
		n.m.bad.Inc()
	}
}

// hello, as a heartbeat's kind, asks every node that hears it to announce
// its members again: the sender has just met them.
const hello = 1

// heardLocked notes a heartbeat and reports whether its node is new to
// this one. A node heard for the first time (new, back from a partition,
// or restarted) learns who is here: each local member is announced again
// on its pairing, and a hello asks it to do the same. The members of a
// restarted node's previous run are returned, for tellLeft.
func (n *Node) heardLocked(node string, boot uint64) (isNew bool, left []gone) {
	p := n.peers[node]
	if p != nil && p.boot == boot {
		p.seen = time.Now()
		return false, nil
	}
	if p != nil {
		left = n.forgetLocked(node, "restarted")
	}
	n.peers[node] = &peer{boot: boot, seen: time.Now()}
	n.m.nodes.Set(float64(len(n.peers)))
	n.log.Info("cluster: node joined", "node", node)
	// The hello goes first: a node that missed this one's first heartbeat
	// of a new run takes that run from a heartbeat only, and would drop
	// the joins sent before it as stale.
	n.publishLocked(n.cfg.Subject+".hb", "", &message{typ: msgHeartbeat, kind: hello})
	n.announceLocked()
	return true, left
}

// announceLocked announces every local member again on its pairing.
func (n *Node) announceLocked() {
	for _, r := range n.rooms {
		for id, l := range r.local {
			if l.admitted {
				n.publishLocked(r.subject, "", joinedMessage(id, l.presence, l.since))
			}
		}
	}
}

// joinedMessage announces member on its pairing; kind carries its
// WsPresence opt-in, the payload when it joined (its place in the join
// order).
func joinedMessage(member string, presence bool, since int64) *message {
	m := &message{typ: msgJoined, member: member, payload: binary.BigEndian.AppendUint64(nil, uint64(since))}
	if presence {
		m.kind = 1
	}
	return m
}

func presenceByte(presence bool) byte {
	if presence {
		return '1'
	}
	return '0'
}

// forgetLocked takes a dead node's members out of every pairing and
// returns them; the caller hands them to tellLeft once n.mu is released.
func (n *Node) forgetLocked(node, why string) []gone {
	delete(n.peers, node)
	n.m.nodes.Set(float64(len(n.peers)))
	var left []gone
	for _, r := range n.rooms {
		for id, on := range r.remote {
			if on.node == node {
				delete(r.remote, id)
				left = append(left, gone{r.name, id, on.presence})
			}
		}
		for id, p := range r.pending {
			if p.node == node {
				r.endPendingLocked(node, id)
			}
		}
	}
	n.m.nodesLost.Inc()
	n.log.Warn("cluster: node gone; its members left their pairings", "node", node, "why", why, "members", len(left))
	return left
}

// tellLeftLater tells the handler which remote members left, node_timeout
// from now, when they may be back: after this node or theirs reconnected
// to NATS, their node announces them again at once, and the handler hears
// of those that did not come back only (it checks EachMember). A call
// between pages on two nodes thus outlives a short NATS outage.
func (n *Node) tellLeftLater(left []gone) {
	if len(left) == 0 {
		return
	}
	time.AfterFunc(n.cfg.NodeTimeout, func() {
		select {
		case <-n.stop:
		default:
			n.tellLeft(left)
		}
	})
}

// tellLeft tells the handler which remote members left; called without
// n.mu, since the handler takes its own locks and then may call n.
func (n *Node) tellLeft(left []gone) {
	for _, g := range left {
		n.h.RemoteLeft(g.room, g.member, g.presence)
	}
}

// beat sends heartbeats and forgets nodes that stopped sending theirs.
func (n *Node) beat() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.Heartbeat / 2)
	defer t.Stop()
	last := time.Time{}
	for {
		select {
		case <-n.stop:
			return
		case now := <-t.C:
			if now.Sub(last) >= n.cfg.Heartbeat {
				n.heartbeat()
				last = now
			}
			n.mu.Lock()
			var left []gone
			for name, p := range n.peers {
				if now.Sub(p.seen) > n.cfg.NodeTimeout {
					left = append(left, n.forgetLocked(name, "silent for node_timeout")...)
				}
			}
			for name, s := range n.senders {
				if now.Sub(s.heard) > 3*n.cfg.NodeTimeout && n.peers[name] == nil {
					delete(n.senders, name)
				}
			}
			n.mu.Unlock()
			if n.nc.IsConnected() {
				n.tellLeft(left)
			} else {
				n.tellLeftLater(left) // it may be this node that is cut off
			}
		}
	}
}

func (n *Node) heartbeat() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nc != nil && n.nc.IsConnected() {
		n.publishLocked(n.cfg.Subject+".hb", "", &message{typ: msgHeartbeat})
	}
}

// Beyond lists room's members on this node that come after the first
// capacity members of the whole pairing, as far as this node knows, in
// join order (when each joined, then node, then member). A pairing has
// more members than its capacity only after a partition healed: parts of
// the cluster that could not reach each other admitted members on their
// own. Every node then closes its own members beyond capacity, and since
// each node learns of more members only, never of fewer, before the
// surplus has left, the nodes agree: the earliest capacity members stay.
func (n *Node) Beyond(name string, capacity int) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.rooms[name]
	if r == nil {
		return nil
	}
	type entry struct {
		since    int64
		node, id string
		local    bool
	}
	all := make([]entry, 0, len(r.local)+len(r.remote))
	for id, l := range r.local {
		if l.admitted {
			all = append(all, entry{l.since, n.name, id, true})
		}
	}
	if len(all)+len(r.remote) <= capacity {
		return nil
	}
	for id, m := range r.remote {
		all = append(all, entry{m.since, m.node, id, false})
	}
	slices.SortFunc(all, func(a, b entry) int {
		if claimBefore(a.since, a.node, a.id, b.since, b.node, b.id) {
			return -1
		}
		return 1
	})
	var out []string
	for _, e := range all[capacity:] {
		if e.local {
			out = append(out, e.id)
		}
	}
	return out
}
