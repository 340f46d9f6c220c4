package signal

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"icebox/internal/promset"
	"icebox/internal/testenv"
)

// testClock is a clock tests move by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// mintClient asks for TURN credentials from one loopback address, over
// WsInit and GET /ice-servers, as the talk's app and a backend would.
type mintClient struct {
	t    *testing.T
	ts   *testServer
	ip   string
	key  string
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func newMintClient(t *testing.T, ts *testServer, ip, key string) *mintClient {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	if c, err := d.Dial("tcp", ts.addr); err != nil {
		t.Skipf("%s unusable: %v", ip, err)
	} else {
		c.Close()
	}
	return &mintClient{t: t, ts: ts, ip: ip, key: key, dial: d.DialContext}
}

// wsInit does the app's handshake and returns the TURN credential it got,
// or the WsError code and the close code that refused it.
func (m *mintClient) wsInit() (credential string, refused errCode, closed int) {
	m.t.Helper()
	d := websocket.Dialer{HandshakeTimeout: readTimeout, NetDialContext: m.dial}
	ws, resp, err := d.Dial(m.ts.url(""), nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		m.t.Fatalf("dial from %s: %v", m.ip, err)
	}
	defer ws.Close()
	k := &ktClient{t: m.t, ws: ws}
	k.send("WsInit", "")
	_, p, data := k.read()
	switch p.ID {
	case "WsIceServers":
		servers := data.(*wsIceServersData).IceServers
		for _, s := range servers {
			if s.Credential != "" && s.Username != "" {
				return s.Credential, 0, 0
			}
		}
		m.t.Fatalf("%s: WsIceServers without a TURN credential: %+v", m.ip, servers)
	case "WsError":
		ws.SetReadDeadline(time.Now().Add(readTimeout))
		_, _, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			m.t.Fatalf("%s: after WsError, %v; want a close", m.ip, err)
		}
		return "", errCode(data.(*wsErrorData).Code), ce.Code
	}
	m.t.Fatalf("%s: got %s, want WsIceServers or WsError", m.ip, p.ID)
	return "", 0, 0
}

// iceServers fetches /ice-servers and returns the status, Retry-After and
// the TURN credential in the body.
func (m *mintClient) iceServers() (status int, retryAfter, credential string) {
	m.t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: m.dial}, Timeout: readTimeout}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://"+m.ts.addr+"/ice-servers", nil)
	req.Header.Set("Authorization", "Bearer "+m.key)
	resp, err := c.Do(req)
	if err != nil {
		m.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		var d wsIceServersData
		if err := strictDecode(body, &d); err != nil {
			m.t.Fatalf("%s: /ice-servers body %s: %v", m.ip, body, err)
		}
		for _, s := range d.IceServers {
			credential += s.Credential
		}
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), credential
}

