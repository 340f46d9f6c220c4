package ktapp

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"icebox/internal/testenv"
)

// Peer is one side of a call as the talk's code makes it: a WebSocket to
// /connect and, once WsIceServers came, an RTCPeerConnection built from
// that list alone. It gathers relay candidates only, standing for a phone
// behind a NAT that needs icebox's TURN.
//
// App plays the controller app: it offers once, never answers, and opens
// the "input" channel on stream id 0. Device plays a device built from the
// talk: it answers every offer and never offers. Both decode every frame
// strictly and fail on any kind they do not handle; what fails a Peer
// arrives on Errs.
type Peer struct {
	t    testing.TB
	name string
	room string // the controllerId in the frames it sends
	ws   *websocket.Conn
	app  bool

	// Errs gets what went wrong: a frame the app's decoder refuses, a kind
	// it does not handle, a WsError, a failed WebRTC step.
	Errs chan error
	// Commands gets each byte a device receives on "input".
	Commands chan byte
	// Open is closed when the "input" channel is open on this side.
	Open chan struct{}
	// Connected is closed when the peer connection is connected.
	Connected chan struct{}

	wmu sync.Mutex // pion's callbacks and the reader both send

	mu        sync.Mutex
	pc        *webrtc.PeerConnection
	input     *webrtc.DataChannel
	remoteSet bool
	early     []webrtc.ICECandidateInit // arrived before the remote description
	openOnce  sync.Once
	connOnce  sync.Once
}

// App connects to url, as the talk's app does, and calls the device of
// the pairing controllerID as soon as icebox has sent its ICE servers.
func App(t testing.TB, url, controllerID string) *Peer {
	return start(t, "app", url, controllerID, true)
}

// Device connects to url, which names its pairing (?controllerId=), and
// answers the offers that come.
func Device(t testing.TB, url, controllerID string) *Peer {
	return start(t, "device", url, controllerID, false)
}

func start(t testing.TB, name, url, room string, app bool) *Peer {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	// Ktor's client sends no Origin header; neither does this.
	ws, resp, err := d.Dial(url, http.Header{})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, url, err)
	}
	p := &Peer{
		t: t, name: name, room: room, ws: ws, app: app,
		Errs:      make(chan error, 8),
		Commands:  make(chan byte, 256),
		Open:      make(chan struct{}),
		Connected: make(chan struct{}),
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ws.Close()
		<-done
		p.mu.Lock()
		pc := p.pc
		p.mu.Unlock()
		if pc != nil {
			pc.Close()
		}
	})
	p.send("WsInit", "")
	go func() {
		defer close(done)
		p.readLoop()
	}()
	return p
}

func (p *Peer) fail(err error) {
	select {
	case p.Errs <- fmt.Errorf("%s: %w", p.name, err):
	default:
	}
}

func (p *Peer) send(id string, data any) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := p.ws.WriteMessage(websocket.TextMessage, Frame(id, data)); err != nil {
		p.fail(fmt.Errorf("send %s: %w", id, err))
	}
}

func (p *Peer) readLoop() {
	for {
		_, msg, err := p.ws.ReadMessage()
		if err != nil {
			return // closed by the test, or by the server (Errs tells why)
		}
		pkt, v, err := Decode(msg)
		if err == nil {
			err = p.handle(pkt, v)
		}
		if err != nil {
			p.fail(err)
			return
		}
	}
}

// handle does what the app's (or the device's) code does with each kind.
func (p *Peer) handle(pkt WsPacket, v any) error {
	switch d := v.(type) {
	case *WsIceServersData:
		p.mu.Lock()
		built := p.pc != nil
		p.mu.Unlock()
		if built {
			return nil // a credential refresh: the call is configured
		}
		return p.configure(d)
	case *WsSDPData:
		if pkt.ID == "WsSDPOffer" && p.app {
			return fmt.Errorf("got an offer; the app never answers one: %.60q", d.SDP)
		}
		if pkt.ID == "WsSDPAnswer" && !p.app {
			return errors.New("got an answer; a device never offers")
		}
		return p.remote(pkt.ID, d)
	case *WsIceCandidatesData:
		return p.candidates(d)
	case *WsErrorData:
		return fmt.Errorf("WsError %d %s: the pairing failed", d.Code, d.Message)
	}
	return fmt.Errorf("unexpected %s", pkt.ID)
}

