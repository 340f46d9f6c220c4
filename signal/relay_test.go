package signal

import (
	"reflect"
	"testing"

	"icebox/internal/testenv"
)

// TestKotlinApp runs the talk's call setup: the controller app sends
// WsInit "", gets icebox's ICE servers, offers with its controllerId and
// trickles candidates; the device, which named the pairing in its URL,
// answers. Every frame arrives byte for byte, and only the app's kinds and
// keys ever reach either side.
func TestKotlinApp(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})

	device := dialKt(t, ts.url("controllerId=tv-42"), nil)
	device.send("WsInit", "")
	_, v := device.expect("WsIceServers")
	want, _ := testICE("")
	got := v.(*wsIceServersData).IceServers
	if len(got) != len(want) || !reflect.DeepEqual(got[0].URLs, want[0].URLs) || !reflect.DeepEqual(got[1].URLs, want[1].URLs) {
		t.Fatalf("ICE servers = %+v, want %+v", got, want)
	}
	if got[1].Username == "" || got[1].Credential == "" || got[0].Username != "" {
		t.Fatalf("credentials = %+v", got)
	}

	controller := join(t, ts.url(""))
	o := controller.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", ControllerID: "tv-42"})
	device.expectBytes(o)
	c1 := controller.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "tv-42", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ relay", SDPMid: ptr("0")}}})
	device.expectBytes(c1)

	a := device.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "v=0\r\n"})
	controller.expectBytes(a)
	c2 := device.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "tv-42", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:2 1 udp 1 127.0.0.1 5001 typ relay", SDPMLineIndex: 0, SDPMid: ptr("0")}}})
	controller.expectBytes(c2)
	// The Kotlin app's sdpMid may be null, and escapes must survive.
	raw := []byte(`{"id":"WsIceCandidates","data":"{\"controllerId\":\"tv-42\",\"iceCandidates\":[{\"candidate\":\"candidate:3 \\u00e9\",\"sdpMLineIndex\":1,\"sdpMid\":null}]}"}`)
	controller.sendRaw(1, raw)
	msg, _, _ := device.read()
	if string(msg) != string(raw) {
		t.Fatalf("forwarded %s, want %s", msg, raw)
	}
}

// TestLateJoiner: the app offers as soon as it has its ICE servers, often
// before the device is there. The device gets WsIceServers first, then
// what was sent while the controller was alone, in order.
func TestLateJoiner(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	controller := join(t, ts.url(""))
	o := controller.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0", ControllerID: "room"})
	c := controller.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "room", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:1"}}})
	controller.send("WsInit", "")
	controller.expectError(errDuplicateInit) // the offer has been handled

	device := dialKt(t, ts.url("room=room"), nil)
	device.send("WsInit", "")
	device.expect("WsIceServers")
	device.expectBytes(o)
	device.expectBytes(c)
	a := device.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "v=0"})
	controller.expectBytes(a)
}

// TestRoomIsolation: frames never cross pairings. Each receiver's next
// frame after the foreign one was sent is a marker from its own pairing.
func TestRoomIsolation(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	aDev := join(t, ts.url("controllerId=a"))
	bDev := join(t, ts.url("controllerId=b"))
	aCtl := join(t, ts.url("controllerId=a"))
	bCtl := join(t, ts.url("controllerId=b"))

	oa := aCtl.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "for a", ControllerID: "a"})
	ob := bCtl.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "for b", ControllerID: "b"})
	aDev.expectBytes(oa)
	bDev.expectBytes(ob)
	mb := bCtl.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "b", IceCandidates: []wsIceCandidateData{}})
	bDev.expectBytes(mb)

	// A frame naming another pairing is refused, not delivered there.
	aCtl.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "sneak", ControllerID: "b"})
	aCtl.expectError(errWrongPairing)
	mb = bCtl.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "marker"})
	bDev.expectBytes(mb)
}

