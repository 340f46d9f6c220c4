package signal

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"icebox/internal/testenv"
	"icebox/stunsrv"
	"icebox/turnsrv"
)

// startTURN runs icebox's own STUN and TURN on 127.0.0.1, wired as the
// daemon wires them: TURN on the STUN port's sockets, REST credentials from
// secret, the default peer policy (relay-to-relay on the relay address is
// what lets two relay-only peers meet).
func startTURN(t *testing.T, secret []byte) (addr string, turnSrv *turnsrv.Server) {
	t.Helper()
	stunCfg := stunsrv.DefaultConfig()
	stunCfg.Listen = []string{"127.0.0.1:0"}
	st, err := stunsrv.New(stunCfg, stunsrv.Options{Passthrough: true})
	if err != nil {
		t.Fatal(err)
	}
	turnCfg := turnsrv.DefaultConfig()
	turnCfg.Secrets = []string{string(secret)}
	turnCfg.Relay.Address = "127.0.0.1"
	turnSrv, err = turnsrv.New(turnCfg, turnsrv.Options{
		PublicIP:    netip.MustParseAddr("127.0.0.1"),
		StateDir:    t.TempDir(),
		PacketConns: st.PacketConns(),
		Listeners:   st.Listeners(),
	})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { turnSrv.Close(); st.Close() })
	return st.PacketConns()[0].LocalAddr().String(), turnSrv
}

// TestEndToEnd: a pion/webrtc controller and device pair through
// /connect exactly as the app does, configure ICE only from the
// WsIceServers they got, connect relay-only through icebox's own TURN
// (turnsrv on stunsrv's sockets), and exchange the app's single-byte
// data-channel commands. Everything stays on 127.0.0.1.
func TestEndToEnd(t *testing.T) {
	secret := []byte("turn-rest-secret-0123")
	turnAddr, turnSrv := startTURN(t, secret)
	ice := func(user string) ([]ICEServer, time.Time) {
		u, c, exp := turnsrv.MintCredential(secret, user, 10*time.Minute, time.Now())
		return []ICEServer{
			{URLs: []string{"stun:" + turnAddr}},
			{URLs: []string{"turn:" + turnAddr + "?transport=udp"}, Username: u, Credential: c},
		}, exp
	}
	ts := startServer(t, testConfig(), Options{ICEServers: ice})

	device := newAppPeer(t, ts.url("controllerId=tv-42"), "")
	controller := newAppPeer(t, ts.url(""), "tv-42")

	// The device answers each command byte with the byte + 1.
	commands := make(chan byte, 16)
	device.pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(m webrtc.DataChannelMessage) {
			if len(m.Data) != 1 {
				t.Errorf("command of %d bytes", len(m.Data))
				return
			}
			commands <- m.Data[0]
			dc.Send([]byte{m.Data[0] + 1})
		})
	})
	ordered := true
	dc, err := controller.pc.CreateDataChannel("input", &webrtc.DataChannelInit{Ordered: &ordered})
	if err != nil {
		t.Fatal(err)
	}
	replies := make(chan byte, 16)
	dc.OnMessage(func(m webrtc.DataChannelMessage) { replies <- m.Data[0] })
	// key + state*128, as the app's sendCommand encodes them.
	sent := []byte{3 + 0*128, 3 + 1*128, 7 + 1*128}
	dc.OnOpen(func() {
		for _, b := range sent {
			dc.Send([]byte{b})
		}
	})
	controller.offer()

	timeout := time.After(30 * time.Second)
	for i, want := range sent {
		for _, ch := range []struct {
			c    chan byte
			want byte
		}{{commands, want}, {replies, want + 1}} {
			select {
			case got := <-ch.c:
				if got != ch.want {
					t.Fatalf("message %d: got %#x, want %#x", i, got, ch.want)
				}
			case err := <-controller.errs:
				t.Fatal(err)
			case err := <-device.errs:
				t.Fatal(err)
			case <-timeout:
				t.Fatalf("message %d did not arrive", i)
			}
		}
	}
	pair, err := controller.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		t.Fatalf("selected pair: %v, %v", pair, err)
	}
	if pair.Local.Typ != webrtc.ICECandidateTypeRelay || pair.Remote.Typ != webrtc.ICECandidateTypeRelay {
		t.Errorf("selected pair %s, want relay to relay", pair)
	}
	if n := turnSrv.Allocations(); n < 2 {
		t.Errorf("icebox's TURN holds %d allocations, want one per peer", n)
	}
	if n := testenv.MetricValue(t, ts.cm.framesOut[kindCandidates]); n < 2 {
		t.Errorf("%v candidate frames relayed, want trickle from both sides", n)
	}
}

