package turnsrv

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/testenv"
	"icebox/stunsrv"
)

// gathered returns the value of metric name with label value want (any
// label), or 0, from reg.
func gathered(t *testing.T, reg *prometheus.Registry, name, want string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == want {
					if m.Counter != nil {
						return m.Counter.GetValue()
					}
					return m.Gauge.GetValue()
				}
			}
		}
	}
	return 0
}

// waitGathered waits until the metric reaches at least want.
func waitGathered(t *testing.T, reg *prometheus.Registry, name, label string, want float64) {
	t.Helper()
	testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("%s{%s} to reach %v", name, label, want),
		func() bool { return gathered(t, reg, name, label) >= want })
}

// dialFrom opens a TCP connection to addr from the loopback address from.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// allocateOver allocates over an open stream connection with pion's client
// and relays one packet to an echo peer and back.
func allocateOver(t *testing.T, ts *testServer, c net.Conn, server string) {
	t.Helper()
	u, p, _ := ts.MintCredential("legit", 0)
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server,
		Username: u, Password: p, Conn: turn.NewSTUNConn(c),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	mapped, err := client.SendBindingRequest()
	if err != nil {
		t.Fatalf("binding: %v", err)
	}
	if got, want := mapped.(*net.UDPAddr).IP, c.LocalAddr().(*net.TCPAddr).IP; !got.Equal(want) {
		t.Errorf("mapped address %v, want %v", got, want)
	}
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relay.Close()
	echoOnce(t, relay, udpEcho(t), "legitimate client")
}

// TestOneHostCannotHoldEveryTCPSlot: a host opens far more TCP connections
// than its share, each holding the slot with an unauthenticated Binding
// indication, as in the reported attack. Its connections beyond the
// per-source cap are closed at once, and a client from another address
// still gets STUN answers and an allocation over TCP.
func TestOneHostCannotHoldEveryTCPSlot(t *testing.T) {
	t.Parallel()
	const perSource, attempts = 4, 40
	ts := startServerFront(t, func(c *stunsrv.Config) {
		c.MaxTCPConnections = 2 * perSource
		c.MaxTCPConnectionsPerSource = perSource
	}, testConfig())
	indication := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication)).Raw
	for range attempts {
		c := dialFrom(t, "127.0.0.1", ts.tcp.String())
		c.Write(indication)
	}
	waitGathered(t, ts.frontReg, "icebox_stun_tcp_refused_total", "per_source", attempts-perSource)

	c := dialFrom(t, "127.0.0.2", ts.tcp.String())
	allocateOver(t, ts, c, ts.tcp.String())
	if got := gathered(t, ts.frontReg, "icebox_stun_tcp_refused_total", "total"); got != 0 {
		t.Errorf("%v connections refused by the total cap, want 0", got)
	}
}

// TestSilentTCPConnectionsCloseUnlessAllocated: a connection that sent
// something TURN-like but holds no allocation keeps the short idle timeout;
// one holding an allocation is not closed by it.
func TestSilentTCPConnectionsCloseUnlessAllocated(t *testing.T) {
	t.Parallel()
	ts := startServerFront(t, nil, testConfig())
	ts.front.SetTCPIdleTimeout(300 * time.Millisecond)

	idle := dialFrom(t, "127.0.0.1", ts.tcp.String())
	idle.Write(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication)).Raw)

	u, p, _ := ts.MintCredential("held", 0)
	held := dialRaw(t, "tcp", ts.tcp, u, p)
	if res := held.do(stun.MethodAllocate, udpTransport()); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("allocate: %v", res)
	}

	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("silent connection without allocation: %v, want closed by the server", err)
	}
	// Three idle timeouts later the allocated connection is still served.
	held.conn.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := held.conn.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("allocated connection: %v, want still open", err)
	}
	if res := held.do(stun.MethodRefresh, lifetimeAttr(10*time.Minute)); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("refresh after silence: %v", res)
	}
}