// TestMintBudget: an address that has spent its credential budget gets
// WsError 4016 (close 1013) at WsInit and 429 with Retry-After at
// /ice-servers, while a client from another address still gets
// credentials both ways; the budget refills at credentials_per_minute
// and never beyond credential_burst. Before, one address minted 1,837
// credentials in 5 s.
func TestMintBudget(t *testing.T) {
	const key = "0123456789abcdef-key"
	clock := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := testConfig()
	cfg.IceServersKeys = []string{key}
	cfg.CredentialsPerMinute = 30 // one every 2 s
	cfg.CredentialBurst = 4
	ts := startServer(t, cfg, Options{Now: clock.now})
	attacker := newMintClient(t, ts, "127.0.0.1", key)
	legit := newMintClient(t, ts, "127.0.0.2", key)

	// The attacker spends its burst, half over each way in.
	for i := range cfg.CredentialBurst {
		if i%2 == 0 {
			if cred, code, _ := attacker.wsInit(); cred == "" {
				t.Fatalf("attacker's credential %d at WsInit refused with %d; want the burst of %d", i, code, cfg.CredentialBurst)
			}
		} else if status, _, cred := attacker.iceServers(); status != 200 || cred == "" {
			t.Fatalf("attacker's credential %d at /ice-servers: %d; want the burst of %d", i, status, cfg.CredentialBurst)
		}
	}
	// Spent: refused both ways, and told when to come back.
	for range 3 {
		if cred, code, closed := attacker.wsInit(); cred != "" || code != errMintLimited || closed != websocket.CloseTryAgainLater {
			t.Fatalf("attacker past its burst at WsInit: credential %q, WsError %d, close %d; want 4016, close 1013", cred, code, closed)
		}
		if status, retry, cred := attacker.iceServers(); status != http.StatusTooManyRequests || retry != "2" || cred != "" {
			t.Fatalf("attacker past its burst at /ice-servers: %d, Retry-After %q, credential %q; want 429, 2", status, retry, cred)
		}
	}
	// The legitimate client, from another address, is served both ways.
	for range 2 {
		if cred, code, _ := legit.wsInit(); cred == "" {
			t.Fatalf("legitimate client at WsInit refused with %d while the attacker is over budget", code)
		}
		if status, _, cred := legit.iceServers(); status != 200 || cred == "" {
			t.Fatalf("legitimate client at /ice-servers got %d while the attacker is over budget", status)
		}
	}
	if got := testenv.MetricValue(t, ts.mints.refused[mintViaWebSocket]); got != 3 {
		t.Errorf("credentials_refused_total{via=websocket} = %g, want 3", got)
	}
	if got := testenv.MetricValue(t, ts.mints.refused[mintViaHTTP]); got != 3 {
		t.Errorf("credentials_refused_total{via=ice_servers} = %g, want 3", got)
	}

	// Half a credential's time later, Retry-After rounds the rest up.
	clock.advance(time.Second)
	if status, retry, _ := attacker.iceServers(); status != http.StatusTooManyRequests || retry != "1" {
		t.Fatalf("1 s later: %d, Retry-After %q; want 429, 1", status, retry)
	}
	// Retry-After later, exactly one credential has come back.
	clock.advance(time.Second)
	if cred, code, _ := attacker.wsInit(); cred == "" {
		t.Fatalf("2 s later, WsInit refused with %d; want one credential refilled", code)
	}
	if _, code, _ := attacker.wsInit(); code != errMintLimited {
		t.Fatalf("a second credential 2 s later got WsError %d; want 4016", code)
	}
	// A long quiet refills the burst, and no more.
	clock.advance(time.Hour)
	for i := range cfg.CredentialBurst {
		if status, _, _ := attacker.iceServers(); status != 200 {
			t.Fatalf("after an hour, credential %d: %d; want the burst of %d back", i, status, cfg.CredentialBurst)
		}
	}
	if status, _, _ := attacker.iceServers(); status != http.StatusTooManyRequests {
		t.Fatalf("after an hour, credential %d: %d; want 429: the budget holds at most credential_burst", cfg.CredentialBurst+1, status)
	}
}

// TestMintBudgetSweep: sources that minted once and went quiet are
// forgotten, so many addresses (an IPv6 attacker has plenty of /64s) do
// not grow the budget's memory without bound.
func TestMintBudgetSweep(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	set, err := newSettings(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	set.CredentialsPerMinute, set.CredentialBurst = 60, 1
	m := newMintBudget(promset.New("signal"), clock.now)
	base := netip.MustParseAddr("2001:db8::")
	for i := range 10 * minSweep {
		clock.advance(time.Second) // every earlier source has refilled
		b := base.As16()
		b[4], b[5], b[6] = byte(i>>16), byte(i>>8), byte(i)
		peer := netip.PrefixFrom(netip.AddrFrom16(b), 64)
		if ok, _ := m.take(set, peer, mintViaWebSocket); !ok {
			t.Fatalf("source %d refused its first credential", i)
		}
		if ok, _ := m.take(set, peer, mintViaWebSocket); ok {
			t.Fatalf("source %d got a second credential with a burst of 1", i)
		}
	}
	if n := len(m.buckets); n > minSweep {
		t.Fatalf("%d sources minted once, %d buckets kept; want at most %d", 10*minSweep, n, minSweep)
	}
}
