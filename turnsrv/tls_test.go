package turnsrv

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"icebox/internal/testenv"
)

// TestTLS allocates over TURN-over-TLS and swaps the certificate with
// Reload, as SIGHUP does after a renewal.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := testConfig()
	cfg.TLS.Listen = "127.0.0.1:0"
	cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := testenv.WriteCert(t, cfg.TLS.Cert, cfg.TLS.Key, time.Time{})
	ts := startServer(t, cfg)
	echo := udpEcho(t)

	dial := func(want *x509.Certificate) {
		t.Helper()
		pool := x509.NewCertPool()
		pool.AddCert(want)
		c, err := tls.Dial("tcp4", ts.TLSAddr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatalf("tls dial: %v", err)
		}
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

	second := testenv.WriteCert(t, cfg.TLS.Cert, cfg.TLS.Key, time.Time{})
	if err := ts.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	dial(second)

	// A broken certificate is refused and the old one stays.
	if err := os.WriteFile(cfg.TLS.Cert, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ts.Reload(cfg); err == nil {
		t.Fatal("Reload accepted a broken certificate")
	}
	dial(second)
}
