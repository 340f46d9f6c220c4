package turnsrv

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"icebox/internal/credentials"
	"icebox/internal/testenv"
)

// TestCredentials runs pion's client with good and bad credentials.
func TestCredentials(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Quotas.AuthFailures = 100 // every failure here comes from 127.0.0.1
	ts := startServer(t, cfg)
	secret := []byte(testSecret)
	now := time.Now()
	mint := func(secret []byte, ttl time.Duration) [2]string {
		u, p, _ := credentials.Mint(secret, "bob", ttl, now)
		return [2]string{u, p}
	}
	goodUser, _, _ := credentials.Mint(secret, "bob", time.Hour, now)
	for _, tc := range []struct {
		name   string
		cred   [2]string
		reason string // "" means success
	}{
		{"valid", mint(secret, time.Hour), ""},
		{"valid at max_ttl", mint(secret, ts.cfg.MaxTTL-time.Minute), ""},
		{"expired", mint(secret, -time.Second), authExpired},
		{"forged", mint([]byte("another-secret-0123456789"), time.Hour), authBadMAC},
		{"future too far", mint(secret, ts.cfg.MaxTTL+time.Hour), authTooLong},
		{"wrong password", [2]string{goodUser, "bm90IHRoZSBwYXNzd29yZA=="}, authBadMAC},
		{"malformed username", [2]string{"bob", credentials.Password(secret, "bob")}, authMalformed},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				before := 0.0
				if tc.reason != "" {
					before = testenv.MetricValue(t, ts.metrics.authFailures[tc.reason])
				}
				client, _ := dialTURN(t, network, ts.addr(network), tc.cred[0], tc.cred[1])
				relay, err := client.Allocate()
				if tc.reason == "" {
					if err != nil {
						t.Fatalf("allocate: %v", err)
					}
					relay.Close()
					return
				}
				if err == nil {
					relay.Close()
					t.Fatal("allocation succeeded")
				}
				if code := turnCode(err); code != int(stun.CodeUnauthorized) {
					t.Errorf("error %v, want 401 (RFC 8489 section 9.2.4)", err)
				}
				if got := testenv.MetricValue(t, ts.metrics.authFailures[tc.reason]); got != before+1 {
					t.Errorf("auth_failures{reason=%q} went from %v to %v, want +1", tc.reason, before, got)
				}
			})
		}
	}
}

// TestRotation checks that every configured secret verifies, the first
// mints, and a reload that drops a secret refuses its credentials while the
// allocations made with them keep relaying.
func TestRotation(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret := "old-secret-0123456789abcdef", "new-secret-0123456789abcdef"
	cfg := testConfig()
	cfg.Secrets = []string{newSecret, oldSecret}
	ts := startServer(t, cfg)
	echo := udpEcho(t)

	allocate := func(secret string) (net.PacketConn, error) {
		u, p, _ := credentials.Mint([]byte(secret), "carol", time.Hour, time.Now())
		client, _ := dialTURN(t, "udp", ts.udp, u, p)
		return client.Allocate()
	}
	oldRelay, err := allocate(oldSecret)
	if err != nil {
		t.Fatalf("old secret: %v", err)
	}
	defer oldRelay.Close()
	newRelay, err := allocate(newSecret)
	if err != nil {
		t.Fatalf("new secret: %v", err)
	}
	newRelay.Close()
	echoOnce(t, oldRelay, echo, "before reload")

	cfg.Secrets = []string{newSecret}
	if err := ts.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if relay, err := allocate(oldSecret); err == nil {
		relay.Close()
		t.Fatal("a credential from the dropped secret still allocates")
	}
	echoOnce(t, oldRelay, echo, "after reload")

	u, p, _ := ts.MintCredential("dave", 0)
	if want := credentials.Password([]byte(newSecret), u); p != want {
		t.Error("MintCredential does not use the primary secret")
	}
	if got := ts.Secrets(); len(got) != 1 || string(got[0]) != newSecret {
		t.Errorf("Secrets() = %d secrets", len(got))
	}
}

// echoOnce relays msg through relay to the echo peer and back.
func echoOnce(t *testing.T, relay net.PacketConn, echo net.Addr, msg string) {
	t.Helper()
	relay.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := relay.WriteTo([]byte(msg), echo); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, _, err := relay.ReadFrom(buf)
	if err != nil || string(buf[:n]) != msg {
		t.Fatalf("echo of %q: got %q, %v", msg, buf[:n], err)
	}
}