// TestTURNIdleTimeoutChangesLive: the front door's TURN idle timeout,
// which a reload derives from turn.quotas.max_lifetime, reaches a
// connection that already holds an allocation, from its next frame on.
// Before, it was fixed at start: a raised max_lifetime gave allocations
// longer than the quiet connection carrying them was kept.
func TestTURNIdleTimeoutChangesLive(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig())
	u, p, _ := ts.MintCredential("held", 0)
	held := dialRaw(t, "tcp", ts.tcp, u, p)
	if res := held.do(stun.MethodAllocate, udpTransport()); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("allocate: %v", res)
	}
	ts.front.SetTURNIdleTimeout(300 * time.Millisecond)
	// The refresh is the frame after which the new timeout applies.
	if res := held.do(stun.MethodRefresh, lifetimeAttr(10*time.Minute)); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("refresh: %v", res)
	}
	held.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := held.conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("allocated connection silent past the new TURN idle timeout: %v, want closed by the server", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

// startTLSFront is startServer with TURN over TLS on a certificate of its
// own, through a front door that mutFront configures; pool trusts it.
func startTLSFront(t *testing.T, mutFront func(*stunsrv.Config)) (*testServer, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig()
	cfg.TLS.Listen = "127.0.0.1:0"
	cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cert := testenv.WriteCert(t, cfg.TLS.Cert, cfg.TLS.Key, time.Time{})
	ts := startServerFront(t, mutFront, cfg, func(o *Options) {
		o.GetCertificate = testenv.CertificateFunc(t, cfg.TLS.Cert, cfg.TLS.Key)
	})
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return ts, pool
}

// TestSlowlorisTLSCannotStarveALegitimateClient: one host opens many TLS
// connections and never says hello. Its share of handshakes waits for the
// handshake deadline, the rest are closed at once; a client from another
// address completes its handshake, gets STUN answers and an allocation.
// Then the deadline closes the silent ones.
func TestSlowlorisTLSCannotStarveALegitimateClient(t *testing.T) {
	t.Parallel()
	const perSource, attempts = 4, 40
	ts, pool := startTLSFront(t, func(c *stunsrv.Config) {
		c.MaxTCPConnectionsPerSource = perSource
		c.MaxTLSHandshakes = 2 * perSource
		c.TLSHandshakeTimeout = 2 * time.Second
	})
	addr := ts.TLSAddr().String()
	var silent []net.Conn
	for range attempts {
		silent = append(silent, dialFrom(t, "127.0.0.1", addr))
	}
	waitGathered(t, ts.frontReg, "icebox_stun_tcp_refused_total", "per_source", attempts-perSource)

	raw := dialFrom(t, "127.0.0.2", addr)
	c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	allocateOver(t, ts, c, addr)

	// The silent connections that got a handshake slot are closed by the
	// deadline (read returns at once for those refused earlier).
	for _, s := range silent {
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
			t.Fatalf("silent TLS connection: %v, want closed by the server", err)
		}
	}
	// The handshake's deadline closes the socket just before the
	// handshake returns and counts it.
	waitGathered(t, ts.frontReg, "icebox_stun_tcp_refused_total", "tls_handshake", perSource)
	if got := gathered(t, ts.frontReg, "icebox_stun_tcp_refused_total", "tls_handshake"); got != perSource {
		t.Errorf("%v handshakes timed out, want %d", got, perSource)
	}
}

// TestFewSourcesCannotHoldEveryTLSHandshake: four hosts each hold as many
// silent TLS handshakes as one source may, which would fill every
// handshake slot; the fair share keeps one free for a fifth host, which
// completes its handshake and allocates.
func TestFewSourcesCannotHoldEveryTLSHandshake(t *testing.T) {
	t.Parallel()
	const perSource, attackers = 16, 4
	ts, pool := startTLSFront(t, func(c *stunsrv.Config) {
		c.MaxTCPConnectionsPerSource = perSource
		c.MaxTLSHandshakes = attackers * perSource
		c.TLSHandshakeTimeout = time.Minute // the attackers hold theirs to the end
	})
	addr := ts.TLSAddr().String()
	for i := range attackers {
		from := fmt.Sprintf("127.0.0.%d", 2+i)
		for range perSource {
			dialFrom(t, from, addr)
		}
	}
	// One more from the first attacker is over its cap and closed at
	// once; the front door takes connections in order, so by then it has
	// admitted or refused every attacker's connection.
	over := dialFrom(t, "127.0.0.2", addr)
	over.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := over.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("connection over the per-source cap: %v, want closed by the server", err)
	}
	if got := gathered(t, ts.frontReg, "icebox_stun_tcp_refused_total", "tls_handshakes"); got == 0 {
		t.Errorf("no attacker handshake was refused: the attackers did not reach the fair share")
	}

	raw := dialFrom(t, "127.0.0.9", addr)
	c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	allocateOver(t, ts, c, addr)
}
