package signal

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/credentials"
	"icebox/internal/ktapp"
	"icebox/internal/testenv"
	"icebox/stunsrv"
	"icebox/turnsrv"
)

// startTURN runs icebox's own STUN and TURN on 127.0.0.1, wired as the
// daemon wires them: TURN on the STUN port's sockets, REST credentials from
// secret, the default peer policy (relay-to-relay on the relay address is
// what lets two relay-only peers meet). adjust, if given, changes the TURN
// config first. reg holds its metrics.
func startTURN(t *testing.T, secret []byte, adjust ...func(*turnsrv.Config)) (addr string, reg *prometheus.Registry) {
	t.Helper()
	stunCfg := stunsrv.DefaultConfig()
	stunCfg.Listen = []string{"127.0.0.1:0"}
	st, err := stunsrv.New(stunCfg, stunsrv.Options{Passthrough: true, TURNIdleTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	turnCfg := turnsrv.DefaultConfig()
	turnCfg.Secrets = []string{string(secret)}
	turnCfg.Relay.Address = "127.0.0.1"
	for _, f := range adjust {
		f(&turnCfg)
	}
	reg = prometheus.NewRegistry()
	turnSrv, err := turnsrv.New(turnCfg, turnsrv.Options{
		Registerer:  reg,
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
	return st.PacketConns()[0].LocalAddr().String(), reg
}

// TestEndToEnd: the talk's app and a device built from the talk
// (ktapp's pion/webrtc peers) pair through /connect exactly as the app
// does, configure ICE only from the WsIceServers they got, connect
// relay-only through icebox's own TURN (turnsrv on stunsrv's sockets), and
// the app's single-byte commands arrive on the device's "input" channel.
// Everything stays on 127.0.0.1.
func TestEndToEnd(t *testing.T) {
	secret := []byte("turn-rest-secret-0123")
	turnAddr, turnMetrics := startTURN(t, secret)
	ice := func(user string) ([]ICEServer, time.Time) {
		u, c, exp := credentials.Mint(secret, user, 10*time.Minute, time.Now())
		return []ICEServer{
			{URLs: []string{"stun:" + turnAddr}},
			{URLs: []string{"turn:" + turnAddr + "?transport=udp"}, Username: u, Credential: c},
		}, exp
	}
	ts := startServer(t, testConfig(), Options{ICEServers: ice})

	device := ktapp.Device(t, ts.url("controllerId=tv-42"), "tv-42")
	controller := ktapp.App(t, ts.url(""), "tv-42")
	timeout := time.After(30 * time.Second)
	waitInputOpen(t, controller, device, timeout)
	// key + state*128, as the app's sendCommand encodes them.
	sent := [][2]int{{3, 0}, {3, 1}, {7, 1}}
	for _, c := range sent {
		if err := controller.Send(c[0], c[1]); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range sent {
		select {
		case got := <-device.Commands:
			if want := byte(c[0] + 128*c[1]); got != want {
				t.Fatalf("command %d: got %#x, want %#x", i, got, want)
			}
		case err := <-controller.Errs:
			t.Fatal(err)
		case err := <-device.Errs:
			t.Fatal(err)
		case <-timeout:
			t.Fatalf("command %d did not arrive", i)
		}
	}
	// Through the relay: each side sends from its own relay address (the
	// remote end may show as prflx when a check beats its candidate).
	for _, p := range []*ktapp.Peer{controller, device} {
		if pair := p.SelectedPair(); pair == nil || pair.Local.Typ != webrtc.ICECandidateTypeRelay {
			t.Errorf("selected pair %s, want it to leave through icebox's relay", pair)
		}
	}
	if n := testenv.GatherValue(t, turnMetrics, "icebox_turn_allocations_active"); n < 2 {
		t.Errorf("icebox's TURN holds %v allocations, want one per peer", n)
	}
	if n := testenv.MetricValue(t, ts.cm.framesOut[kindCandidates]); n < 2 {
		t.Errorf("%v candidate frames relayed, want trickle from both sides", n)
	}
}

// waitInputOpen waits for the app's "input" channel to open, failing on
// either peer's error or at timeout.
func waitInputOpen(t *testing.T, controller, device *ktapp.Peer, timeout <-chan time.Time) {
	t.Helper()
	select {
	case <-controller.Open:
	case err := <-controller.Errs:
		t.Fatal(err)
	case err := <-device.Errs:
		t.Fatal(err)
	case <-timeout:
		t.Fatal("the app's input channel did not open")
	}
}
