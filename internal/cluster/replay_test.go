package cluster

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"icebox/internal/testenv"
)

// spy is another client on the nodes' NATS account, as any software
// sharing the account could be: it hears every icebox message and sends
// captured ones again, byte for byte. It cannot sign anything itself.
type spy struct {
	nc   *nats.Conn
	msgs chan *nats.Msg
	sign *signer
}

func startSpy(t *testing.T, srv *testenv.NATS) *spy {
	t.Helper()
	nc, err := nats.Connect(srv.URL(), nats.Token(srv.Token), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s := &spy{nc: nc, msgs: make(chan *nats.Msg, 1<<16), sign: newSigner([]byte(testSecret))}
	if _, err := nc.ChanSubscribe("icebox.>", s.msgs); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

// capture returns the next message the spy heard (only the spy decodes
// it, to pick it) that is what.
func (s *spy) capture(t *testing.T, what string, is func(m message) bool) *nats.Msg {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case msg := <-s.msgs:
			if m, err := s.sign.decode(msg.Subject, msg.Data); err == nil && is(m) {
				return msg
			}
		case <-timeout:
			t.Fatalf("the spy heard no %s", what)
		}
	}
}

// resend sends msg again, unchanged, and returns once nats-server has
// taken it, so that it reaches each node ahead of anything a node sends
// afterwards.
func (s *spy) resend(t *testing.T, msg *nats.Msg) {
	t.Helper()
	if err := s.nc.PublishMsg(&nats.Msg{Subject: msg.Subject, Reply: msg.Reply, Data: msg.Data}); err != nil {
		t.Fatal(err)
	}
	if err := s.nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// syncFrame forwards a frame from one node to the other and waits until
// it arrives: every message that reached the receiving node before it is
// handled by then (one dispatcher, in NATS's order).
func syncFrame(t *testing.T, from *Node, room, member string, to *counter, frames int64) {
	t.Helper()
	from.Forward(room, member, 3, []byte(`{"id":"sync"}`))
	testenv.WaitFor(t, 10*time.Second, fmt.Sprintf("frame %d to arrive", frames), func() bool { return to.frames.Load() >= frames })
	if got := to.frames.Load(); got != frames {
		t.Fatalf("node received %d frames, want %d: a replayed frame was taken again", got, frames)
	}
}

// TestReplayedFrameIsDropped: a frame captured on NATS and sent again
// reaches the other node's members once.
func TestReplayedFrameIsDropped(t *testing.T) {
	srv := testenv.StartNATS(t, "replay-token")
	spy := startSpy(t, srv)
	n1, n2, _, got := pairedHandlers(t, srv, "replay", nil)
	n1.Forward("replay", "member-1", 3, candidateFrame)
	testenv.WaitFor(t, 10*time.Second, "the frame to reach node 2", func() bool { return got.frames.Load() == 1 })
	frame := spy.capture(t, "frame", func(m message) bool { return m.typ == msgFrame })
	for range 3 {
		spy.resend(t, frame)
	}
	syncFrame(t, n1, "replay", "member-1", got, 2)
	if stale := testenv.MetricValue(t, n2.m.stale); stale != 3 {
		t.Errorf("node 2 counted %v stale messages, want the 3 replays", stale)
	}
}

// TestReplayedJoinClosesNobody: a member's join from an earlier call,
// sent again into a later call of the same pairing (same subject), is
// not taken: the later call still has its two members, and neither is
// beyond the capacity of two.
func TestReplayedJoinClosesNobody(t *testing.T) {
	srv := testenv.StartNATS(t, "replay-token")
	spy := startSpy(t, srv)
	n1, n2, _, got := pairedHandlers(t, srv, "tv", nil)
	join := spy.capture(t, "member-1's join", func(m message) bool { return m.typ == msgJoined && m.member == "member-1" })

	// The first call ends, a second one on the same pairing begins.
	n1.Leave("tv", "member-1")
	n2.Leave("tv", "member-2")
	testenv.WaitFor(t, 10*time.Second, "the first call to end on both nodes", func() bool { return n1.Members("tv") == 0 && n2.Members("tv") == 0 })
	for _, j := range []struct {
		n      *Node
		member string
	}{{n1, "member-3"}, {n2, "member-4"}} {
		if _, err := j.n.Claim("tv", j.member); err != nil {
			t.Fatal(err)
		}
		j.n.Confirm("tv", j.member, false, true)
	}
	testenv.WaitFor(t, 10*time.Second, "the second call's members on both nodes", func() bool { return n1.Members("tv") == 1 && n2.Members("tv") == 1 })

	spy.resend(t, join)
	syncFrame(t, n1, "tv", "member-3", got, 1)
	if m := n2.Members("tv"); m != 1 {
		var ids []string
		n2.EachMember("tv", func(id string, _ bool) { ids = append(ids, id) })
		t.Errorf("node 2 counts %d members on node 1 (%s), want member-3 alone", m, strings.Join(ids, ", "))
	}
	if beyond := n2.Beyond("tv", 2); len(beyond) != 0 {
		t.Errorf("node 2 would close %v as beyond capacity", beyond)
	}
	if stale := testenv.MetricValue(t, n2.m.stale); stale != 1 {
		t.Errorf("node 2 counted %v stale messages, want the replayed join", stale)
	}
}

// TestReplayedHeartbeatForgetsNobody: heartbeats captured before NATS
// restarted (both nodes reconnect, each a new run), sent again, make no
// node forget the other's members, and the node whose heartbeat it was
// does not take it for another node of its name.
func TestReplayedHeartbeatForgetsNobody(t *testing.T) {
	srv := testenv.StartNATS(t, "replay-token")
	spy := startSpy(t, srv)
	logs := &testenv.LogBuffer{}
	n1, n2, got1, got2 := pairedHandlers(t, srv, "hb", slog.New(slog.NewTextHandler(logs, nil)))
	isN1Beat := func(m message) bool { return m.typ == msgHeartbeat && m.node == "node-1" }
	before := spy.capture(t, "a heartbeat of node 1", isN1Beat)

	srv.Stop()
	srv.Start()
	testenv.WaitFor(t, 10*time.Second, "the nodes to meet again and re-announce their members", func() bool {
		return n1.Ready() == nil && n2.Ready() == nil && n1.Peers() == 1 && n2.Peers() == 1 && n1.Members("hb") == 1 && n2.Members("hb") == 1
	})
	testenv.WaitFor(t, 10*time.Second, "the spy to be back", func() bool { return spy.nc.IsConnected() })
	if err := spy.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// A heartbeat of node 1's current run, too.
	current := spy.capture(t, "a heartbeat of node 1 after the restart", func(m message) bool { return isN1Beat(m) && m.boot == n1Boot(n1) })
	lost := testenv.MetricValue(t, n2.m.nodesLost)
	stale1, stale2 := testenv.MetricValue(t, n1.m.stale), testenv.MetricValue(t, n2.m.stale)

	spy.resend(t, before)
	spy.resend(t, current)
	syncFrame(t, n1, "hb", "member-1", got2, 1) // node 2 has handled both
	syncFrame(t, n2, "hb", "member-2", got1, 1) // node 1 too
	if l := testenv.MetricValue(t, n2.m.nodesLost); l != lost {
		t.Errorf("node 2 took node 1 for gone %v times on replayed heartbeats", l-lost)
	}
	if n2.Members("hb") != 1 || n2.Peers() != 1 {
		t.Errorf("node 2 knows %d members of node 1 and %d nodes, want 1 and 1", n2.Members("hb"), n2.Peers())
	}
	if stale := testenv.MetricValue(t, n2.m.stale) - stale2; stale != 2 {
		t.Errorf("node 2 counted %v stale messages, want both replays", stale)
	}
	if stale := testenv.MetricValue(t, n1.m.stale) - stale1; stale != 2 {
		t.Errorf("node 1 counted %v stale messages, want both replays of its own heartbeats", stale)
	}
	if strings.Contains(logs.String(), "another node also calls itself by this node's name") {
		t.Errorf("node 1 took a replay of its own heartbeat for another node of its name:\n%s", logs)
	}
}

func n1Boot(n *Node) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.boot
}