// appPeer is one side of the app: a WebSocket to /connect and a
// PeerConnection built from the WsIceServers it receives.
type appPeer struct {
	t    *testing.T
	room string // the controllerId the app puts in its frames
	ws   *websocket.Conn
	pc   *webrtc.PeerConnection
	errs chan error

	wmu sync.Mutex // pion's callbacks and the reader both send

	mu         sync.Mutex
	remoteSet  bool
	candidates []webrtc.ICECandidateInit // arrived before the remote description
}

func newAppPeer(t *testing.T, url, room string) *appPeer {
	t.Helper()
	ws, err := dialWS(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	p := &appPeer{t: t, room: room, ws: ws, errs: make(chan error, 4)}
	p.send("WsInit", "")
	ws.SetReadDeadline(time.Now().Add(readTimeout))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Time{})
	pkt, v, err := decodeServerFrame(msg)
	if err != nil || pkt.ID != "WsIceServers" {
		t.Fatalf("first frame %s: %v", msg, err)
	}
	// The app's createRtcConfiguration: nothing but what icebox sent.
	var servers []webrtc.ICEServer
	for _, s := range v.(*wsIceServersData).IceServers {
		servers = append(servers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	p.pc, err = testenv.LoopbackWebRTC().NewPeerConnection(webrtc.Configuration{
		ICEServers:         servers,
		ICETransportPolicy: webrtc.ICETransportPolicyRelay,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.pc.Close() })
	p.pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			return
		}
		ci := c.ToJSON()
		d := wsIceCandidateData{Candidate: ci.Candidate, SDPMid: ci.SDPMid}
		if ci.SDPMLineIndex != nil {
			d.SDPMLineIndex = int(*ci.SDPMLineIndex)
		}
		p.send("WsIceCandidates", wsIceCandidatesData{ControllerID: p.room, IceCandidates: []wsIceCandidateData{d}})
	})
	go p.readLoop()
	return p
}

func (p *appPeer) send(id string, data any) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.ws.SetWriteDeadline(time.Now().Add(readTimeout))
	if err := p.ws.WriteMessage(websocket.TextMessage, frameOf(id, data)); err != nil {
		p.fail(fmt.Errorf("send %s: %w", id, err))
	}
}

func (p *appPeer) fail(err error) {
	select {
	case p.errs <- err:
	default:
	}
}

func (p *appPeer) offer() {
	o, err := p.pc.CreateOffer(nil)
	if err == nil {
		err = p.pc.SetLocalDescription(o)
	}
	if err != nil {
		p.t.Fatal(err)
	}
	p.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: o.SDP, ControllerID: p.room})
}

func (p *appPeer) readLoop() {
	for {
		_, msg, err := p.ws.ReadMessage()
		if err != nil {
			return // the test is over
		}
		pkt, v, err := decodeServerFrame(msg)
		if err != nil {
			p.fail(err)
			return
		}
		if err := p.handle(pkt, v); err != nil {
			p.fail(fmt.Errorf("%s: %w", pkt.ID, err))
			return
		}
	}
}

func (p *appPeer) handle(pkt wsPacket, v any) error {
	switch d := v.(type) {
	case *wsSDPData:
		typ := webrtc.SDPTypeOffer
		if pkt.ID == "WsSDPAnswer" {
			typ = webrtc.SDPTypeAnswer
		}
		if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: typ, SDP: d.SDP}); err != nil {
			return err
		}
		if err := p.flushCandidates(); err != nil {
			return err
		}
		if typ == webrtc.SDPTypeOffer {
			a, err := p.pc.CreateAnswer(nil)
			if err == nil {
				err = p.pc.SetLocalDescription(a)
			}
			if err != nil {
				return err
			}
			p.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: a.SDP})
		}
	case *wsIceCandidatesData:
		p.mu.Lock()
		for _, c := range d.IceCandidates {
			idx := uint16(c.SDPMLineIndex)
			p.candidates = append(p.candidates, webrtc.ICECandidateInit{Candidate: c.Candidate, SDPMid: c.SDPMid, SDPMLineIndex: &idx})
		}
		ready := p.remoteSet
		p.mu.Unlock()
		if ready {
			return p.flushCandidates()
		}
	case *wsErrorData:
		return fmt.Errorf("WsError %d %s", d.Code, d.Message)
	case *wsIceServersData:
		// A credential refresh; the call is already configured.
	}
	return nil
}

// flushCandidates adds the candidates that arrived early: the app trickles
// them from the moment it has a local description, so they can overtake
// the SDP that announces them.
func (p *appPeer) flushCandidates() error {
	p.mu.Lock()
	p.remoteSet = true
	cands := p.candidates
	p.candidates = nil
	p.mu.Unlock()
	for _, c := range cands {
		if err := p.pc.AddICECandidate(c); err != nil {
			return err
		}
	}
	return nil
}
