package testenv

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// Pebble is Let's Encrypt's test ACME server, run in the test process on
// 127.0.0.1. Every name resolves to 127.0.0.1 for it, and it checks
// TLS-ALPN-01 challenges on one port: the test's stand-in for 443.
type Pebble struct {
	// Directory is the ACME directory URL.
	Directory string
	// CARootFile is a PEM file with the root that signs Directory's HTTPS
	// certificate, for tls.acme.ca_root.
	CARootFile string
	srv        *httptest.Server
	ca         *ca.CAImpl
}

// StartPebble starts Pebble issuing certificates valid for validitySeconds
// (0: Pebble's 90 days), validating TLS-ALPN-01 on 127.0.0.1:tlsPort. It
// sets Pebble's environment (no random sleeps, no nonce rejections), so
// the calling test cannot be parallel.
func StartPebble(t testing.TB, tlsPort int, validitySeconds uint64) *Pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	// Pebble logs from its own goroutines, after a test may have ended:
	// to stderr when asked, never to t.
	var out io.Writer = io.Discard
	if os.Getenv("ICEBOX_PEBBLE_LOG") != "" {
		out = os.Stderr
	}
	logger := log.New(out, "pebble ", log.Lmicroseconds)
	resolver := startDNS(t)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
		"default": {Description: "icebox tests", ValidityPeriod: validitySeconds},
	})
	validator := va.New(logger, 0, tlsPort, false, resolver, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	p := &Pebble{srv: httptest.NewTLSServer(front.Handler()), ca: authority}
	t.Cleanup(p.Close)
	p.Directory = p.srv.URL + wfe.DirectoryPath
	p.CARootFile = filepath.Join(t.TempDir(), "pebble-https-root.pem")
	if err := os.WriteFile(p.CARootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Roots are the roots that the certificates Pebble issues chain to.
func (p *Pebble) Roots() *x509.CertPool {
	pool := x509.NewCertPool()
	for i := range p.ca.GetNumberOfRootCerts() {
		pool.AddCert(p.ca.GetRootCert(i).Cert)
	}
	return pool
}

// Close stops answering ACME requests, as a CA that is down.
func (p *Pebble) Close() { p.srv.CloseClientConnections(); p.srv.Close() }

// startDNS answers every A question with 127.0.0.1 and nothing else, over
// TCP (as Pebble asks), and returns its address.
func startDNS(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, question := range q.Question {
			if question.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}
