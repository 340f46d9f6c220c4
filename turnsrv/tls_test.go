package turnsrv

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/certs"
	"icebox/internal/testenv"
)

// TestTLS allocates over TURN-over-TLS with the certificate source's
// certificate; a renewed file is served without SIGHUP, a broken one
// leaves the working one in service.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := testConfig()
	cfg.TLS.Listen = "127.0.0.1:0"
	cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := testenv.WriteCert(t, cfg.TLS.Cert, cfg.TLS.Key, time.Time{})
	reg := prometheus.NewRegistry()
	m, err := certs.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	files, err := certs.OpenFiles(cfg.TLS.Cert, cfg.TLS.Key, certs.FilesOptions{Name: "turn.tls", Metrics: m, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	ts := startServer(t, cfg, func(o *Options) { o.GetCertificate = files.GetCertificate })
	echo := udpEcho(t)

	dial := func(want *x509.Certificate) {
		t.Helper()
		pool := x509.NewCertPool()
		pool.AddCert(want)
		var c *tls.Conn
		testenv.WaitFor(t, 5*time.Second, "the certificate to be served", func() bool {
			var err error
			c, err = tls.Dial("tcp4", ts.TLSAddr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
			return err == nil
		})
		conn := turn.NewSTUNConn(c)
		defer conn.Close()
		u, p, _ := ts.MintCredential("tls", 0)
		client, err := turn.NewClient(&turn.ClientConfig{
			STUNServerAddr: ts.TLSAddr().String(), TURNServerAddr: ts.TLSAddr().String(),
			Username: u, Password: p, Conn: conn,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		if err := client.Listen(); err != nil {
			t.Fatal(err)
		}
		relay, err := client.Allocate()
		if err != nil {
			t.Fatalf("allocate over TLS: %v", err)
		}
		defer relay.Close()
		echoOnce(t, relay, echo, "over tls")
	}
	dial(first)

	// Renewed on disk: served without SIGHUP.
	second := testenv.WriteCert(t, cfg.TLS.Cert, cfg.TLS.Key, time.Time{})
	dial(second)

	// A broken certificate is refused and the old one stays.
	if err := os.WriteFile(cfg.TLS.Cert, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "the broken file to be refused", func() bool {
		return testenv.GatherValue(t, reg, "icebox_tls_certificate_loads_total", "result", "refused") >= 1
	})
	dial(second)

	// The front door counted those frames as TLS, not as plain TCP.
	for transport, want := range map[string]bool{"tls": true, "tcp": false} {
		got := testenv.GatherValue(t, ts.frontReg, "icebox_stun_requests_total", "transport", transport, "family", "ipv4", "outcome", "passed")
		if (got > 0) != want {
			t.Errorf("front door counted %v frames passed over %s", got, transport)
		}
	}
}

// TestTLSNeedsTheFrontDoor: TURN over TLS is served only through the STUN
// port's front door, which frames, caps and times out its connections; a
// Server asked for TLS without it refuses to start and leaves the port
// free.
func TestTLSNeedsTheFrontDoor(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().String()
	ln.Close()
	cfg := testConfig()
	cfg.TLS.Listen = port
	_, err = New(cfg, Options{
		PublicIP: netip.MustParseAddr("127.0.0.1"), StateDir: t.TempDir(),
		PacketConns:    []net.PacketConn{pc},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil },
	})
	if err == nil || !strings.Contains(err.Error(), "front door") {
		t.Fatalf("New with TLS and no front door: %v, want an error naming the front door", err)
	}
	if ln, err := net.Listen("tcp4", port); err != nil {
		t.Errorf("the TLS port is still held: %v", err)
	} else {
		ln.Close()
	}
}
