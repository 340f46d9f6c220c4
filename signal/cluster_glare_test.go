package signal

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"icebox/internal/cluster"
	"icebox/internal/testenv"
)

// overlap holds the claims of one round's two joins, one per node, until
// released: with both held, each node has its joiner's place held before
// it asks the other node, so that each hears of the other's claim as
// pending, every time.
type overlap struct {
	held    chan int // the index of the node whose claim is now held
	release [2]chan struct{}
	once    [2]sync.Once
}

// newOverlap makes a round's overlap, released in any case when t ends
// (a failed test must not leave a claim held, or the nodes never stop).
func newOverlap(t *testing.T) *overlap {
	o := &overlap{held: make(chan int, 2), release: [2]chan struct{}{make(chan struct{}), make(chan struct{})}}
	t.Cleanup(func() { o.let(0); o.let(1) })
	return o
}

// next is the index of the node whose claim is held next.
func (o *overlap) next(t *testing.T) int {
	t.Helper()
	select {
	case i := <-o.held:
		return i
	case <-time.After(10 * time.Second): // guards against hanging only
		t.Fatal("no claim was made")
		return -1
	}
}

// let releases node i's held claim.
func (o *overlap) let(i int) { o.once[i].Do(func() { close(o.release[i]) }) }

// overlapNodes runs two nodes whose claims in rooms of cur's round wait
// for cur's release.
func overlapNodes(t *testing.T, cur *atomic.Pointer[overlap]) []*testNode {
	nats := testenv.StartNATS(t, natsToken)
	var nodes []*testNode
	for i := range 2 {
		hold := func(room, member string) {
			if o := cur.Load(); o != nil {
				o.held <- i
				<-o.release[i]
			}
		}
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
	o := newOverlap(t)
	cur.Store(o)
	start()
	<-o.held
	<-o.held
	cur.Store(nil)
	o.let(0)
	o.let(1)
}

// Two pages joining the same pairing on two nodes at the same moment,
// each node asking the other while its own joiner's place is held: the
// pages' rule (the later one offers, on finding the other in "here"; the
// earlier one waits, on hearing "joined") must leave exactly one offering,
// every time. The join order is that of the claims, the same on both
// nodes. Each round takes the hardest order: the page on node 1 claims
// first, the later claim (node 2's) asks first, and finds the earlier one
// pending, so it must wait for it (counted in icebox_cluster_room_lookups_waited_total) until the
// earlier join, released only then, is admitted.
func TestClusterSimultaneousJoins(t *testing.T) {
	var cur atomic.Pointer[overlap]
	nodes := overlapNodes(t, &cur)
	const rounds = 20
	for i := range rounds {
		room := "glare-" + strconv.Itoa(i)
		o := newOverlap(t)
		cur.Store(o)
		a := &pageClient{dialKt(t, nodes[0].url("room="+room), nil)}
		a.send("WsInit", wsInitData{Presence: true})
		if n := o.next(t); n != 0 {
			t.Fatalf("round %d: node %d claimed, want node 1's claim (the earlier)", i, n+1)
		}
		b := &pageClient{dialKt(t, nodes[1].url("room="+room), nil)}
		b.send("WsInit", wsInitData{Presence: true})
		if n := o.next(t); n != 1 {
			t.Fatalf("round %d: node %d claimed, want node 2's claim (the later)", i, n+1)
		}
		cur.Store(nil)
		waited := nodes[1].clusterMetric(t, "room_lookups_waited_total")
		o.let(1)
		waitFor(t, 10*time.Second, "the later join to wait for the earlier, pending one", func() bool {
			return nodes[1].clusterMetric(t, "room_lookups_waited_total") == waited+1
		})
		o.let(0)
		a.expect("WsIceServers")
		b.expect("WsIceServers")
		_, hereA := a.presence()
		_, hereB := b.presence()
		if len(hereA) != 0 || len(hereB) != 1 || !hereB[idOf(hereB)] {
			t.Fatalf("round %d: page on node 1 found %v in \"here\", page on node 2 found %v: want only the later one (node 2's) to find the other, with presence (and offer)", i, hereA, hereB)
		}
		// The earlier one hears of the later one as joined, and waits
		// for its offer; the offer gets through.
		a.expectPresence(presenceJoined, map[string]bool{"*": true})
		offer := b.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0 later", ControllerID: room})
		a.expectBytes(offer)
		a.ws.Close()
		b.ws.Close()
	}
	// Every round's later join waited once; the earlier never does.
	if got := nodes[1].clusterMetric(t, "room_lookups_waited_total"); got != rounds {
		t.Errorf("node 2's joins waited %v times, want %d: once a round", got, rounds)
	}
	if got := nodes[0].clusterMetric(t, "room_lookups_waited_total"); got != 0 {
		t.Errorf("node 1's joins waited %v times, want 0: they were the earlier ones", got)
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