// TestRealm refuses a credential presented for another realm.
func TestRealm(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig())
	u, p, _ := ts.MintCredential("erin", 0)
	c := dialRaw(t, "udp", ts.udp, u, p)
	c.realm = stun.NewRealm("elsewhere")
	c.key = stun.NewLongTermIntegrity(u, "elsewhere", p)
	if res := c.do(stun.MethodAllocate, udpTransport()); errorCode(res) != int(stun.CodeUnauthorized) {
		t.Fatalf("got %v, want 401", res)
	}
	if testenv.MetricValue(t, ts.metrics.authFailures[authRealm]) != 1 {
		t.Error("realm failure not counted")
	}
}

// TestLifetimeCap asks for 50 minutes and gets quotas.max_lifetime, in an
// answer the client can still verify.
func TestLifetimeCap(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Quotas.MaxLifetime = 15 * time.Minute
	ts := startServer(t, cfg)
	for _, network := range []string{"udp", "tcp"} {
		u, p, _ := ts.MintCredential("frank", 0)
		c := dialRaw(t, network, ts.addr(network), u, p)
		for _, tc := range []struct {
			method stun.Method
			ask    time.Duration
			want   time.Duration
		}{
			{stun.MethodAllocate, 50 * time.Minute, 15 * time.Minute},
			{stun.MethodRefresh, 12 * time.Minute, 12 * time.Minute},
			{stun.MethodRefresh, 55 * time.Minute, 15 * time.Minute},
		} {
			attrs := []stun.Setter{lifetimeAttr(tc.ask)}
			if tc.method == stun.MethodAllocate {
				attrs = append(attrs, udpTransport())
			}
			res := c.do(tc.method, attrs...)
			if res.Type.Class != stun.ClassSuccessResponse {
				t.Fatalf("%s %v: %v", network, tc.method, res)
			}
			if err := c.key.Check(res); err != nil {
				t.Errorf("%s %v: response integrity: %v", network, tc.method, err)
			}
			v, err := res.Get(stun.AttrLifetime)
			if err != nil {
				t.Fatal(err)
			}
			if got := time.Duration(binary.BigEndian.Uint32(v)) * time.Second; got != tc.want {
				t.Errorf("%s %v asking %v: lifetime %v, want %v", network, tc.method, tc.ask, got, tc.want)
			}
		}
	}
}

// TestAuthThrottle: after quotas.auth_failures failures over a stream
// (whose source is proven), that source's further failures go unanswered
// until the window refills, and are logged once per window; a valid
// credential from the same address is still served.
func TestAuthThrottle(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Quotas.AuthFailures = 3
	cfg.Quotas.AuthFailureWindow = time.Hour
	ts := startServer(t, cfg)
	u, _, _ := ts.MintCredential("mallory", 0)
	bad := dialRaw(t, "tcp", ts.tcp, u, "guessed")
	for i := 0; i < cfg.Quotas.AuthFailures; i++ {
		if res := bad.do(stun.MethodAllocate, udpTransport()); errorCode(res) != int(stun.CodeUnauthorized) {
			t.Fatalf("attempt %d: %v, want 401", i, res)
		}
	}
	// Throttled: the next failure is dropped; the unsigned request after
	// it is answered, which proves the server read the failure first.
	failed := bad.build(stun.MethodAllocate, true, udpTransport())
	bad.send(failed.Raw)
	unsigned := bad.build(stun.MethodAllocate, false, udpTransport())
	bad.send(unsigned.Raw)
	if res := bad.read(time.Now().Add(5 * time.Second)); res == nil || res.TransactionID != unsigned.TransactionID {
		t.Fatalf("first answer %v, want the unsigned request's 401", res)
	}
	if got := testenv.MetricValue(t, ts.metrics.authFailures[authThrottled]); got != 1 {
		t.Errorf("throttled = %v, want 1", got)
	}

	// A valid credential from the throttled address is served.
	u, p, _ := ts.MintCredential("mallory", 0)
	good := dialRaw(t, "tcp", ts.tcp, u, p)
	if res := good.do(stun.MethodAllocate, udpTransport()); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("valid Allocate from a throttled source: %v", res)
	}
	if n := len(ts.logs.matching("authentication failed")); n != 1 {
		t.Errorf("%d failure log lines, want 1 for the window", n)
	}
	if n := len(ts.logs.matching("throttling")); n != 1 {
		t.Errorf("%d throttling log lines, want 1", n)
	}
	if all := ts.logs.text(); strings.Contains(all, p) || strings.Contains(all, "guessed") || strings.Contains(all, testSecret) {
		t.Errorf("a credential was logged:\n%s", all)
	}
}

