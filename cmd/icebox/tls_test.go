package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/turn/v4"

	"icebox/internal/testenv"
	"icebox/signal"
)

// servedCert is the leaf certificate a TLS client gets from addr for name.
func servedCert(t *testing.T, addr, name string, roots *x509.CertPool, alpn ...string) (*x509.Certificate, error) {
	t.Helper()
	conf := &tls.Config{ServerName: name, RootCAs: roots, NextProtos: alpn, InsecureSkipVerify: roots == nil}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// allocateTLS allocates a relay through TURN over TLS at addr, as pion's
// client does it for a turns: URL.
func allocateTLS(t *testing.T, addr string, roots *x509.CertPool, user, pass string) net.PacketConn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: "localhost", RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	_, relay, err := allocateOn(t, turn.NewSTUNConn(c), addr, user, pass)
	if err != nil {
		t.Fatalf("allocate over TLS on %s: %v", addr, err)
	}
	return relay
}

// sharedPortConfig is a daemon with the shared TLS port on 127.0.0.1 and
// a certificate for localhost in files, which signaling (HTTPS) and TURN
// over TLS (its own port) share too.
func sharedPortConfig(t *testing.T) (Config, *x509.Certificate) {
	cfg := testConfig(t)
	dir := t.TempDir()
	cfg.TLS.Listen = "127.0.0.1:0"
	cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cert := testenv.WriteCert(t, cfg.TLS.Cert, cfg.TLS.Key, time.Time{})
	cfg.TURN.TLS.Listen = "127.0.0.1:0"
	cfg.Signal.ICEHost = "localhost"
	cfg.TURN.Secrets = []string{"shared-port-secret-0123456789"}
	return cfg, cert
}

// TestSharedTLSPort: on the one TLS port, a plain HTTPS client gets the
// page, the app's WebSocket gets WsIceServers offering turns: on that
// port, pion's TURN client allocates over TLS and relays; a certificate
// file replaced on disk is then served, without SIGHUP, on every TLS
// listener: the shared port, signaling's and TURN's own.
func TestSharedTLSPort(t *testing.T) {
	cfg, cert := sharedPortConfig(t)
	d, _ := startDaemon(t, cfg)
	shared := d.tls.mux.Addr().String()
	roots := x509.NewCertPool()
	roots.AddCert(cert)

	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	resp, err := hc.Get("https://" + shared + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "<html") {
		t.Fatalf("GET / on the shared port: %d %.200q", resp.StatusCode, page)
	}
	for _, path := range []string{"/metrics", "/debug/pprof/"} {
		resp, err := hc.Get("https://" + shared + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("admin route %s answered on the shared port", path)
		}
	}

	dialer := &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}, HandshakeTimeout: 5 * time.Second}
	_, servers := wsInitAt(t, dialer, "wss://"+shared+"/connect?controllerId=tls-room")
	port := d.tls.sharedPort()
	want := fmt.Sprintf("turns:localhost:%d?transport=tcp", port)
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.URLs...)
	}
	if !slices.Contains(urls, want) {
		t.Errorf("WsIceServers offers %q; want %q among them", urls, want)
	}

	u, p, _ := d.turn.MintCredential("tls-user", 0)
	overTLS := allocateTLS(t, shared, roots, u, p)
	_, overUDP, err := allocate(t, d.stun.PacketConns()[0].LocalAddr().String(), u, p)
	if err != nil {
		t.Fatal(err)
	}
	relayOnce(t, overTLS, overUDP, "through the shared port")
	relayOnce(t, overUDP, overTLS, "and back")
	// The front door counts the shared port's TURN frames as TLS, its TLS
	// already terminated by the mux, and no plain TCP came in.
	for transport, want := range map[string]bool{"tls": true, "tcp": false} {
		got := testenv.GatherValue(t, d.reg, "icebox_stun_requests_total", "transport", transport, "family", "ipv4", "outcome", "passed")
		if (got > 0) != want {
			t.Errorf("front door counted %v frames passed over %s", got, transport)
		}
	}

	// Renewed on disk: every TLS listener serves it within seconds.
	renewed := testenv.WriteCert(t, cfg.TLS.Cert, cfg.TLS.Key, time.Time{})
	listeners := map[string]string{
		"tls.listen":      shared,
		"signal.listen":   d.signal.addr(),
		"turn.tls.listen": d.turn.TLSAddr().String(),
	}
	for name, addr := range listeners {
		testenv.WaitFor(t, 10*time.Second, "the renewed certificate on "+name, func() bool {
			got, err := servedCert(t, addr, "localhost", nil)
			return err == nil && bytes.Equal(got.Raw, renewed.Raw)
		})
	}
	// The new certificate carries TURN over TLS on the shared port too.
	renewedRoots := x509.NewCertPool()
	renewedRoots.AddCert(renewed)
	relayOnce(t, allocateTLS(t, shared, renewedRoots, u, p), overUDP, "after renewal")
}

