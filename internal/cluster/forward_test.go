package cluster

import (
	"bytes"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"icebox/internal/testenv"
)

// These tests run two Nodes on a real nats-server on 127.0.0.1, started
// from its Go module, each delivering to a counting handler.

const testSecret = "cluster-secret-0123456789abcdef-0123456789"

// counter is the handler of a test node: it applies joins and counts
// the frames it is handed, and the bytes of the last one.
type counter struct {
	frames atomic.Int64
	bytes  atomic.Int64
	each   chan struct{} // when not nil, told of each frame
	copies chan []byte   // when not nil, given a copy of each frame
}

func (c *counter) RemoteFrame(_ string, _ byte, frame []byte) {
	c.bytes.Store(int64(len(frame)))
	c.frames.Add(1)
	if c.each != nil {
		c.each <- struct{}{}
	}
	if c.copies != nil {
		c.copies <- bytes.Clone(frame)
	}
}
func (c *counter) RemoteJoined(_, _ string, _ bool, apply func()) { apply() }
func (c *counter) RemoteLeft(string, string, bool)                {}

// pairedNodes runs two nodes with one member each in room, each knowing
// of the other's, and returns them with the handler of the second.
func pairedNodes(t testing.TB, room string) (n1, n2 *Node, got *counter) {
	t.Helper()
	return pairedNodesOn(t, testenv.StartNATS(t, "forward-token"), room)
}

// pairedNodesOn is pairedNodes on a given nats-server.
func pairedNodesOn(t testing.TB, nats *testenv.NATS, room string) (n1, n2 *Node, got *counter) {
	t.Helper()
	n1, n2, _, got = pairedHandlers(t, nats, room, nil)
	return n1, n2, got
}

// pairedHandlers is pairedNodesOn with both handlers, node 1 logging to
// log1 (nil: nowhere).
func pairedHandlers(t testing.TB, nats *testenv.NATS, room string, log1 *slog.Logger) (n1, n2 *Node, got1, got2 *counter) {
	t.Helper()
	return pairedVia(t, nats, nats.URL(), room, log1)
}

