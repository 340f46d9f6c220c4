package signal

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"icebox/internal/testenv"
)

// A pairing of two, one member on each node, while NATS is stopped: each
// node, after node_timeout, takes the other for gone and admits a second
// member of its own (all its members are local). NATS restarts; the nodes
// meet again and the pairing has four members for a capacity of two. The
// two later joiners, one per node, get 4005 and close 1008, as a third
// joiner would; the first two keep talking across nodes.
func TestClusterPartitionHeal(t *testing.T) {
	nats := testenv.StartNATS(t, natsToken)
	nodes := startNodes(t, nats, 2)
	a1 := join(t, nodes[0].url("controllerId=heal"))
	b1 := join(t, nodes[1].url("controllerId=heal"))
	waitFor(t, 5*time.Second, "each node to know the other's member", func() bool {
		return nodes[0].node.Members("heal") == 1 && nodes[1].node.Members("heal") == 1
	})

	nats.Stop()
	for _, n := range nodes {
		waitFor(t, 10*time.Second, "each node to take the other for gone", func() bool {
			return n.node.Ready() != nil && n.node.Members("heal") == 0 && n.node.Peers() == 0
		})
	}
	a2 := join(t, nodes[0].url("controllerId=heal"))
	b2 := join(t, nodes[1].url("controllerId=heal"))

	nats.Start()
	waitBack(t, nodes)
	for _, later := range []*ktClient{a2, b2} {
		later.expectError(errRoomFull)
		later.expectClose(websocket.ClosePolicyViolation)
	}
	waitFor(t, 10*time.Second, "each node to see one member on the other", func() bool {
		return nodes[0].node.Members("heal") == 1 && nodes[1].node.Members("heal") == 1
	})
	o := a1.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0 a1", ControllerID: "heal"})
	b1.expectBytes(o)
	a := b1.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "v=0 b1"})
	a1.expectBytes(a)
}
