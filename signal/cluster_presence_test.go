package signal

import (
	"fmt"
	"testing"
	"time"

	"icebox/internal/testenv"
)

// meetPages joins page1 to room on a, then page2 on b: page2 finds page1
// in "here" and page1 hears that page2 joined, each with its own id.
func meetPages(t *testing.T, a, b *testNode, room string) (page1, page2 *pageClient, id1, id2 string) {
	t.Helper()
	page1 = joinPage(t, a.url("room="+room))
	page1.expectPresence(presenceHere, nil)
	page1.handled() // its join is confirmed to the other nodes
	page2 = joinPage(t, b.url("room="+room))
	id1 = idOf(page2.expectPresence(presenceHere, map[string]bool{"*": true}))
	id2 = idOf(page1.expectPresence(presenceJoined, map[string]bool{"*": true}))
	if id1 == id2 {
		t.Fatalf("both pages have id %q", id1)
	}
	return page1, page2, id1, id2
}

// Pages on different nodes see each other in WsPresence exactly as on one
// node: "here" lists the members elsewhere with their opt-in, "joined"
// and "left" follow a member on another node that joins or leaves, and a
// node that dies has its members "left" on the others.
func TestClusterPresence(t *testing.T) {
	nats := testenv.StartNATS(t, natsToken)
	nodes := startNodes(t, nats, 3)

	page1, page2, first, second := meetPages(t, nodes[0], nodes[1], "pp")
	// They can talk: the call starts as on one node.
	o := page1.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0 page1", ControllerID: "pp"})
	page2.expectBytes(o)

	page2.ws.Close()
	page1.expectPresence(presenceLeft, map[string]bool{second: true})

	// An app on node 3 (never opted in) is listed as such.
	app := join(t, nodes[2].url("controllerId=pp"))
	appID := idOf(page1.expectPresence(presenceJoined, map[string]bool{"*": false}))
	a := page1.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0 again", ControllerID: "pp"})
	app.expectBytes(a) // strictly decoded: no WsPresence came before it

	// Node 3 dies: its member leaves page1's pairing.
	cfg := fastCluster(nats, "")
	died := time.Now()
	nodes[2].node.Close()
	page1.expectPresence(presenceLeft, map[string]bool{appID: false})
	t.Logf("page told that a dead node's member left after %v (node bound %v)", time.Since(died), cfg.NodeTimeout+cfg.Heartbeat)
	waitFor(t, 10*time.Second, "node 2 to drop node 3 too", func() bool { return nodes[1].node.Peers() == 1 })

	// A page joining on node 2 now finds page1 there and nobody else.
	page3 := joinPage(t, nodes[1].url("room=pp"))
	if got := idOf(page3.expectPresence(presenceHere, map[string]bool{"*": true})); got != first {
		t.Errorf("page3 was told of %q, want page1 %q", got, first)
	}
	page1.expectPresence(presenceJoined, map[string]bool{"*": true})
}

// The app, which never opts in, gets no WsPresence from a member on
// another node: its kept offer reaches a page on node 2, which learns of
// it in "here", and every frame the app reads afterwards, while pages come
// and go on node 2, passes its strict decoder.
func TestClusterPresenceNotToApp(t *testing.T) {
	nats := testenv.StartNATS(t, natsToken)
	nodes := startNodes(t, nats, 2)

	app := join(t, nodes[0].url(""))
	o := app.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0 app", ControllerID: "tv-a"})
	app.handled() // its join is confirmed to the other nodes
	for i := range 2 {
		page := joinPage(t, nodes[1].url("room=tv-a"))
		page.expectPresence(presenceHere, map[string]bool{"*": false})
		if i == 0 {
			page.expectBytes(o) // kept for the first to join only
		}
		ans := page.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "v=0 page", ControllerID: "tv-a"})
		app.expectBytes(ans)
		page.ws.Close()
		waitFor(t, 10*time.Second, "node 1 to see the page leave", func() bool { return nodes[0].node.Members("tv-a") == 0 })
	}
}

// A NATS outage shorter than node_timeout tells the pages nothing: each
// node forgets the other's members on reconnection, but the other node
// announces them again at once, so neither page hears "left" and an
// established call between them goes on. A page joining afterwards finds
// both in "here", and the next event either page gets is its "joined".
func TestClusterPresenceAfterNATSOutage(t *testing.T) {
	nats := testenv.StartNATS(t, natsToken)
	var nodes []*testNode
	for i := range 2 {
		c := fastCluster(nats, fmt.Sprintf("node-%d", i+1))
		c.NodeTimeout = time.Minute // the outage is shorter
		nodes = append(nodes, startNode(t, c, Options{}, func(c *Config) { c.RoomCapacity = 3 }))
	}
	waitMesh(t, nodes, 10*time.Second)
	page1, page2, id1, id2 := meetPages(t, nodes[0], nodes[1], "re")

	connections := func(n *testNode) float64 { return n.clusterMetric(t, "nats_connections_total") }
	before := []float64{connections(nodes[0]), connections(nodes[1])}
	nats.Stop()
	waitFor(t, 5*time.Second, "both nodes to notice NATS is gone", func() bool {
		return nodes[0].node.Ready() != nil && nodes[1].node.Ready() != nil
	})
	nats.Start()
	waitFor(t, 15*time.Second, "both nodes to reconnect and forget what they knew", func() bool {
		return connections(nodes[0]) > before[0] && connections(nodes[1]) > before[1]
	})
	waitMesh(t, nodes, 15*time.Second)
	waitFor(t, 10*time.Second, "each node to count the other's page again", func() bool {
		return nodes[0].node.Members("re") == 1 && nodes[1].node.Members("re") == 1
	})

	page3 := joinPage(t, nodes[0].url("room=re"))
	page3.expectPresence(presenceHere, map[string]bool{id1: true, id2: true})
	id3 := idOf(page1.expectPresence(presenceJoined, map[string]bool{"*": true}))
	page2.expectPresence(presenceJoined, map[string]bool{id3: true})
	a := page1.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0 still here", ControllerID: "re"})
	page2.expectBytes(a)
}

// A page that leaves while NATS is away is "left" for the page on the
// other node once NATS is back, and nothing else is said about it.
func TestClusterPresenceLeaveDuringOutage(t *testing.T) {
	nats := testenv.StartNATS(t, natsToken)
	nodes := startNodes(t, nats, 2)
	page1, page2, _, id2 := meetPages(t, nodes[0], nodes[1], "lo")

	nats.Stop()
	waitFor(t, 5*time.Second, "node 2 to notice NATS is gone", func() bool { return nodes[1].node.Ready() != nil })
	page2.ws.Close()
	waitFor(t, 5*time.Second, "node 2 to drop its page", func() bool { return testenv.MetricValue(t, nodes[1].hub.active) == 0 })
	nats.Start()
	page1.expectPresence(presenceLeft, map[string]bool{id2: true})
	waitBack(t, nodes)
	page3 := joinPage(t, nodes[1].url("room=lo"))
	page3.expectPresence(presenceHere, map[string]bool{"*": true})
	page1.expectPresence(presenceJoined, map[string]bool{"*": true})
}
