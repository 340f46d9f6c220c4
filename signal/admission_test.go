package signal

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"icebox/internal/ipclass"
	"icebox/internal/testenv"
)

// TestTURNUser: the credentials icebox mints name a user TURN's per-user
// quota can count: the pairing (the same for every member and every
// reconnection), or the source address for connections that name none,
// never a fresh random name per connection.
func TestTURNUser(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	user := func(query string) string {
		t.Helper()
		k := dialKt(t, ts.url(query), nil)
		k.send("WsInit", "")
		_, v := k.expect("WsIceServers")
		for _, sv := range v.(*wsIceServersData).IceServers {
			if sv.Username != "" {
				_, u, _ := strings.Cut(sv.Username, ":")
				return u
			}
		}
		t.Fatal("no TURN credential")
		return ""
	}
	a, b := user("room=tv-42"), user("room=tv-42")
	if a != "pair-tv-42" || b != a {
		t.Errorf("members of tv-42 got users %q and %q, want pair-tv-42 for both", a, b)
	}
	if u := user(""); u != "addr-127.0.0.1" {
		t.Errorf("a connection naming no pairing got user %q, want addr-127.0.0.1", u)
	}
	long := strings.Repeat("x", 200)
	if u := user("room=" + long); strings.Contains(u, long) || len(u) > 5+maxTURNUser || u != user("room="+long) {
		t.Errorf("a 200-byte pairing got user %q", u)
	}
}

