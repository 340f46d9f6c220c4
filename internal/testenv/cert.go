package testenv

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
)

// WriteCert writes a fresh self-signed certificate for 127.0.0.1 and
// localhost, valid for an hour, to certFile and keyFile (PEM) and returns
// it. A non-zero mtime is set on both files, for tests of reloading on
// change. Each call makes a new key and serial, so reloads can be told apart.
func WriteCert(t testing.TB, certFile, keyFile string, mtime time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "icebox test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
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
	// Each file appears whole and with its final mtime (written aside,
	// then renamed over): a watcher that looked between a write and a
	// Chtimes would load the pair twice.
	write := func(name, typ string, b []byte) {
		tmp := name + ".writing"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		if !mtime.IsZero() {
			if err := os.Chtimes(tmp, mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Rename(tmp, name); err != nil {
			t.Fatal(err)
		}
	}
	write(keyFile, "EC PRIVATE KEY", kder)
	write(certFile, "CERTIFICATE", der)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// CertificateFunc is a GetCertificate serving the pair in certFile and
// keyFile (as WriteCert writes them), loaded once.
func CertificateFunc(t testing.TB, certFile, keyFile string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil }
}

// SelfSigned is a GetCertificate serving a fresh certificate from
// WriteCert, for tests that need TLS but not the certificate itself.
func SelfSigned(t testing.TB) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	WriteCert(t, certFile, keyFile, time.Time{})
	return CertificateFunc(t, certFile, keyFile)
}
