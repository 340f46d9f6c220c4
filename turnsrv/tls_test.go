package turnsrv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/turn/v4"
)

// TestTLS allocates over TURN-over-TLS and swaps the certificate with
// Reload, as SIGHUP does after a renewal.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := testConfig()
	cfg.TLS.Listen = "127.0.0.1:0"
	cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writeCert(t, cfg.TLS, 1)
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

	second := writeCert(t, cfg.TLS, 2)
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

// writeCert writes a self-signed certificate for 127.0.0.1 to c's files.
func writeCert(t *testing.T, c TLSConfig, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "icebox test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