// TestFairShareConns: two addresses opening all the WebSockets they can
// no longer fill max_conns between them: a third address still gets in.
// Before, max_conns_per_ip alone let 160 addresses take all 10,000.
func TestFairShareConns(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConns, cfg.MaxConnsPerIP = 40, 32
	ts := startServer(t, cfg, Options{})
	dialFrom := func(ip string) (*websocket.Conn, error) {
		d := websocket.Dialer{HandshakeTimeout: readTimeout,
			NetDialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}
		ws, resp, err := d.Dial(ts.url(""), nil)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			t.Skipf("%s unusable: %v", ip, err)
		}
		t.Cleanup(func() { ws.Close() })
		return ws, nil
	}
	// A refused connection gets WsError busy at once; an admitted one
	// answers WsInit.
	admitted := func(ws *websocket.Conn) bool {
		ws.SetReadDeadline(time.Now().Add(readTimeout))
		ws.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`))
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(string(msg), "WsIceServers")
	}
	held := 0
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		for range cfg.MaxConnsPerIP {
			ws, _ := dialFrom(ip)
			if !admitted(ws) {
				break
			}
			held++
		}
	}
	if ws, _ := dialFrom("127.0.0.4"); !admitted(ws) {
		t.Fatalf("after two addresses took %d of %d connections, a third was refused", held, cfg.MaxConns)
	}
	t.Logf("two grabbing addresses hold %d of %d", held, cfg.MaxConns)
}

// TestOpenRoomBudget: the open room takes open_room_capacity members, and
// a member's burst is cut at its fan-out budget (frame size × others) with
// WsError 4004, where before 2,000 members turned one member's 3.6 MB
// into 2.9 GB out.
func TestOpenRoomBudget(t *testing.T) {
	cfg := testConfig()
	cfg.OpenRoom = true
	cfg.OpenRoomCapacity = 5
	cfg.OpenRoomFanout = 10 << 10 // 40 KiB burst
	cfg.FrameBurst, cfg.FramesPerSecond = 1000, 1000
	ts := startServer(t, cfg, Options{})
	members := make([]*ktClient, cfg.OpenRoomCapacity)
	for i := range members {
		members[i] = join(t, ts.url(""))
	}
	full := dialKt(t, ts.url(""), nil)
	full.send("WsInit", "")
	full.expectError(errRoomFull)

	// 4 KiB offers to 4 others: 16 KiB each, so the 40 KiB burst passes
	// two and refuses the third.
	sdp := strings.Repeat("a", 4<<10)
	sender := members[0]
	for range 2 {
		o := sender.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: sdp, ControllerID: "x"})
		for _, m := range members[1:] {
			m.expectBytes(o)
		}
	}
	sender.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: sdp, ControllerID: "x"})
	sender.expectError(errRateLimited)
	// The others were not sent it: the next frame they get is a small one.
	small := members[1].send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "small"})
	members[2].expectBytes(small)
}

// TestSilentTCPConnectionsAreBounded: one address opening TCP connections
// that never send a request (each would hold a goroutine and buffers
// until read_header_timeout) gets max_conns_per_ip plus a browser's page
// connections of them; the next is
// closed at once, while a client from another address joins and gets its
// ICE servers. Before, nothing bounded them.
func TestSilentTCPConnectionsAreBounded(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[withTLS], func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxConnsPerIP = 8
			var opts Options
			legit := websocket.Dialer{HandshakeTimeout: readTimeout}
			if withTLS { // silent connections wait in the TLS sniffer, before net/http
				opts.GetCertificate = testenv.SelfSigned(t)
				legit.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
			}
			ts := startServer(t, cfg, opts)
			dialFrom := func(ip string) net.Conn {
				c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).Dial("tcp4", ts.addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			for range cfg.MaxConnsPerIP + browserConns {
				dialFrom("127.0.0.2")
			}
			over := dialFrom("127.0.0.2")
			over.SetReadDeadline(time.Now().Add(readTimeout))
			if _, err := over.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("connection past max_conns_per_ip + browserConns: %v, want closed", err)
			}
			// Closed by the cap (counted before the close), not by a
			// timeout; counted apart from refused upgrades.
			if got := testenv.MetricValue(t, ts.cm.refusedConnect); got != 1 {
				t.Errorf("%v connections refused at connect, want 1", got)
			}
			if got := testenv.MetricValue(t, ts.cm.refusedUpgrade); got != 0 {
				t.Errorf("%v upgrades refused, want 0", got)
			}
			scheme := map[bool]string{false: "ws", true: "wss"}[withTLS]
			ws, _, err := legit.Dial(scheme+"://"+ts.addr+"/connect?controllerId=legit", nil) // from 127.0.0.1
			if err != nil {
				t.Fatal(err)
			}
			k := &ktClient{t: t, ws: ws}
			t.Cleanup(func() { ws.Close() })
			k.send("WsInit", "")
			k.expect("WsIceServers")
		})
	}
}

// TestConnectionPlacesComeBack: with one WebSocket and eight other
// connections allowed per address, an address that connects and leaves
// many times over, by WebSocket and by plain requests that close their
// connection, is never refused: every place taken is given back, over
// plain HTTP and through the TLS sniffer.
func TestConnectionPlacesComeBack(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[withTLS], func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxConnsPerIP = 1
			opts, dialer, scheme := Options{}, websocket.Dialer{HandshakeTimeout: readTimeout}, "ws"
			transport := &http.Transport{DisableKeepAlives: true}
			if withTLS {
				opts.GetCertificate = testenv.SelfSigned(t)
				dialer.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
				transport.TLSClientConfig = dialer.TLSClientConfig
				scheme = "wss"
			}
			ts := startServer(t, cfg, opts)
			hc := &http.Client{Transport: transport}
			for i := range 2 * (1 + browserConns) {
				ws, _, err := dialer.Dial(scheme+"://"+ts.addr+"/connect?controllerId=again", nil)
				if err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				k := &ktClient{t: t, ws: ws}
				k.send("WsInit", "")
				k.expect("WsIceServers")
				ws.Close()
				resp, err := hc.Get(map[bool]string{false: "http", true: "https"}[withTLS] + "://" + ts.addr + "/healthz")
				if err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("round %d: /healthz %d", i, resp.StatusCode)
				}
				eventually(t, "every place to be given back", func() bool {
					return ts.httpConns.held.Total() == 0 && ts.peers.Total() == 0
				})
			}
			if got := testenv.MetricValue(t, ts.cm.refusedConnect) + testenv.MetricValue(t, ts.cm.refusedUpgrade); got != 0 {
				t.Errorf("%v connections refused", got)
			}
		})
	}
}

// TestClientKeyBehindProxies: the per-address limits count the client a
// trusted proxy names in X-Forwarded-For, and never believe the header
// from anyone else or the entries left of the first untrusted hop.
func TestClientKeyBehindProxies(t *testing.T) {
	cfg := testConfig()
	cfg.TrustedProxies = []string{"10.0.0.5", "192.168.0.0/24", "2001:db8::1"}
	set, err := newSettings(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"198.51.100.7:4000", []string{"203.0.113.9"}, "198.51.100.7/32"}, // not a proxy: the header is ignored
		{"10.0.0.5:4000", nil, "10.0.0.5/32"},                             // a proxy without the header
		{"10.0.0.5:4000", []string{"203.0.113.9"}, "203.0.113.9/32"},
		{"10.0.0.5:4000", []string{"1.2.3.4, 203.0.113.9"}, "203.0.113.9/32"},              // 1.2.3.4 is the client's own claim
		{"10.0.0.5:4000", []string{"203.0.113.9, 192.168.0.7"}, "203.0.113.9/32"},          // through two proxies
		{"10.0.0.5:4000", []string{"203.0.113.9", "192.168.0.7"}, "203.0.113.9/32"},        // one header per proxy
		{"10.0.0.5:4000", []string{"203.0.113.9, garbage, 192.168.0.7"}, "192.168.0.7/32"}, // the walk ends at the proxy that wrote garbage
		{"10.0.0.5:4000", []string{"2001:db8:1:2::9"}, "2001:db8:1:2::/64"},
		{"10.0.0.5:4000", []string{"203.0.113.9:4711"}, "203.0.113.9/32"}, // with a port, as some proxies write it
		{"10.0.0.5:4000", []string{"[2001:db8:1:2::9]:4711"}, "2001:db8:1:2::/64"},
		{"10.0.0.5:4000", []string{"[2001:db8:1:2::9]"}, "2001:db8:1:2::/64"},
		{"10.0.0.5:4000", []string{"unknown"}, "10.0.0.5/32"}, // nothing to believe: the proxy itself
		{"[2001:db8::1]:4000", []string{"203.0.113.9"}, "203.0.113.9/32"},
		{"[::ffff:10.0.0.5]:4000", []string{"203.0.113.9"}, "203.0.113.9/32"},
	} {
		r := httptest.NewRequest("GET", "/connect", nil)
		r.RemoteAddr = tc.remote
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := set.clientKey(r).String(); got != tc.want {
			t.Errorf("%s with X-Forwarded-For %q: %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
}

// TestTrustedProxyCountsClients: behind a trusted proxy (here the test,
// on 127.0.0.1), max_conns_per_ip counts each client the proxy names; the
// same header from an address that is not trusted changes nothing.
func TestTrustedProxyCountsClients(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		cfg := testConfig()
		cfg.MaxConnsPerIP = 1
		if trusted {
			cfg.TrustedProxies = []string{"127.0.0.1"}
		}
		ts := startServer(t, cfg, Options{})
		from := func(client string) *ktClient {
			k := dialKt(t, ts.url(""), http.Header{"X-Forwarded-For": {client}})
			k.send("WsInit", "")
			return k
		}
		from("203.0.113.1").expect("WsIceServers")
		second := from("203.0.113.2")
		if trusted {
			second.expect("WsIceServers") // another client behind the proxy
		} else {
			second.expectError(errBusy) // one address: the header is not believed
		}
		from("203.0.113.1").expectError(errBusy)
		if trusted {
			// The proxy's own connections carry many clients: it may hold
			// more not yet upgraded than one address may, and a client
			// behind it still joins.
			for range cfg.MaxConnsPerIP + browserConns + 1 {
				c, err := net.Dial("tcp4", ts.addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
			}
			from("203.0.113.3").expect("WsIceServers")
			if got := testenv.MetricValue(t, ts.cm.refusedUpgrade); got != 1 {
				t.Errorf("%v upgrades refused, want only the second of 203.0.113.1's", got)
			}
			if got := testenv.MetricValue(t, ts.cm.refusedConnect); got != 0 {
				t.Errorf("%v of the proxy's connections refused, want none", got)
			}
		}
	}
}

// FuzzClientKey: whatever a client writes in X-Forwarded-For, the key is
// the peer's own unless the peer is a trusted proxy, and then it is the
// peer's or that of an address the header names.
func FuzzClientKey(f *testing.F) {
	cfg := testConfig()
	cfg.TrustedProxies = []string{"10.0.0.0/8", "2001:db8::/32"}
	set, err := newSettings(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("10.0.0.5:4000", "203.0.113.9, 10.1.1.1")
	f.Add("198.51.100.7:4000", "203.0.113.9")
	f.Add("[2001:db8::1]:4000", "[2001:db8:1::9]:80, garbage")
	f.Add("10.0.0.5:4000", ",,, ")
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := httptest.NewRequest("GET", "/connect", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", xff)
		got := set.clientKey(r)
		ap, err := netip.ParseAddrPort(remote)
		if err != nil {
			if got.IsValid() {
				t.Fatalf("unparsable peer %q: key %v", remote, got)
			}
			return
		}
		own := ipclass.SourcePrefix(ap.Addr())
		if got == own {
			return
		}
		if !set.trusted(ap.Addr().Unmap()) {
			t.Fatalf("peer %q is not trusted, yet its key is %v from %q", remote, got, xff)
		}
		for _, entry := range strings.Split(xff, ",") {
			if a, ok := forwardedAddr(entry); ok && ipclass.SourcePrefix(a) == got {
				return
			}
		}
		t.Fatalf("key %v is neither the peer %q nor in %q", got, remote, xff)
	})
}

// TestRefusedSocketsAreBounded: one address making many WebSocket
// upgrades with a bad Origin, all at once, and never answering the close
// frames, is held to max_conns_per_ip plus a browser's page connections
// of refused sockets waiting for their close frame (here as long as the
// test runs); the rest are closed right after their close frame or never
// accepted. Meanwhile a client from another address gets its ICE
// servers. Before, each refused socket lived closeGrace with a goroutine
// of its own, counted nowhere.
func TestRefusedSocketsAreBounded(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnsPerIP = 4
	ts := startServerWith(t, cfg, Options{}, func(s *Server) { s.closeGrace = time.Hour })
	bound := cfg.MaxConnsPerIP + browserConns
	attacker := websocket.Dialer{
		HandshakeTimeout: readTimeout,
		NetDial: func(network, addr string) (net.Conn, error) {
			return (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).Dial("tcp4", addr)
		},
	}
	hdr := http.Header{"Origin": {"https://evil.example.com"}}
	// In waves, each of them more than the bound at once: sockets
	// over it find no place free when they are refused.
	const waves, wave = 4, 16
	refused := make(chan error, wave)
	for range waves {
		for range wave {
			go func() { refused <- refuseOnce(t, attacker, ts.url(""), hdr) }()
		}
		for range wave {
			if err := <-refused; err != nil {
				t.Fatal(err)
			}
		}
	}
	waiting := testenv.MetricValue(t, ts.cm.refusedWaiting)
	if waiting < 1 || waiting > float64(bound) {
		t.Errorf("%v refused sockets waiting for a close frame, want 1 to %d", waiting, bound)
	}
	if held := ts.httpConns.held.Total(); held > bound {
		t.Errorf("127.0.0.2 holds %d connections, want at most %d", held, bound)
	}
	join(t, ts.url("controllerId=legit")) // from 127.0.0.1
}

// refuseOnce makes one upgrade that is refused with WsOriginNotAllowed
// and reads up to the close frame, by which time the server has decided
// whether the socket waits for an answer, but never answers it. Not
// getting in at all is fine too: that is the limit before the upgrade.
func refuseOnce(t *testing.T, d websocket.Dialer, url string, hdr http.Header) error {
	ws, resp, err := d.Dial(url, hdr)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil
	}
	t.Cleanup(func() { ws.Close() })
	ws.SetCloseHandler(func(int, string) error { return nil })
	ws.SetReadDeadline(time.Now().Add(readTimeout))
	if _, msg, err := ws.ReadMessage(); err != nil || !strings.Contains(string(msg), "WsError") {
		return fmt.Errorf("got %q, %v, want a WsError", msg, err)
	}
	var ce *websocket.CloseError
	if _, _, err := ws.ReadMessage(); !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
		return fmt.Errorf("got %v, want close %d", err, websocket.ClosePolicyViolation)
	}
	return nil
}
