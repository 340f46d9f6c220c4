package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"icebox/internal/credentials"
	"icebox/internal/testenv"
)

// scrape returns the value of one exact series from /metrics, 0 if absent.
func scrape(t *testing.T, admin, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestMetricsCountRealTraffic drives known traffic through every part and
// checks the counters moved by exactly that much.
func TestMetricsCountRealTraffic(t *testing.T) {
	cfg := testConfig(t)
	cfg.TURN.Secrets = []string{"metrics-secret-0123456789"}
	d, _ := startDaemon(t, cfg)
	admin := d.admin.addr()
	stunAddr := d.stun.PacketConns()[0].LocalAddr().String()

	// STUN: 5 Bindings and 3 malformed datagrams from one socket.
	c, _ := net.Dial("udp4", stunAddr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	for range 3 {
		c.Write([]byte("junk"))
	}
	buf := make([]byte, 1500)
	for range 5 {
		c.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	answered := `icebox_stun_requests_total{family="ipv4",outcome="answered",transport="udp"}`
	if got := scrape(t, admin, answered); got != 5 {
		t.Errorf("%s = %v, want 5", answered, got)
	}
	if got := scrape(t, admin, `icebox_stun_requests_total{family="ipv4",outcome="malformed",transport="udp"}`); got != 3 {
		t.Errorf("malformed = %v, want 3", got)
	}

	// TURN: two allocations relaying 4 packets one way.
	u, p, _ := credentials.Mint([]byte(cfg.TURN.Secrets[0]), "m", time.Hour, time.Now())
	_, a, err := allocate(t, stunAddr, u, p)
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := allocate(t, stunAddr, u, p)
	if err != nil {
		t.Fatal(err)
	}
	if got := scrape(t, admin, "icebox_turn_allocations_total"); got != 2 {
		t.Errorf("allocations_total = %v, want 2", got)
	}
	if got := scrape(t, admin, "icebox_turn_allocations_active"); got != 2 {
		t.Errorf("allocations_active = %v, want 2", got)
	}
	toPeer := `icebox_turn_relayed_packets_total{direction="to_peer"}`
	before := scrape(t, admin, toPeer)
	for i := range 4 {
		relayOnce(t, a, b, "packet "+strconv.Itoa(i))
	}
	// Each relayOnce relays b's permission-opening "hello" and the packet.
	// The hello travels on its own and may still be on its way when a's
	// packet has arrived: wait for the count, then check it is exact.
	testenv.WaitFor(t, 5*time.Second, toPeer+" to grow by 8", func() bool { return scrape(t, admin, toPeer)-before >= 8 })
	if got := scrape(t, admin, toPeer) - before; got != 8 {
		t.Errorf("%s grew by %v, want 8", toPeer, got)
	}
	if got := scrape(t, admin, `icebox_turn_auth_failures_total{reason="bad_mac"}`); got != 0 {
		t.Errorf("auth failures before any bad credential: %v", got)
	}
	if _, _, err := allocate(t, stunAddr, u, "wrong"); err == nil {
		t.Fatal("wrong password allocated")
	}
	if got := scrape(t, admin, `icebox_turn_auth_failures_total{reason="bad_mac"}`); got != 1 {
		t.Errorf("auth failures = %v, want 1", got)
	}

	// Signaling: a pair, one offer forwarded, one bad frame.
	controller, device := dialWS(t, d.signal.addr(), "tv-42"), dialWS(t, d.signal.addr(), "tv-42")
	forwardOnce(t, controller, device, "v=0")
	if got := scrape(t, admin, "icebox_signal_connections"); got != 2 {
		t.Errorf("signal connections = %v, want 2", got)
	}
	if got := scrape(t, admin, `icebox_signal_frames_received_total{kind="WsSDPOffer"}`); got != 1 {
		t.Errorf("offers received = %v, want 1", got)
	}
	for _, want := range []string{"icebox_signal_rooms 1", `icebox_signal_frames_received_total{kind="WsInit"} 2`} {
		series, value, _ := strings.Cut(want, " ")
		if got := strconv.FormatFloat(scrape(t, admin, series), 'f', -1, 64); got != value {
			t.Errorf("%s = %s, want %s", series, got, value)
		}
	}
}

// The daemon must not carry test-only dependencies, nor text/template or
// html/template: their reflection keeps every exported method in the
// binary (3 MB more, measured when the web pages briefly used
// html/template), and icebox is meant for small edge boxes.
func TestDaemonDoesNotLinkTestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/pion/webrtc") || strings.HasPrefix(dep, "github.com/chromedp") ||
			strings.HasPrefix(dep, "github.com/letsencrypt/pebble") || dep == "icebox/internal/testenv" ||
			dep == "text/template" || dep == "html/template" {
			t.Errorf("cmd/icebox links %s", dep)
		}
	}
}

// TestPortInUse: a taken admin, signaling or shared TLS port stops
// start-up with the same kind of hint as a taken STUN port: which key
// to change, who may hold the port and how to see.
func TestPortInUse(t *testing.T) {
	for _, tc := range []struct {
		key string
		set func(*Config, string)
	}{
		{"admin.listen", func(c *Config, a string) { c.Admin.Listen = a }},
		{"signal.listen", func(c *Config, a string) { c.Signal.Listen = a }},
		{"tls.listen", func(c *Config, a string) { *c, _ = sharedPortConfig(t); c.TLS.Listen = a }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			taken, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			cfg := testConfig(t)
			tc.set(&cfg, taken.Addr().String())
			_, port, _ := net.SplitHostPort(taken.Addr().String())
			d, err := start(cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				d.close(context.Background())
			}
			if err == nil || !strings.Contains(err.Error(), tc.key+": tcp port "+port+" is already in use") ||
				!strings.Contains(err.Error(), "ss -tlnp 'sport = :"+port+"'") || !strings.Contains(err.Error(), "set "+tc.key+" to another address") {
				t.Errorf("start with %s taken: %v", tc.key, err)
			}
		})
	}
}