// TestFramesInOrderUnderLoad: legitimate traffic is all taken, in order,
// while both nodes also send joins, claims, answers, leaves and
// heartbeats on other subjects, numbered from the same counter.
func TestFramesInOrderUnderLoad(t *testing.T) {
	srv := testenv.StartNATS(t, "load-token")
	n1, n2, _, got := pairedHandlers(t, srv, "load", nil)
	const frames = 4000 // within inboxSize: the receiver never drops for being slow
	got.copies = make(chan []byte, frames)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i, n := range []*Node{n1, n2} {
		wg.Go(func() {
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				room, member := fmt.Sprintf("other-%d", j%3), fmt.Sprintf("m-%d-%d", i, j)
				if _, err := n.Claim(room, member); err != nil {
					// The answers queue behind the frames and may come
					// after claim_timeout under load; the claim and its
					// refusal were sent all the same.
					continue
				}
				n.Confirm(room, member, false, true)
				n.Leave(room, member)
			}
		})
	}
	for i := range frames {
		n1.Forward("load", "member-1", 3, fmt.Appendf(nil, "frame %d", i))
	}
	for i := range frames {
		select {
		case f := <-got.copies:
			if want := fmt.Appendf(nil, "frame %d", i); !bytes.Equal(f, want) {
				t.Fatalf("frame %d: got %q", i, f)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d frames arrived", i, frames)
		}
	}
	close(stop)
	wg.Wait()
	for i, n := range []*Node{n1, n2} {
		if stale := testenv.MetricValue(t, n.m.stale); stale != 0 {
			t.Errorf("node %d dropped %v legitimate messages as stale", i+1, stale)
		}
	}
}

