package signal

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"icebox/internal/cluster"
	"icebox/internal/testenv"
)

// overlap holds the claims of one round's two joins until both are held:
// each node then has its joiner's place held before it asks the other
// node, so that each hears of the other's claim as pending, every time.
type overlap struct {
	held    chan string
	release chan struct{}
}

// overlapNodes runs two nodes whose claims in rooms of cur's round wait
// for each other.
func overlapNodes(t *testing.T, cur *atomic.Pointer[overlap]) []*testNode {
	nats := testenv.StartNATS(t, natsToken)
	hold := func(room, member string) {
		if o := cur.Load(); o != nil {
			o.held <- room
			<-o.release
		}
	}
	var nodes []*testNode
	for i := range 2 {
		ccfg := fastCluster(nats, "node-"+strconv.Itoa(i+1))
		nodes = append(nodes, startNodeWith(t, ccfg, cluster.Options{BeforeClaim: hold}, Options{}))
	}
	waitMesh(t, nodes, 10*time.Second)
	return nodes
}

// round arms cur for two joins, calls start (which begins them) and
// releases them together once both are held.
func round(t *testing.T, cur *atomic.Pointer[overlap], start func()) {
	t.Helper()
	o := &overlap{held: make(chan string, 2), release: make(chan struct{})}
	cur.Store(o)
	start()
	<-o.held
	<-o.held
	cur.Store(nil)
	close(o.release)
}

// Two pages joining the same pairing on two nodes at the same moment,
// each node asking the other while its own joiner's place is held: the
// pages' rule (the later one offers, on finding the other in "here"; the
// earlier one waits, on hearing "joined") must leave exactly one offering,
// every time. The join order is that of the claims, the same on both
// nodes.
func TestClusterSimultaneousJoins(t *testing.T) {
	var cur atomic.Pointer[overlap]
	nodes := overlapNodes(t, &cur)
	const rounds = 20
	for i := range rounds {
		room := "glare-" + strconv.Itoa(i)
		var a, b *pageClient
		round(t, &cur, func() {
			a = &pageClient{dialKt(t, nodes[0].url("room="+room), nil)}
			b = &pageClient{dialKt(t, nodes[1].url("room="+room), nil)}
			a.send("WsInit", wsInitData{Presence: true})
			b.send("WsInit", wsInitData{Presence: true})
		})
		a.expect("WsIceServers")
		b.expect("WsIceServers")
		_, hereA := a.presence()
		_, hereB := b.presence()
		if len(hereA)+len(hereB) != 1 {
			t.Fatalf("round %d: page on node 1 found %v in \"here\", page on node 2 found %v: want exactly one to find the other (and offer)", i, hereA, hereB)
		}
		later, earlier := b, a
		if len(hereA) == 1 {
			later, earlier = a, b
		}
		if !hereA[idOf(hereA)] && len(hereA) == 1 || len(hereB) == 1 && !hereB[idOf(hereB)] {
			t.Fatalf("round %d: the other page is listed without presence", i)
		}
		// The earlier one hears of the later one as joined, and waits
		// for its offer; the offer gets through.
		earlier.expectPresence(presenceJoined, map[string]bool{"*": true})
		o := later.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0 later", ControllerID: room})
		earlier.expectBytes(o)
		a.ws.Close()
		b.ws.Close()
	}
	// A round's later join waits for the earlier one unless the earlier
	// one was admitted before the later one's question reached its node.
	waited := nodes[0].clusterMetric(t, "room_lookups_waited_total") + nodes[1].clusterMetric(t, "room_lookups_waited_total")
	t.Logf("%v of %d rounds had a join wait for the other", waited, rounds)
	if waited == 0 || waited > rounds {
		t.Errorf("%v joins waited for an overlapping earlier join, want 1 to %d: at most one per round, and the overlap must be exercised", waited, rounds)
	}
}

// The app and a page joining the same pairing on two nodes at the same
// moment: the app offers as soon as it has its ICE servers; the page,
// which never offers to the app, gets that offer whichever joined first,
// and the app reads nothing but the page's answer.
func TestClusterSimultaneousJoinsApp(t *testing.T) {
	var cur atomic.Pointer[overlap]
	nodes := overlapNodes(t, &cur)
	for i := range 10 {
		room := "app-" + strconv.Itoa(i)
		var app *ktClient
		var page *pageClient
		round(t, &cur, func() {
			app = dialKt(t, nodes[i%2].url("controllerId="+room), nil)
			page = &pageClient{dialKt(t, nodes[1-i%2].url("room="+room), nil)}
			app.send("WsInit", "")
			page.send("WsInit", wsInitData{Presence: true})
		})
		app.expect("WsIceServers")
		o := app.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0 app", ControllerID: room})
		page.expect("WsIceServers")
		if _, here := page.presence(); len(here) == 0 {
			page.expectPresence(presenceJoined, map[string]bool{"*": false})
		} else if here[idOf(here)] {
			t.Fatalf("round %d: the app is listed as a page: %v", i, here)
		}
		page.expectBytes(o)
		a := page.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "v=0 page"})
		app.expectBytes(a)
		app.ws.Close()
		page.ws.Close()
	}
}
