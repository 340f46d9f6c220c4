package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/testenv"
)

// served dials addr as a client that trusts only roots and names name,
// and returns the leaf certificate it accepted, or the error.
func served(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// TestACMEObtainsRenewsAndSurvivesCAOutage: Pebble issues a certificate
// over TLS-ALPN-01 on the listener that serves it; a short-lived one is
// renewed before it runs out; with the CA down, a renewal fails, is
// counted, and the certificate in service stays.
func TestACMEObtainsRenewsAndSurvivesCAOutage(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	// 20 s certificates: renewed when a third is left (or earlier, where
	// the CA's ARI window says), 13 s after issue at the latest.
	pebble := testenv.StartPebble(t, port, 20)

	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	// A name of its own per run: certmagic remembers failed renewals per
	// name, process-wide, and backs off, so a second run (-count) under
	// the same name would wait out the first one's CA outage.
	domain := fmt.Sprintf("run-%d.icebox.test", time.Now().UnixNano())
	cfg := DefaultConfig().ACME
	cfg.Domains = []string{domain}
	cfg.Directory = pebble.Directory
	cfg.CARoot = pebble.CARootFile
	cfg.Email = "ops@icebox.test"
	state := t.TempDir()
	a, err := NewACME(cfg, ACMEOptions{
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics:            m,
		StateDir:           state,
		RenewCheckInterval: 250 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello over acme") })}
	go srv.Serve(tls.NewListener(ln, &tls.Config{GetCertificate: a.GetCertificate, NextProtos: []string{"http/1.1", acmez.ACMETLS1Protocol}}))
	defer srv.Close()
	if err := a.Start("127.0.0.1", port); err != nil {
		t.Fatal(err)
	}

	roots := pebble.Roots()
	var first *x509.Certificate
	testenv.WaitFor(t, 30*time.Second, "Pebble's certificate to be served", func() bool {
		first, _ = served(ln.Addr().String(), domain, roots)
		return first != nil
	})
	t.Logf("served %v, valid %v to %v", first.DNSNames, first.NotBefore, first.NotAfter)
	if got := testenv.MetricValue(t, m.obtained["new"]); got != 1 {
		t.Errorf("obtained{new} = %v, want 1", got)
	}
	// A plain HTTPS client, trusting Pebble's root, gets the page.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: domain}}}
	resp, err := hc.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello over acme" {
		t.Fatalf("body %q", body)
	}
	// The certificate is kept in the state directory.
	if entries, err := os.ReadDir(state + "/acme"); err != nil || len(entries) == 0 {
		t.Errorf("state_dir/acme holds %v (%v); want the account and certificate", entries, err)
	}

	var renewed *x509.Certificate
	testenv.WaitFor(t, 30*time.Second, "the short-lived certificate to be renewed", func() bool {
		c, err := served(ln.Addr().String(), domain, roots)
		if err == nil && !bytes.Equal(c.Raw, first.Raw) {
			renewed = c
		}
		return renewed != nil
	})
	if !first.NotAfter.After(time.Now()) {
		t.Errorf("renewed only after the first certificate ran out (%v)", first.NotAfter)
	}
	if got := testenv.MetricValue(t, m.obtained["renewal"]); got < 1 {
		t.Errorf("obtained{renewal} = %v, want at least 1", got)
	}

	// The CA goes away: the next renewal fails, is counted, and the
	// certificate in service stays, even once it has run out.
	latest, err := served(ln.Addr().String(), domain, roots)
	if err != nil {
		t.Fatal(err)
	}
	pebble.Close()
	testenv.WaitFor(t, 30*time.Second, "a failed renewal to be counted", func() bool {
		return testenv.MetricValue(t, m.failures["renewal"]) >= 1
	})
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: domain, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("no certificate served while the CA is down: %v", err)
	}
	defer c.Close()
	if got := c.ConnectionState().PeerCertificates[0]; !bytes.Equal(got.Raw, latest.Raw) {
		t.Errorf("served %v..%v after the failed renewal; want the one in service before (%v..%v)",
			got.NotBefore, got.NotAfter, latest.NotBefore, latest.NotAfter)
	}
}
