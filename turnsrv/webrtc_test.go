package turnsrv

import (
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"icebox/internal/testenv"
)

// TestWebRTCRelayOnly connects two pion/webrtc peers that may only use
// relay candidates from icebox and exchanges data-channel messages. Both
// stay on loopback: no mDNS, no interface but lo, no STUN server, so no
// packet leaves the host.
func TestWebRTCRelayOnly(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Peers.Allow = nil // the peers reach each other relay to relay
	ts := startServer(t, cfg)

	newPeer := func(name string) *webrtc.PeerConnection {
		u, p, _ := ts.MintCredential(name, 0)
		pc, err := testenv.LoopbackWebRTC().NewPeerConnection(webrtc.Configuration{
			ICEServers: []webrtc.ICEServer{{
				URLs:       []string{"turn:" + ts.udp.String() + "?transport=udp"},
				Username:   u,
				Credential: p,
			}},
			ICETransportPolicy: webrtc.ICETransportPolicyRelay,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		return pc
	}
	offerer, answerer := newPeer("tv"), newPeer("phone")

	answerer.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(m webrtc.DataChannelMessage) { dc.SendText("pong " + string(m.Data)) })
	})
	dc, err := offerer.CreateDataChannel("control", nil)
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 5
	replies := make(chan string, rounds)
	dc.OnOpen(func() {
		for i := range rounds {
			dc.SendText("ping " + string(rune('0'+i)))
		}
	})
	dc.OnMessage(func(m webrtc.DataChannelMessage) { replies <- string(m.Data) })

	// Non-trickle: each description carries all candidates.
	describe := func(pc *webrtc.PeerConnection, sdp webrtc.SessionDescription, err error) webrtc.SessionDescription {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		gathered := webrtc.GatheringCompletePromise(pc)
		if err := pc.SetLocalDescription(sdp); err != nil {
			t.Fatal(err)
		}
		<-gathered
		return *pc.LocalDescription()
	}
	sdp, err := offerer.CreateOffer(nil)
	offer := describe(offerer, sdp, err)
	if err := answerer.SetRemoteDescription(offer); err != nil {
		t.Fatal(err)
	}
	sdp, err = answerer.CreateAnswer(nil)
	answer := describe(answerer, sdp, err)
	if err := offerer.SetRemoteDescription(answer); err != nil {
		t.Fatal(err)
	}

	timeout := time.After(30 * time.Second)
	for i := range rounds {
		select {
		case got := <-replies:
			if want := "pong ping " + string(rune('0'+i)); got != want {
				t.Fatalf("reply %q, want %q", got, want)
			}
		case <-timeout:
			t.Fatalf("%d of %d replies before the timeout", i, rounds)
		}
	}

	pair, err := offerer.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		t.Fatalf("selected pair: %v, %v", pair, err)
	}
	if pair.Local.Typ != webrtc.ICECandidateTypeRelay || pair.Remote.Typ != webrtc.ICECandidateTypeRelay {
		t.Errorf("selected pair %s, want relay to relay", pair)
	}
	if testenv.MetricValue(t, ts.metrics.allocTotal) < 2 || testenv.MetricValue(t, ts.metrics.toPeerPackets) == 0 {
		t.Error("the server saw no allocations or relayed nothing")
	}
}