// TestForgedFailuresHarmless: bad MACs sent over UDP from the victim's own
// address (what a forger of its source achieves) at 20 times
// quotas.auth_failures do not cost the victim one Refresh,
// CreatePermission or ChannelBind: UDP failures prove nothing about their
// source, and a valid MAC is never dropped.
func TestForgedFailuresHarmless(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Quotas.AuthFailures = 3
	cfg.Quotas.AuthFailureWindow = time.Hour
	cfg.Quotas.AnswerRate = 0 // the forger's answers are not what is tested here
	ts := startServer(t, cfg)
	u, p, _ := ts.MintCredential("victim", 0)
	victim := dialRaw(t, "udp", ts.udp, u, p)
	if res := victim.do(stun.MethodAllocate, udpTransport()); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("allocate: %v", res)
	}
	// The forger shares the victim's socket, so its packets carry exactly
	// the victim's source address and port.
	forger := &rawClient{t: t, conn: victim.conn, user: victim.user, realm: victim.realm, nonce: victim.nonce,
		key: stun.NewLongTermIntegrity(u, testRealm, "forged")}
	peer := udpEcho(t)
	for round := range 20 {
		for range cfg.Quotas.AuthFailures {
			if res := forger.roundTrip(forger.build(stun.MethodRefresh, true)); errorCode(res) != int(stun.CodeUnauthorized) {
				t.Fatalf("forged Refresh: %v, want 401", res)
			}
		}
		for _, req := range []*stun.Message{
			victim.build(stun.MethodRefresh, true, lifetimeAttr(10*time.Minute)),
			victim.build(stun.MethodCreatePermission, true, peerAttr(peer.IP, peer.Port)),
			victim.build(stun.MethodChannelBind, true, channelAttr(0x4000), peerAttr(peer.IP, peer.Port)),
		} {
			if res := victim.roundTrip(req); res.Type.Class != stun.ClassSuccessResponse {
				t.Fatalf("round %d: the victim's %v got %v", round, req.Type, res)
			}
		}
	}
	if got := testenv.MetricValue(t, ts.metrics.authFailures[authThrottled]); got != 0 {
		t.Errorf("throttled = %v, want 0", got)
	}
}

// A Binding request carrying ICE's short-term credentials is not a TURN
// authentication: it must not count as a failure nor throttle its source.
func TestBindingNotJudged(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Quotas.AuthFailures = 1
	ts := startServer(t, cfg)
	c := dialRaw(t, "tcp", ts.tcp, "remote:local", "ice-password")
	for range 3 {
		m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewUsername("remote:local"),
			stun.NewShortTermIntegrity("ice-password"), stun.Fingerprint)
		if err != nil {
			t.Fatal(err)
		}
		if res := c.roundTrip(m); res.Type != stun.BindingSuccess {
			t.Fatalf("got %v", res)
		}
	}
	for _, r := range authReasons {
		if v := testenv.MetricValue(t, ts.metrics.authFailures[r]); v != 0 {
			t.Errorf("auth_failures{reason=%q} = %v", r, v)
		}
	}
}

// TestShortSecretFileReloadRefused: a reload whose secret_file now holds
// a secret shorter than credentials.MinSecretLen is refused, and
// credentials from the secret in force keep allocating.
func TestShortSecretFileReloadRefused(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig())
	cfg := testConfig()
	cfg.SecretFile = filepath.Join(t.TempDir(), "turn-secret")
	if err := os.WriteFile(cfg.SecretFile, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.PrepareReload(cfg); !errors.Is(err, credentials.ErrShortSecret) {
		t.Fatalf("reload with a short secret_file: %v, want ErrShortSecret", err)
	}
	u, p, _ := ts.MintCredential("after-refused-reload", 0)
	client, _ := dialTURN(t, "udp", ts.udp, u, p)
	relay, err := client.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	relay.Close()
}