// TestOpenRoom: with open_room, clients naming no pairing see each other,
// as on the talk's server; named pairings stay apart from them.
func TestOpenRoom(t *testing.T) {
	cfg := testConfig()
	cfg.OpenRoom = true
	ts := startServer(t, cfg, Options{})
	x := join(t, ts.url(""))
	y := join(t, ts.url(""))
	z := join(t, ts.url(""))
	named := join(t, ts.url("controllerId=private"))
	o := x.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "hello", ControllerID: "anything"})
	y.expectBytes(o)
	z.expectBytes(o)
	m := named.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "mine", ControllerID: "private"})
	a := join(t, ts.url("controllerId=private"))
	a.expectBytes(m) // the private room's backlog, not x's offer
}

// TestNoPairing: without open_room, a client must name its pairing before
// anything is forwarded; its first frame with a controllerId does.
func TestNoPairing(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	dev := join(t, ts.url("controllerId=r"))
	ctl := join(t, ts.url(""))
	ctl.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "x"})
	ctl.expectError(errNoPairing)
	o := ctl.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "y", ControllerID: "r"})
	dev.expectBytes(o)
	a := dev.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "z"})
	ctl.expectBytes(a)
}

// TestControllerIDInInit: the pairing may come from WsInit's data.
func TestControllerIDInInit(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	dev := dialKt(t, ts.url(""), nil)
	dev.send("WsInit", wsInitData{ControllerID: "r"})
	dev.expect("WsIceServers")
	ctl := join(t, ts.url(""))
	o := ctl.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "y", ControllerID: "r"})
	dev.expectBytes(o)

	// The URL wins over WsInit; the mismatch is pointed out.
	other := dialKt(t, ts.url("controllerId=q"), nil)
	other.send("WsInit", wsInitData{ControllerID: "r"})
	other.expect("WsIceServers")
	other.expectError(errWrongPairing)
}

// TestCapacity: a pairing holds room_capacity members; one more gets
// WsError room_full and close 1008, and a seat freed is taken again.
func TestCapacity(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	a := join(t, ts.url("room=r"))
	b := join(t, ts.url("room=r"))
	c := dialKt(t, ts.url("room=r"), nil)
	c.send("WsInit", "")
	c.expectError(errRoomFull)
	c.expectClose(1008)

	// A duplicate joiner reaching the room through its first frame is
	// refused the same way.
	d := join(t, ts.url(""))
	d.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "y", ControllerID: "r"})
	d.expectError(errRoomFull)
	d.expectClose(1008)

	b.ws.Close()
	e := dialKt(t, ts.url("room=r"), nil)
	eventually(t, "b to leave", func() bool { return testenv.MetricValue(t, ts.cm.active) == 2 })
	e.send("WsInit", "")
	e.expect("WsIceServers")
	o := a.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "again", ControllerID: "r"})
	e.expectBytes(o)

	cfg := testConfig()
	cfg.RoomCapacity = 3
	if err := ts.reload(cfg); err != nil {
		t.Fatal(err)
	}
	f := join(t, ts.url("room=r"))
	o = a.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "three", ControllerID: "r"})
	e.expectBytes(o)
	f.expectBytes(o)
}

// TestPeerLeavesMidCall: the remaining member stays; what it sends while
// alone goes to whoever takes the free seat, and nothing the leaver left
// behind does.
func TestPeerLeavesMidCall(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	ctl := join(t, ts.url("room=r"))
	dev := join(t, ts.url("room=r"))
	o := ctl.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "1", ControllerID: "r"})
	dev.expectBytes(o)
	dev.ws.Close()
	eventually(t, "device to leave", func() bool { return testenv.MetricValue(t, ts.cm.active) == 1 })

	c := ctl.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "r", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:late"}}})
	dev2 := join(t, ts.url("room=r"))
	dev2.expectBytes(c)

	// A lone sender that leaves takes its backlog with it.
	lone := join(t, ts.url("room=s"))
	lone.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "stale", ControllerID: "s"})
	lone.send("WsInit", "")
	lone.expectError(errDuplicateInit)
	lone.ws.Close()
	eventually(t, "lone sender to leave", func() bool { return testenv.MetricValue(t, ts.hub.active) == 1 })
	first := join(t, ts.url("room=s"))
	second := join(t, ts.url("room=s"))
	m := second.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "fresh"})
	first.expectBytes(m)
}