// TestFreshRules: which authenticated messages a node takes, by sender
// run, sequence number and time sent.
func TestFreshRules(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Enabled, cfg.URLs, cfg.Secret, cfg.Node = true, []string{"nats://127.0.0.1:1"}, testSecret, "node-1"
	n, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	at := func(typ byte, node string, boot, seq uint64, age time.Duration) *message {
		return &message{typ: typ, node: node, boot: boot, seq: seq, sent: now.Add(-age).UnixNano()}
	}
	for _, c := range []struct {
		what string
		m    *message
		want bool
	}{
		{"a frame of a run never heard", at(msgFrame, "node-2", 10, 1, 0), false},
		{"a heartbeat sent longer than node_timeout ago", at(msgHeartbeat, "node-2", 10, 1, cfg.NodeTimeout+time.Second), false},
		{"a heartbeat from node_timeout ahead", at(msgHeartbeat, "node-2", 10, 1, -cfg.NodeTimeout-time.Second), false},
		{"a heartbeat of a new run", at(msgHeartbeat, "node-2", 10, 5, 0), true},
		{"a number before the first heard", at(msgFrame, "node-2", 10, 4, 0), false},
		{"a later frame", at(msgFrame, "node-2", 10, 7, 0), true},
		{"that frame again", at(msgFrame, "node-2", 10, 7, 0), false},
		{"a frame in the gap (never heard, on a subject not followed)", at(msgFrame, "node-2", 10, 6, 0), false},
		{"a heartbeat of an earlier run", at(msgHeartbeat, "node-2", 9, 100, 0), false},
		{"a join of a later run before its heartbeat", at(msgJoined, "node-2", 11, 1, 0), false},
		{"a heartbeat of a later run", at(msgHeartbeat, "node-2", 11, 1, 0), true},
		{"a frame of the run before", at(msgFrame, "node-2", 10, 8, 0), false},
		{"this node's own message", at(msgHeartbeat, "node-1", n.boot, 1, 0), false},
		{"another process's of this node's name", at(msgHeartbeat, "node-1", n.boot+1, 1, 0), true},
	} {
		if got := n.freshLocked(*c.m, now); got != c.want {
			t.Errorf("%s: fresh %v, want %v", c.what, got, c.want)
		}
	}
	old := n.boot
	n.endBootLocked(now)
	if n.freshLocked(*at(msgFrame, "node-1", old, 9, 0), now) {
		t.Error("a message of this node's previous run was taken for another node's")
	}
	// A node silent for node_timeout may come back with any run (a
	// clock set back); its old messages are stale by then anyway.
	later := cfg.NodeTimeout + time.Second
	if !n.freshLocked(*at(msgHeartbeat, "node-2", 3, 1, -later), now.Add(later)) {
		t.Error("a node silent for node_timeout was refused with an earlier run id")
	}
}

