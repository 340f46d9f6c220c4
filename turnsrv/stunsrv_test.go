package turnsrv

import (
	"net"
	"testing"
	"time"

	"icebox/stunsrv"
)

// TestBehindSTUNServer serves TURN on stunsrv's sockets, as main wires
// them: Binding is answered by stunsrv, everything else reaches pion.
func TestBehindSTUNServer(t *testing.T) {
	t.Parallel()
	scfg := stunsrv.DefaultConfig()
	scfg.Listen = []string{"127.0.0.1:0"}
	scfg.TCP = true
	scfg.Sockets = 1
	stun, err := stunsrv.New(scfg, stunsrv.Options{Passthrough: true, TURNIdleTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stun.Close() })
	pcs, lns := stun.PacketConns(), stun.Listeners()
	if len(pcs) != 1 || len(lns) != 1 {
		t.Fatalf("stunsrv gave %d UDP sockets and %d listeners", len(pcs), len(lns))
	}
	ts := startServer(t, testConfig(), func(o *Options) { o.PacketConns, o.Listeners = pcs, lns })
	ts.udp, ts.tcp = pcs[0].LocalAddr(), lns[0].Addr()
	echo := udpEcho(t)

	for _, network := range []string{"udp", "tcp"} {
		u, p, _ := ts.MintCredential("stun-"+network, 0)
		client, _ := dialTURN(t, network, ts.addr(network), u, p)
		mapped, err := client.SendBindingRequest()
		if err != nil {
			t.Fatalf("%s binding: %v", network, err)
		}
		if ip := mapped.(*net.UDPAddr).IP; !ip.IsLoopback() {
			t.Errorf("%s binding: mapped address %v", network, mapped)
		}
		relay, err := client.Allocate()
		if err != nil {
			t.Fatalf("%s allocate: %v", network, err)
		}
		echoOnce(t, relay, echo, "through stunsrv over "+network)
		relay.Close()
	}
}
