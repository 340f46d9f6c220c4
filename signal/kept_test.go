package signal

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"icebox/internal/testenv"
)

// The kept offer (docs/protocol.md, "Kept offer"): what a lone member
// sends to set up a call waits for the next member to join.

// fakeClock is the Now of a server whose kept offers the test ages.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// handled returns once the server has handled every frame k sent before:
// the duplicate WsInit is answered in order, after them.
func (k *ktClient) handled() {
	k.t.Helper()
	k.send("WsInit", "")
	k.expectError(errDuplicateInit)
}

// kept reports what room name keeps now.
func kept(ts *testServer, name string) (frames, size int) {
	ts.hub.mu.Lock()
	defer ts.hub.mu.Unlock()
	r := ts.hub.rooms[name]
	if r == nil {
		return 0, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.backlog), r.backlogBytes
}

// leaveRoom closes k and waits until its room has want members.
func leaveRoom(t *testing.T, ts *testServer, k *ktClient, room string, want int) {
	t.Helper()
	k.ws.Close()
	eventually(t, "the member to leave", func() bool {
		ts.hub.mu.Lock()
		defer ts.hub.mu.Unlock()
		r := ts.hub.rooms[room]
		if r == nil {
			return want == 0
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.members) == want
	})
}

// TestKeptOfferOnce: the app offers alone, its candidates racing its offer
// as they do; the device that joins gets exactly those frames, in order,
// once. The next device to take the seat gets none of them.
func TestKeptOfferOnce(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	app := join(t, ts.url(""))
	c0 := app.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "tv", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:0", SDPMid: ptr("0")}}})
	o := app.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0 app", ControllerID: "tv"})
	c1 := app.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "tv", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:1", SDPMid: ptr("0")}}})
	app.handled()
	if n, size := kept(ts, "tv"); n != 3 || size != len(c0)+len(o)+len(c1) {
		t.Fatalf("kept %d frames, %d bytes; want the 3 frames sent", n, size)
	}
	if got := testenv.MetricValue(t, ts.hub.keptBytes); got != float64(len(c0)+len(o)+len(c1)) {
		t.Errorf("kept_bytes = %v, want %d", got, len(c0)+len(o)+len(c1))
	}

	dev := join(t, ts.url("controllerId=tv"))
	dev.expectBytes(c0)
	dev.expectBytes(o)
	dev.expectBytes(c1)
	a := dev.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "v=0 dev"})
	app.expectBytes(a)
	if n, _ := kept(ts, "tv"); n != 0 || testenv.MetricValue(t, ts.hub.keptBytes) != 0 {
		t.Fatalf("after delivery %d frames still kept, kept_bytes %v", n, testenv.MetricValue(t, ts.hub.keptBytes))
	}

	// The device goes; the next one to come gets nothing the first got.
	leaveRoom(t, ts, dev, "tv", 1)
	dev2 := join(t, ts.url("controllerId=tv"))
	m := app.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "tv", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:marker", SDPMid: ptr("0")}}})
	dev2.expectBytes(m)
}

// TestKeptOfferReplaced: a newer offer from the same sender replaces the
// kept one and the candidates kept with it; candidates sent before the
// first offer went with that offer too.
func TestKeptOfferReplaced(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	page := join(t, ts.url("room=r"))
	page.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "r", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:early"}}})
	page.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "first", ControllerID: "r"})
	page.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "r", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:first"}}})
	o2 := page.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "second", ControllerID: "r"})
	c2 := page.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "r", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:second"}}})
	page.handled()
	if n, size := kept(ts, "r"); n != 2 || size != len(o2)+len(c2) {
		t.Fatalf("kept %d frames, %d bytes; want the second offer and its candidate", n, size)
	}
	dev := join(t, ts.url("room=r"))
	dev.expectBytes(o2)
	dev.expectBytes(c2)
	m := page.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "marker"})
	dev.expectBytes(m)
}

// TestKeptOfferExpires: an offer is kept for keptTTL and no longer; a
// newcomer just before gets it, one just after gets nothing of it, and the
// memory is given back.
func TestKeptOfferExpires(t *testing.T) {
	clock := newFakeClock()
	ts := startServer(t, testConfig(), Options{Now: clock.Now})

	fresh := join(t, ts.url("room=fresh"))
	of := fresh.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "fresh", ControllerID: "fresh"})
	fresh.handled()
	clock.advance(keptTTL - time.Second)
	late := join(t, ts.url("room=fresh"))
	late.expectBytes(of)

	stale := join(t, ts.url("room=stale"))
	stale.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "stale", ControllerID: "stale"})
	stale.handled()
	clock.advance(keptTTL / 2)
	// Candidates kept later go with their offer when it expires.
	stale.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "stale", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:1"}}})
	stale.handled()
	clock.advance(keptTTL / 2)
	tooLate := join(t, ts.url("room=stale"))
	m := stale.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "stale", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:marker"}}})
	tooLate.expectBytes(m)
	if got := testenv.MetricValue(t, ts.hub.keptBytes); got != 0 {
		t.Errorf("kept_bytes = %v after expiry and delivery, want 0", got)
	}

	// Expired frames are also dropped when the sender sends again, so an
	// idle pairing does not hold them until someone joins.
	idle := join(t, ts.url("room=idle"))
	idle.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "old", ControllerID: "idle"})
	idle.handled()
	clock.advance(keptTTL)
	c := idle.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "idle", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:new"}}})
	idle.handled()
	if n, size := kept(ts, "idle"); n != 1 || size != len(c) {
		t.Errorf("kept %d frames, %d bytes; want only the fresh candidate", n, size)
	}
}