// TestClockApartIsLogged: heartbeats from a node whose clock is an hour
// ahead (signed with the shared secret, its numbers in order) reach a node
// over a real NATS server: none makes it a peer, each is counted stale,
// and the operator is told once why, with the node and the offset.
func TestClockApartIsLogged(t *testing.T) {
	srv := testenv.StartNATS(t, "clock-token")
	logs := &testenv.LogBuffer{}
	cfg := DefaultConfig()
	cfg.Enabled, cfg.URLs, cfg.Token, cfg.Secret, cfg.Node = true, []string{srv.URL()}, "clock-token", testSecret, "node-here"
	n := startedNode(t, cfg, logs)
	ahead := natsClient(t, srv)
	sign := newSigner([]byte(testSecret))
	subject := cfg.Subject + ".hb"
	sent := time.Now().Add(time.Hour)
	const beats = 5
	for i := range uint64(beats) {
		m := &message{typ: msgHeartbeat, kind: hello, node: "node-ahead", boot: uint64(sent.UnixNano()), seq: i + 1, sent: sent.UnixNano()}
		if err := ahead.Publish(subject, sign.encode(nil, subject, m)); err != nil {
			t.Fatal(err)
		}
	}
	if err := ahead.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "every heartbeat from an hour ahead counted stale", func() bool {
		return testenv.MetricValue(t, n.m.stale) >= beats
	})
	if c := strings.Count(logs.String(), "keep every node's clock in sync"); c != 1 || !strings.Contains(logs.String(), "node=node-ahead") {
		t.Errorf("warned %d times for %d heartbeats, want once, naming the node:\n%s", c, beats, logs.String())
	}
	if p := n.Peers(); p != 0 {
		t.Errorf("%d peers: a node an hour off is no peer", p)
	}
}

// TestSilentSendersAreForgotten: what a node keeps of another node's run
// goes once that run has been silent for three node_timeouts (its messages
// are stale by then), so that nodes coming and going under new names do
// not pile up; a live peer's stays.
func TestSilentSendersAreForgotten(t *testing.T) {
	srv := testenv.StartNATS(t, "prune-token")
	cfg := DefaultConfig()
	cfg.Enabled, cfg.URLs, cfg.Token, cfg.Secret, cfg.Node = true, []string{srv.URL()}, "prune-token", testSecret, "node-here"
	cfg.Heartbeat, cfg.NodeTimeout = 100*time.Millisecond, 200*time.Millisecond
	n := startedNode(t, cfg, io.Discard)
	n.mu.Lock()
	gone := n.freshLocked(message{typ: msgHeartbeat, node: "pod-7f3a", boot: 1, seq: 1, sent: time.Now().UnixNano()}, time.Now())
	n.mu.Unlock()
	if !gone {
		t.Fatal("a first heartbeat of a new node was not taken")
	}
	testenv.WaitFor(t, 10*time.Second, "the silent node's run to be forgotten", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.senders["pod-7f3a"] == nil
	})
}
