package signal

import (
	"testing"
	"time"

	"icebox/internal/testenv"
)

// Pages on different nodes see each other in WsPresence exactly as on one
// node: "here" lists the members elsewhere with their opt-in, "joined"
// and "left" follow a member on another node that joins or leaves, and a
// node that dies has its members "left" on the others.
func TestClusterPresence(t *testing.T) {
	nats := testenv.StartNATS(t, natsToken)
	nodes := startNodes(t, nats, 3)

	page1 := joinPage(t, nodes[0].url("room=pp"))
	page1.expectPresence(presenceHere, nil)
	page1.handled() // its join is confirmed to the other nodes

	page2 := joinPage(t, nodes[1].url("room=pp"))
	first := idOf(page2.expectPresence(presenceHere, map[string]bool{"*": true}))
	second := idOf(page1.expectPresence(presenceJoined, map[string]bool{"*": true}))
	if first == second {
		t.Fatalf("both pages have id %q", first)
	}
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

// After NATS goes away and comes back, what each page was told adds up to
// who is really there: events about the other page alternate "left" and
// "joined", starting with "left" and ending with "joined", and a page that
// joins afterwards finds both in "here".
func TestClusterPresenceAfterNATSOutage(t *testing.T) {
	nats := testenv.StartNATS(t, natsToken)
	nodes := startNodes(t, nats, 2, func(c *Config) { c.RoomCapacity = 3 })
	page1 := joinPage(t, nodes[0].url("room=re"))
	page1.expectPresence(presenceHere, nil)
	page1.handled()
	page2 := joinPage(t, nodes[1].url("room=re"))
	id1 := idOf(page2.expectPresence(presenceHere, map[string]bool{"*": true}))
	id2 := idOf(page1.expectPresence(presenceJoined, map[string]bool{"*": true}))

	before := []int{nodes[0].node.Connections(), nodes[1].node.Connections()}
	nats.Stop()
	waitFor(t, 5*time.Second, "both nodes to notice NATS is gone", func() bool {
		return nodes[0].node.Ready() != nil && nodes[1].node.Ready() != nil
	})
	nats.Start()
	waitFor(t, 15*time.Second, "both nodes to reconnect and forget what they knew", func() bool {
		return nodes[0].node.Connections() > before[0] && nodes[1].node.Connections() > before[1]
	})
	waitMesh(t, nodes, 15*time.Second)
	waitFor(t, 10*time.Second, "each node to count the other's page", func() bool {
		return nodes[0].node.Members("re") == 1 && nodes[1].node.Members("re") == 1
	})

	page3 := joinPage(t, nodes[0].url("room=re"))
	here := page3.expectPresence(presenceHere, map[string]bool{id1: true, id2: true})
	var id3 string
	for id := range here {
		if id != id1 && id != id2 {
			t.Fatalf("page3 was told of %q", id)
		}
	}
	// page1 (same node as page3) and page2 (the other) both end with the
	// other page present, then hear of page3.
	for _, c := range []struct {
		p     *pageClient
		other string
	}{{page1, id2}, {page2, id1}} {
		present, changes := true, 0
		for {
			e, peers := c.p.presence()
			if len(peers) != 1 {
				t.Fatalf("WsPresence %s %v: want one peer", e, peers)
			}
			id := idOf(peers)
			if id != c.other {
				if e != presenceJoined || !present || changes == 0 {
					t.Fatalf("got %s %q after %d changes (other present: %v), want the other page left and back first", e, id, changes, present)
				}
				if id3 == "" {
					id3 = id
				} else if id != id3 {
					t.Errorf("pages were told of different newcomers %q and %q", id3, id)
				}
				break
			}
			want := presenceLeft
			if !present {
				want = presenceJoined
			}
			if e != want {
				t.Fatalf("event %d about the other page is %s, want %s", changes+1, e, want)
			}
			present = !present
			changes++
		}
	}
}
