package turnsrv

import (
	"context"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"icebox/internal/testenv"
)

// TestCoturnUclient runs coturn's turnutils_uclient, an independent TURN
// REST client, against icebox: relay-to-relay (which needs the relay
// exception of the peer policy) and to turnutils_peer, over UDP and TCP,
// through channels and Send indications. Every run must lose nothing.
func TestCoturnUclient(t *testing.T) {
	t.Parallel()
	uclient := testenv.Tool(t, "turnutils_uclient", "coturn")
	peerBin := testenv.Tool(t, "turnutils_peer", "coturn")

	cfg := testConfig()
	cfg.Peers.Allow = nil // relay-to-relay runs without opening loopback
	ts := startServer(t, cfg)
	cfgPeer := testConfig() // allows 127.0.0.1 for turnutils_peer
	tsPeer := startServer(t, cfgPeer)

	// turnutils_peer echoes on a UDP port we pick by binding and closing;
	// if another process grabs it meanwhile the run fails loudly.
	peerPort := testenv.FreePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	peer := exec.CommandContext(ctx, peerBin, "-L", "127.0.0.1", "-p", strconv.Itoa(peerPort))
	if err := peer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Process.Kill(); peer.Wait() })

	runs := []struct {
		name string
		ts   *testServer
		args []string
		out  []byte
		err  error
	}{
		{name: "udp relay-to-relay channels", ts: ts, args: []string{"-y"}},
		{name: "udp relay-to-relay send", ts: ts, args: []string{"-y", "-s"}},
		{name: "tcp relay-to-relay", ts: ts, args: []string{"-t", "-y"}},
		{name: "udp echo peer", ts: tsPeer, args: []string{"-e", "127.0.0.1", "-r", strconv.Itoa(peerPort)}},
		{name: "tcp echo peer", ts: tsPeer, args: []string{"-t", "-e", "127.0.0.1", "-r", strconv.Itoa(peerPort)}},
	}
	// uclient spends seconds in its own timers whatever it sends, so all
	// runs go at once (t.Parallel would cap them at GOMAXPROCS).
	var wg sync.WaitGroup
	for i := range runs {
		r := &runs[i]
		port := r.ts.udp.(*net.UDPAddr).Port
		if r.args[0] == "-t" {
			port = r.ts.tcp.(*net.TCPAddr).Port
		}
		r.args = append([]string{"-W", testSecret, "-u", "uclient", "-n", "50", "-l", "120", "-z", "2", "-m", "2", "-c",
			"-p", strconv.Itoa(port)}, r.args...)
		r.args = append(r.args, "127.0.0.1")
		wg.Go(func() { r.out, r.err = exec.CommandContext(ctx, uclient, r.args...).CombinedOutput() })
	}
	wg.Wait()

	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			lost := regexp.MustCompile(`Total lost packets (\d+)`).FindSubmatch(r.out)
			total := regexp.MustCompile(`start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`).FindSubmatch(r.out)
			if r.err != nil || lost == nil || total == nil {
				t.Fatalf("turnutils_uclient %v: %v\n%s", r.args, r.err, r.out)
			}
			if string(lost[1]) != "0" || string(total[1]) != "100" || string(total[2]) != "100" {
				t.Fatalf("sent %s, received %s, lost %s packets; want 100, 100, 0\n%s", total[1], total[2], lost[1], r.out)
			}
		})
	}
}