// TestACMEOnSharedPort: with tls.acme, Pebble issues the certificate over
// TLS-ALPN-01 on the shared port (the test's 443), and the daemon serves
// it there, on signaling's port and on TURN's TLS port; WsIceServers
// names the ACME domain in its turns: URL.
func TestACMEOnSharedPort(t *testing.T) {
	port := testenv.FreePort(t)
	pebble := testenv.StartPebble(t, port, 0)
	cfg := testConfig(t)
	cfg.TLS.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.TLS.ACME.Domains = []string{"icebox.test"}
	cfg.TLS.ACME.Directory = pebble.Directory
	cfg.TLS.ACME.CARoot = pebble.CARootFile
	cfg.TURN.TLS.Listen = "127.0.0.1:0"
	d, _ := startDaemon(t, cfg)
	roots := pebble.Roots()
	for name, addr := range map[string]string{
		"tls.listen":      d.tls.mux.Addr().String(),
		"signal.listen":   d.signal.addr(),
		"turn.tls.listen": d.turn.TLSAddr().String(),
	} {
		testenv.WaitFor(t, 60*time.Second, "Pebble's certificate on "+name, func() bool {
			_, err := servedCert(t, addr, "icebox.test", roots)
			return err == nil
		})
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "icebox.test"}}}
	resp, err := hc.Get("https://" + d.tls.mux.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /: %d", resp.StatusCode)
	}
	dialer := &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "icebox.test"}, HandshakeTimeout: 5 * time.Second}
	_, servers := wsInitAt(t, dialer, "wss://"+d.tls.mux.Addr().String()+"/connect?controllerId=acme")
	want := fmt.Sprintf("turns:icebox.test:%d?transport=tcp", port)
	if !slices.ContainsFunc(servers, func(s signal.ICEServer) bool { return slices.Contains(s.URLs, want) }) {
		t.Errorf("WsIceServers %+v lacks %q", servers, want)
	}
	if got := testenv.GatherValue(t, d.reg, "icebox_tls_acme_obtained_total", "kind", "new"); got != 1 {
		t.Errorf("icebox_tls_acme_obtained_total{kind=new} = %v, want 1", got)
	}
}

// TestReloadRenamedCertificateFiles: a reload that names other files
// serves them; one that names a broken pair keeps the working certificate
// and says why.
func TestReloadRenamedCertificateFiles(t *testing.T) {
	cfg, first := sharedPortConfig(t)
	d, _ := startDaemon(t, cfg)
	shared := d.tls.mux.Addr().String()

	next := cfg
	dir := t.TempDir()
	next.TLS.Cert, next.TLS.Key = filepath.Join(dir, "new-cert.pem"), filepath.Join(dir, "new-key.pem")
	second := testenv.WriteCert(t, next.TLS.Cert, next.TLS.Key, time.Time{})
	if err := d.reload(next, new(slog.LevelVar)); err != nil {
		t.Fatal(err)
	}
	if got, err := servedCert(t, shared, "localhost", nil); err != nil || !bytes.Equal(got.Raw, second.Raw) {
		t.Fatalf("after reload to new files: %v; want the new certificate (the old was %v)", err, first.SerialNumber)
	}

	broken := next
	broken.TLS.Cert = filepath.Join(dir, "missing.pem")
	if err := d.reload(broken, new(slog.LevelVar)); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("reload to a missing file: %v; want an error naming it", err)
	}
	if got, err := servedCert(t, shared, "localhost", nil); err != nil || !bytes.Equal(got.Raw, second.Raw) {
		t.Fatalf("after a refused reload: %v; want the working certificate still", err)
	}
}

// TestSharedTLSPortTakesTheHandshakeLimits: the shared TLS port bounds
// pending handshakes with the stun section's settings, as README says.
// An attacker on 127.0.0.1 holds silent connections: past
// stun.max_tcp_connections_per_source they are closed at once, and the
// ones held are closed after stun.tls_handshake_timeout; meanwhile a
// client from 127.0.0.2 gets /healthz over HTTPS. Before, the port used
// its own built-in 64 per source and 10 s.
func TestSharedTLSPortTakesTheHandshakeLimits(t *testing.T) {
	const perSource = 2
	cfg, cert := sharedPortConfig(t)
	cfg.STUN.MaxTCPConnectionsPerSource = perSource
	cfg.STUN.MaxTLSHandshakes = 4 * perSource
	// Long enough that the held connections are still held when the mux
	// accepts the next one, however loaded the machine.
	cfg.STUN.TLSHandshakeTimeout = 5 * time.Second
	d, _ := startDaemon(t, cfg)
	shared := d.tls.mux.Addr().String()
	dial := func(from string) net.Conn {
		t.Helper()
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}).Dial("tcp4", shared)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedWithin reads from c until the server closes it; a connection
	// still open after twice the handshake timeout fails the test.
	closedWithin := func(c net.Conn, what string) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(2 * cfg.STUN.TLSHandshakeTimeout))
		_, err := c.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("%s: still open after %v, want closed by the server", what, 2*cfg.STUN.TLSHandshakeTimeout)
		}
	}
	var held []net.Conn
	for range perSource {
		held = append(held, dial("127.0.0.1"))
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	// Accepted in order: the one past the source's share is closed
	// without a handshake, while those held are still within theirs. An
	// admitted connection would complete the handshake.
	past := tls.Client(dial("127.0.0.1"), &tls.Config{RootCAs: roots, ServerName: "localhost"})
	past.SetDeadline(time.Now().Add(2 * cfg.STUN.TLSHandshakeTimeout))
	if err := past.Handshake(); err == nil {
		t.Error("a connection past the source's share completed a TLS handshake, want it refused")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("a connection past the source's share was held, not refused: %v", err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext,
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	resp, err := hc.Get("https://" + shared + "/healthz")
	if err != nil {
		t.Fatalf("a client from elsewhere while the attacker holds its share: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz from elsewhere: %d, want 200", resp.StatusCode)
	}
	for i, c := range held {
		closedWithin(c, fmt.Sprintf("silent connection %d", i))
	}
}