// pairedVia is pairedHandlers with node 1 connecting to url1, e.g. a
// proxy in front of nats.
func pairedVia(t testing.TB, nats *testenv.NATS, url1, room string, log1 *slog.Logger) (n1, n2 *Node, got1, got2 *counter) {
	t.Helper()
	start := func(name, url string, h Handler, log *slog.Logger) *Node {
		cfg := DefaultConfig()
		cfg.Enabled, cfg.URLs, cfg.Token, cfg.Secret, cfg.Node = true, []string{url}, nats.Token, testSecret, name
		// Long enough that node 1 keeps node 2's member after node 2
		// stops (senderOnly), for the whole test.
		cfg.Heartbeat, cfg.NodeTimeout = 200*time.Millisecond, 10*time.Minute
		n, err := New(cfg, Options{Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(h); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		return n
	}
	got1, got2 = &counter{}, &counter{}
	n1, n2 = start("node-1", url1, got1, log1), start("node-2", nats.URL(), got2, nil)
	testenv.WaitFor(t, 10*time.Second, "the nodes to hear each other", func() bool { return n1.Peers() == 1 && n2.Peers() == 1 })
	for _, j := range []struct {
		n      *Node
		member string
	}{{n1, "member-1"}, {n2, "member-2"}} {
		if _, err := j.n.Claim(room, j.member); err != nil {
			t.Fatal(err)
		}
		j.n.Confirm(room, j.member, false, true)
	}
	testenv.WaitFor(t, 10*time.Second, "each node to know the other's member", func() bool { return n1.Members(room) == 1 && n2.Members(room) == 1 })
	return n1, n2, got1, got2
}

var candidateFrame = []byte(`{"id":"WsIceCandidates","data":"{\"controllerId\":\"tv-1\",\"iceCandidates\":[{\"candidate\":\"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host\",\"sdpMLineIndex\":0,\"sdpMid\":\"0\"}]}"}`)

// senderOnly forwards a frame from node 1 to node 2, which gets it byte
// count intact, then stops node 2: node 1 keeps forwarding to its member
// (node_timeout is long) and nothing else in this process handles the
// frames but nats-server, which has no subscriber left for them. Memory
// statistics, which are the whole process's, then count node 1's sending
// alone.
func senderOnly(t testing.TB, room string) *Node {
	n1, n2, got := pairedNodes(t, room)
	n1.Forward(room, "member-1", 3, candidateFrame)
	testenv.WaitFor(t, 10*time.Second, "a frame to reach node 2", func() bool { return got.frames.Load() == 1 })
	if got.bytes.Load() != int64(len(candidateFrame)) {
		t.Fatalf("node 2 got a frame of %d bytes, want %d", got.bytes.Load(), len(candidateFrame))
	}
	n2.Close()
	return n1
}

// A frame forwarded to another node allocates nothing on the sending
// node: it is signed into a buffer the node reuses, which nats.go copies
// into its own write buffer.
//
// AllocsPerRun counts the whole process's allocations, and the NATS server
// runs in this process: routing a thousand frames, under -race on a busy
// machine, it sometimes allocates a thousand times in the window. So the
// measurement is taken up to five times and the least counts: an
// allocation in Forward itself shows in every one.
func TestForwardAllocatesNothing(t *testing.T) {
	n1 := senderOnly(t, "alloc")
	least, runs := math.Inf(1), 0
	for ; runs < 5 && least > 0; runs++ {
		least = min(least, testing.AllocsPerRun(1000, func() { n1.Forward("alloc", "member-1", 3, candidateFrame) }))
	}
	if least != 0 {
		t.Errorf("Forward allocates %v times per frame, want 0", least)
	}
	if sent, want := testenv.MetricValue(t, n1.m.framesOut), float64(1+1001*runs); sent != want { // AllocsPerRun runs once more first
		t.Errorf("node 1 sent %v frames, want %v", sent, want)
	}
}

// TestForwardReportsRemoteMembers: Forward says whether the pairing has
// members on other nodes, the one question the signaling server asks
// before it keeps a frame for a later member instead. A frame for them
// counts as theirs while NATS is away too: dropped and counted, not kept.
func TestForwardReportsRemoteMembers(t *testing.T) {
	nats := testenv.StartNATS(t, "forward-token")
	n1, _, got := pairedNodesOn(t, nats, "both")
	if !n1.Forward("both", "member-1", 3, candidateFrame) {
		t.Error("Forward to a pairing with a member on node 2 reported none")
	}
	testenv.WaitFor(t, 10*time.Second, "the frame to reach node 2", func() bool { return got.frames.Load() == 1 })
	if n1.Forward("nobody-here", "member-1", 3, candidateFrame) {
		t.Error("Forward to a pairing node 1 does not follow reported members elsewhere")
	}
	if _, err := n1.Claim("alone", "member-3"); err != nil {
		t.Fatal(err)
	}
	n1.Confirm("alone", "member-3", false, true)
	if n1.Forward("alone", "member-3", 3, candidateFrame) {
		t.Error("Forward to a pairing whose only member is on node 1 reported members elsewhere")
	}
	if sent := testenv.MetricValue(t, n1.m.framesOut); sent != 1 {
		t.Errorf("node 1 sent %v frames, want 1: only the pairing with a member elsewhere is forwarded", sent)
	}

	nats.Stop()
	testenv.WaitFor(t, 10*time.Second, "node 1 to lose NATS", func() bool { return n1.Ready() != nil })
	if !n1.Forward("both", "member-1", 3, candidateFrame) {
		t.Error("without NATS, Forward to a pairing with a member on node 2 reported none: the frame would be kept for a later member")
	}
	if dropped := testenv.MetricValue(t, n1.m.framesDropped); dropped != 1 {
		t.Errorf("frames dropped without NATS: %v, want 1", dropped)
	}
}

// BenchmarkForward is the sending node's cost of a frame to another node.
func BenchmarkForward(b *testing.B) {
	n1 := senderOnly(b, "bench")
	b.ReportAllocs()
	b.SetBytes(int64(len(candidateFrame)))
	b.ResetTimer()
	for range b.N {
		n1.Forward("bench", "member-1", 3, candidateFrame)
	}
}

// BenchmarkForwardDelivered is a frame's whole cost in the cluster code
// and nats.go, sender and receiver in this one process, from Forward to
// its delivery to the other node's handler.
func BenchmarkForwardDelivered(b *testing.B) {
	n1, _, got := pairedNodes(b, "bench")
	each := make(chan struct{}, 1)
	got.each = each
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n1.Forward("bench", "member-1", 3, candidateFrame)
		<-each
	}
}

// TestSameNameIsLogged: two processes given one cluster.node (a config
// copied to every node) never see each other, since each takes the
// other's messages for its own; the operator is told so, once.
func TestSameNameIsLogged(t *testing.T) {
	nats := testenv.StartNATS(t, "name-token")
	var logs [2]*testenv.LogBuffer
	var nodes [2]*Node
	for i := range nodes {
		cfg := DefaultConfig()
		cfg.Enabled, cfg.URLs, cfg.Token, cfg.Secret, cfg.Node = true, []string{nats.URL()}, "name-token", testSecret, "node-1"
		cfg.Heartbeat = 200 * time.Millisecond
		logs[i] = &testenv.LogBuffer{}
		n, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(logs[i], nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(&counter{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		nodes[i] = n
	}
	const want = "another node also calls itself by this node's name"
	testenv.WaitFor(t, 10*time.Second, "both nodes to log the name clash", func() bool {
		return strings.Contains(logs[0].String(), want) && strings.Contains(logs[1].String(), want)
	})
	// Several clashing heartbeats later (each counted bad), still once.
	testenv.WaitFor(t, 10*time.Second, "three clashing messages", func() bool {
		return testenv.MetricValue(t, nodes[0].m.bad) >= 3
	})
	if n := strings.Count(logs[0].String(), want); n != 1 {
		t.Errorf("logged %d times for %v clashing messages, want once", n, testenv.MetricValue(t, nodes[0].m.bad))
	}
	if nodes[0].Peers() != 0 {
		t.Errorf("node sees %d peers, want 0: a node of its own name is not a peer", nodes[0].Peers())
	}
}

// TestOtherWireVersionIsLogged: heartbeats from a node of another icebox
// version (signed with the shared secret, another layout) reach a node
// over a real NATS server: each is counted bad and none makes a peer, the
// operator is told once to run one version everywhere, and a node of this
// version is still heard.
func TestOtherWireVersionIsLogged(t *testing.T) {
	srv := testenv.StartNATS(t, "version-token")
	logs := &testenv.LogBuffer{}
	cfg := DefaultConfig()
	cfg.Enabled, cfg.URLs, cfg.Token, cfg.Secret, cfg.Node = true, []string{srv.URL()}, "version-token", testSecret, "node-new"
	cfg.Heartbeat = 200 * time.Millisecond
	n := startedNode(t, cfg, logs)
	old := natsClient(t, srv)
	sign := newSigner([]byte(testSecret))
	subject := cfg.Subject + ".hb"
	const sent = 5
	for range sent {
		b := sign.encode(nil, subject, &message{typ: msgHeartbeat, kind: hello, node: "node-old", member: "boot"})
		body := bytes.Clone(b[:len(b)-macSize])
		body[0] = wireVersion + 1
		if err := old.Publish(subject, append(body, sign.sum(subject, body, nil)...)); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "every heartbeat of the other version counted bad", func() bool {
		return testenv.MetricValue(t, n.m.bad) >= sent
	})
	const want = "run one version on every node"
	if c := strings.Count(logs.String(), want); c != 1 {
		t.Errorf("warned %d times for %d messages, want once:\n%s", c, sent, logs.String())
	}
	if p := n.Peers(); p != 0 {
		t.Errorf("%d peers: a node whose messages cannot be read is no peer", p)
	}

	cfg2 := cfg
	cfg2.Node = "node-same"
	same, err := New(cfg2, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := same.Start(&counter{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(same.Close)
	testenv.WaitFor(t, 10*time.Second, "the node of this version to be heard", func() bool { return n.Peers() == 1 })
}

// startedNode starts a node with cfg, logging to logs, closed when the
// test ends.
func startedNode(t *testing.T, cfg Config, logs io.Writer) *Node {
	t.Helper()
	n, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(&counter{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// natsClient is a plain NATS client of srv (another process on the
// account: an old version, a spy), closed when the test ends.
func natsClient(t *testing.T, srv *testenv.NATS) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(srv.URL(), nats.Token(srv.Token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