// configure builds the peer connection from icebox's list, as the app's
// createRtcConfiguration does, and for the app makes the offer.
func (p *Peer) configure(d *WsIceServersData) error {
	var servers []webrtc.ICEServer
	for _, s := range d.IceServers {
		servers = append(servers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	pc, err := testenv.LoopbackWebRTC().NewPeerConnection(webrtc.Configuration{
		ICEServers:         servers,
		ICETransportPolicy: webrtc.ICETransportPolicyRelay,
	})
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.pc = pc
	p.mu.Unlock()
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			p.connOnce.Do(func() { close(p.Connected) })
		}
	})
	// Each candidate in its own frame as soon as it is gathered: it may
	// overtake the offer (or answer), as the app's do.
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			return
		}
		ci := c.ToJSON()
		e := WsIceCandidateData{Candidate: ci.Candidate, SDPMid: ci.SDPMid}
		if ci.SDPMLineIndex != nil {
			e.SDPMLineIndex = int(*ci.SDPMLineIndex)
		}
		p.send("WsIceCandidates", WsIceCandidatesData{ControllerID: p.room, IceCandidates: []WsIceCandidateData{e}})
	})
	if !p.app {
		pc.OnDataChannel(func(dc *webrtc.DataChannel) {
			if dc.Label() != "input" {
				p.fail(fmt.Errorf("unexpected channel %q", dc.Label()))
				return
			}
			p.useInput(dc)
			dc.OnMessage(func(m webrtc.DataChannelMessage) {
				for _, b := range m.Data {
					p.Commands <- b
				}
			})
		})
		return nil
	}
	// createDataChannel(label = "input", id = 0, ordered = true, negotiated = false)
	id, ordered, negotiated := uint16(0), true, false
	dc, err := pc.CreateDataChannel("input", &webrtc.DataChannelInit{ID: &id, Ordered: &ordered, Negotiated: &negotiated})
	if err != nil {
		return err
	}
	p.useInput(dc)
	return p.sendLocal(pc, "WsSDPOffer", func() (webrtc.SessionDescription, error) { return pc.CreateOffer(nil) })
}

// sendLocal creates a description, sets it and sends it as kind id.
func (p *Peer) sendLocal(pc *webrtc.PeerConnection, id string, create func() (webrtc.SessionDescription, error)) error {
	d, err := create()
	if err == nil {
		err = pc.SetLocalDescription(d)
	}
	if err != nil {
		return err
	}
	p.send(id, WsSDPData{Type: d.Type.String(), SDP: d.SDP, ControllerID: p.room})
	return nil
}

func (p *Peer) useInput(dc *webrtc.DataChannel) {
	p.mu.Lock()
	p.input = dc
	p.mu.Unlock()
	dc.OnOpen(func() { p.openOnce.Do(func() { close(p.Open) }) })
}

// remote applies an answer (app) or answers an offer (device).
func (p *Peer) remote(id string, d *WsSDPData) error {
	p.mu.Lock()
	pc := p.pc
	p.mu.Unlock()
	if pc == nil {
		return fmt.Errorf("%s before WsIceServers", id)
	}
	typ := webrtc.SDPTypeAnswer
	if id == "WsSDPOffer" {
		typ = webrtc.SDPTypeOffer
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: typ, SDP: d.SDP}); err != nil {
		return fmt.Errorf("setRemoteDescription(%s): %w", typ, err)
	}
	p.mu.Lock()
	p.remoteSet = true
	early := p.early
	p.early = nil
	p.mu.Unlock()
	if err := addCandidates(pc, early); err != nil {
		return err
	}
	if typ == webrtc.SDPTypeAnswer {
		return nil
	}
	return p.sendLocal(pc, "WsSDPAnswer", func() (webrtc.SessionDescription, error) { return pc.CreateAnswer(nil) })
}

// candidates adds the peer's candidates. The app adds them as they come;
// those that overtake the description wait for it here, as libwebrtc
// would refuse them.
func (p *Peer) candidates(d *WsIceCandidatesData) error {
	p.mu.Lock()
	pc, ready := p.pc, p.remoteSet
	var now []webrtc.ICECandidateInit
	for _, c := range d.IceCandidates {
		idx := uint16(c.SDPMLineIndex)
		now = append(now, webrtc.ICECandidateInit{Candidate: c.Candidate, SDPMid: c.SDPMid, SDPMLineIndex: &idx})
	}
	if !ready {
		p.early = append(p.early, now...)
		now = nil
	}
	p.mu.Unlock()
	if pc == nil {
		return errors.New("WsIceCandidates before WsIceServers")
	}
	return addCandidates(pc, now)
}

func addCandidates(pc *webrtc.PeerConnection, list []webrtc.ICECandidateInit) error {
	for _, c := range list {
		if err := pc.AddICECandidate(c); err != nil {
			return fmt.Errorf("addIceCandidate: %w", err)
		}
	}
	return nil
}

// Send sends one command byte on "input", as the app's sendCommand does:
// key + 128 × state. The channel must be open.
func (p *Peer) Send(key, state int) error {
	p.mu.Lock()
	dc := p.input
	p.mu.Unlock()
	if dc == nil {
		return errors.New("no input channel")
	}
	return dc.Send([]byte{byte(key + 128*state)})
}

// InputID is the stream id of the "input" channel, nil before it has one.
func (p *Peer) InputID() *uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.input == nil {
		return nil
	}
	return p.input.ID()
}

// SelectedPair is the candidate pair the connection uses, nil before it
// has one.
func (p *Peer) SelectedPair() *webrtc.ICECandidatePair {
	p.mu.Lock()
	pc := p.pc
	p.mu.Unlock()
	if pc == nil || pc.SCTP() == nil {
		return nil
	}
	pair, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil {
		return nil
	}
	return pair
}

// Close hangs up: the socket and the peer connection.
func (p *Peer) Close() {
	p.ws.Close()
	p.mu.Lock()
	pc := p.pc
	p.mu.Unlock()
	if pc != nil {
		pc.Close()
	}
}
