package signal

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// wsPresenceData is WsPresence's data as a page decodes it.
type wsPresenceData struct {
	Event string `json:"event"`
	Peers []struct {
		ID       string `json:"id"`
		Presence bool   `json:"presence"`
	} `json:"peers"`
}

// pageClient is a client that opted in to presence, as icebox's page does:
// it decodes WsPresence as strictly as the app decodes its own kinds.
type pageClient struct{ *ktClient }

func joinPage(t *testing.T, url string) *pageClient {
	t.Helper()
	p := &pageClient{dialKt(t, url, nil)}
	p.send("WsInit", wsInitData{Presence: true})
	p.expect("WsIceServers")
	return p
}

// presence reads the next frame, which must be WsPresence, and returns
// its event and its peers as id=presence pairs.
func (p *pageClient) presence() (string, map[string]bool) {
	p.t.Helper()
	p.ws.SetReadDeadline(time.Now().Add(readTimeout))
	_, msg, err := p.ws.ReadMessage()
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	var pkt wsPacket
	var d wsPresenceData
	if err := strictDecode(msg, &pkt); err != nil || pkt.ID != "WsPresence" {
		p.t.Fatalf("got %s (%v), want WsPresence", msg, err)
	}
	if err := strictDecode([]byte(pkt.Data), &d); err != nil {
		p.t.Fatalf("WsPresence data: %v", err)
	}
	peers := map[string]bool{}
	for _, x := range d.Peers {
		if x.ID == "" {
			p.t.Fatalf("peer without id in %s", msg)
		}
		peers[x.ID] = x.Presence
	}
	return d.Event, peers
}

func (p *pageClient) expectPresence(event string, peers map[string]bool) map[string]bool {
	p.t.Helper()
	e, got := p.presence()
	if e != event || len(got) != len(peers) {
		p.t.Fatalf("got WsPresence %s %v, want %s with %d peers", e, got, event, len(peers))
	}
	for id, pres := range peers {
		if id == "*" { // any one id
			for _, g := range got {
				if g != pres {
					p.t.Fatalf("got WsPresence %s %v, want presence %v", e, got, pres)
				}
			}
			continue
		}
		if got[id] != pres {
			p.t.Fatalf("got WsPresence %s %v, want %v", e, got, peers)
		}
	}
	return got
}

// idOf returns the only key of m.
func idOf(m map[string]bool) string {
	for id := range m {
		return id
	}
	return ""
}

// TestPresence: a page that opts in learns who is in its pairing when it
// joins, and who joins and leaves after; a page peer and the app are told
// apart. The app, which did not opt in, never gets a WsPresence: every
// frame it reads passes its strict decoder.
func TestPresence(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	page := joinPage(t, ts.url("room=tv"))
	page.expectPresence(presenceHere, nil)

	// The app joins through its offer: the page hears of it first.
	app := join(t, ts.url(""))
	o := app.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0", ControllerID: "tv"})
	appID := idOf(page.expectPresence(presenceJoined, map[string]bool{"*": false}))
	page.expectBytes(o)
	a := page.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "v=0", ControllerID: "tv"})
	app.expectBytes(a) // strictly decoded: no WsPresence came before it

	leaveRoom(t, ts, app, "tv", 1)
	page.expectPresence(presenceLeft, map[string]bool{appID: false})

	// A second page joins: it learns the first is there, and the first
	// learns it joined, with ids that agree.
	page2 := joinPage(t, ts.url("room=tv"))
	first := idOf(page2.expectPresence(presenceHere, map[string]bool{"*": true}))
	second := idOf(page.expectPresence(presenceJoined, map[string]bool{"*": true}))
	if first == second || first == appID {
		t.Errorf("ids %q, %q, %q: want one per connection", appID, first, second)
	}
	leaveRoom(t, ts, page.ktClient, "tv", 1)
	page2.expectPresence(presenceLeft, map[string]bool{first: true})

	// When the app is there first, a page gets the list, then the kept
	// offer, in that order.
	app2 := join(t, ts.url(""))
	o2 := app2.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0 first", ControllerID: "tv2"})
	app2.handled()
	page3 := joinPage(t, ts.url("room=tv2"))
	page3.expectPresence(presenceHere, map[string]bool{"*": false})
	page3.expectBytes(o2)
}

// TestPresenceOptIn: presence comes only to clients that asked for it in
// WsInit (false and null do not), never in the open room, and a client
// may not send WsPresence itself.
func TestPresenceOptIn(t *testing.T) {
	cfg := testConfig()
	cfg.OpenRoom = true
	ts := startServer(t, cfg, Options{})
	for _, data := range []any{"", wsInitData{}, json.RawMessage(`{"presence":false}`), json.RawMessage(`{"presence":null}`)} {
		b, _ := json.Marshal(data)
		if s, ok := data.(string); ok {
			b = []byte(s)
		}
		quiet := dialKt(t, ts.url("room=q"), nil)
		quiet.send("WsInit", string(b))
		quiet.expect("WsIceServers")
		peer := join(t, ts.url("room=q"))
		m := peer.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "marker", ControllerID: "q"})
		quiet.expectBytes(m) // the first frame after WsIceServers: no presence
		leaveRoom(t, ts, peer, "q", 1)
		leaveRoom(t, ts, quiet, "q", 0)
	}

	open := joinPage(t, ts.url(""))
	other := join(t, ts.url(""))
	m := other.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "open", ControllerID: "x"})
	open.expectBytes(m)

	open.send("WsPresence", wsPresenceData{Event: "joined"})
	open.expectError(errForbiddenKind)
}

// TestPresenceFrame pins WsPresence's wire form (docs/protocol.md).
func TestPresenceFrame(t *testing.T) {
	b := mustFrame(kindPresence, presenceData{presenceJoined, []presencePeer{{"ab12", true}}})
	want := `{"id":"WsPresence","data":"{\"event\":\"joined\",\"peers\":[{\"id\":\"ab12\",\"presence\":true}]}"}`
	if string(b) != want {
		t.Errorf("got %s\nwant %s", b, want)
	}
	b = mustFrame(kindPresence, presenceData{presenceHere, []presencePeer{}})
	var pkt wsPacket
	var d wsPresenceData
	if err := strictDecode(b, &pkt); err != nil || strictDecode([]byte(pkt.Data), &d) != nil || !reflect.DeepEqual(d, wsPresenceData{Event: "here", Peers: d.Peers}) || d.Peers == nil {
		t.Errorf("empty list encodes as %s, want peers []", b)
	}
}