// TestKeptNeverCrossesPairings: a kept offer goes to the next member of
// its own pairing only: not to another pairing, not to the open room, and
// what a device answered to a controller that left is not handed to the
// next controller.
func TestKeptNeverCrossesPairings(t *testing.T) {
	cfg := testConfig()
	cfg.OpenRoom = true
	ts := startServer(t, cfg, Options{})
	a := join(t, ts.url("room=a"))
	oa := a.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "for a", ControllerID: "a"})
	a.handled()

	for _, name := range []string{"b", "a-", "A", ""} {
		q := ""
		if name != "" {
			q = "room=" + name
		}
		other := join(t, ts.url(q))
		peer := join(t, ts.url(q))
		m := peer.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "marker", ControllerID: name})
		other.expectBytes(m)
	}
	aDev := join(t, ts.url("room=a"))
	aDev.expectBytes(oa)

	// The device answers a controller that has just left: the answer and
	// the candidates after it are for nobody, and are not kept.
	ctl := join(t, ts.url("room=c"))
	dev := join(t, ts.url("room=c"))
	ctl.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "call", ControllerID: "c"})
	dev.expect("WsSDPOffer")
	leaveRoom(t, ts, ctl, "c", 1)
	dropped := testenv.MetricValue(t, ts.hub.backlogDropped)
	dev.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "for the one who left"})
	dev.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "c", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:old"}}})
	dev.handled()
	if got := testenv.MetricValue(t, ts.hub.backlogDropped) - dropped; got != 2 {
		t.Errorf("backlog_dropped_total rose by %v, want 2", got)
	}
	ctl2 := join(t, ts.url("room=c"))
	m := dev.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "marker", ControllerID: "c"})
	ctl2.expectBytes(m)
}

// TestKeptOfferFlood: an attacker alone in its pairing floods offers and
// candidates as fast as the server reads them. What it keeps stays within
// one offer and the backlog bounds; a legitimate app and device in
// another pairing, the device joining late, call as usual; and the device
// that finally joins the attacker's pairing gets its last offer, once.
func TestKeptOfferFlood(t *testing.T) {
	cfg := testConfig()
	cfg.FramesPerSecond, cfg.FrameBurst = 1e6, 100000
	ts := startServer(t, cfg, Options{})

	app := join(t, ts.url(""))
	o := app.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0 legit", ControllerID: "legit"})

	attacker := join(t, ts.url("room=flood"))
	sdp := strings.Repeat("a=x\r\n", 2000) // 10 kB, as a large real offer
	var last []byte
	for i := range 200 {
		last = attacker.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: sdp + string(rune('a'+i%26)), ControllerID: "flood"})
		if n, _ := kept(ts, "flood"); n > 1 {
			t.Fatalf("after offer %d the pairing keeps %d frames", i, n)
		}
	}
	attacker.handled()
	if n, size := kept(ts, "flood"); n != 1 || size != len(last) {
		t.Fatalf("after 200 offers the pairing keeps %d frames, %d bytes; want the last offer, %d bytes", n, size, len(last))
	}
	// Candidates without end fill the backlog to its bounds, no further.
	dropped := testenv.MetricValue(t, ts.hub.backlogDropped)
	cand := wsIceCandidatesData{ControllerID: "flood", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:" + strings.Repeat("x", 4000)}}}
	for range 200 {
		attacker.send("WsIceCandidates", cand)
	}
	attacker.handled()
	frames, size := kept(ts, "flood")
	maxFrames, maxBytes := backlogLimits(ts.settings())
	if frames > maxFrames || size > maxBytes || testenv.MetricValue(t, ts.hub.backlogDropped) == dropped {
		t.Fatalf("kept %d frames, %d bytes (bounds %d, %d), %v dropped: want the bounds reached and held",
			frames, size, maxFrames, maxBytes, testenv.MetricValue(t, ts.hub.backlogDropped)-dropped)
	}
	if got := testenv.MetricValue(t, ts.hub.keptBytes); got > float64(2*maxBytes) {
		t.Errorf("kept_bytes = %v, more than both pairings' bounds", got)
	}

	// The legitimate pairing works as if nothing happened.
	dev := join(t, ts.url("controllerId=legit"))
	dev.expectBytes(o)
	a := dev.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "v=0 dev"})
	app.expectBytes(a)

	victim := join(t, ts.url("room=flood"))
	first, _, _ := victim.read()
	if !bytes.Equal(first, last) {
		t.Fatalf("the attacker's pairing delivered %.80s..., want its last offer", first)
	}
}
