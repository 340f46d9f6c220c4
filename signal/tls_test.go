package signal

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/certs"
	"icebox/internal/testenv"
)

// TestTLS: wss:// works with the certificate source's certificate, a
// renewed file is served without a restart, a broken renewal keeps the old
// one, and plain HTTP on the same port still answers /healthz only.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	now := time.Now()
	first := testenv.WriteCert(t, certFile, keyFile, now.Add(-time.Hour))
	reg := prometheus.NewRegistry()
	metrics, err := certs.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	loads := func(result string) float64 {
		return testenv.GatherValue(t, reg, "icebox_tls_certificate_loads_total", "source", "signal.tls", "result", result)
	}
	// The source logs each load and each refusal once: the test waits on
	// those events, not on time.
	events := make(chan slog.Record, 64)
	files, err := certs.OpenFiles(certFile, keyFile, certs.FilesOptions{
		Name: "signal.tls", Interval: 20 * time.Millisecond, Metrics: metrics, Logger: slog.New(testenv.NewLogChan(events, "")),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	const loaded, refused = "TLS certificate loaded", "TLS certificate files not loaded; the certificate in service stays"
	next := func(want string) {
		t.Helper()
		for {
			select {
			case r := <-events:
				if r.Message == want {
					return
				}
			case <-time.After(10 * time.Second): // guards against hanging only
				t.Fatalf("the certificate source never logged %q", want)
			}
		}
	}
	next(loaded)
	ts := startServer(t, testConfig(), Options{GetCertificate: files.GetCertificate})

	served := func() *x509.Certificate {
		t.Helper()
		c, err := tls.Dial("tcp", ts.addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}

	pool := x509.NewCertPool()
	pool.AddCert(first)
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: readTimeout}
	ws, _, err := d.Dial("wss://"+ts.addr+"/connect", nil)
	if err != nil {
		t.Fatal(err)
	}
	k := &ktClient{t: t, ws: ws}
	k.send("WsInit", "")
	k.expect("WsIceServers")
	ws.Close()

	get := func(url string) (int, string) {
		t.Helper()
		c := http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("http://" + ts.addr + "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("plain /healthz: %d %q", code, body)
	}
	if code, _ := get("http://" + ts.addr + "/connect"); code != http.StatusBadRequest {
		t.Fatalf("plain /connect: %d", code)
	}
	if code, _ := get("https://" + ts.addr + "/healthz"); code != 200 {
		t.Fatalf("https /healthz: %d", code)
	}

	// The pair is written one file after the other, so the source may
	// refuse the first half before it loads the whole.
	renewed := testenv.WriteCert(t, certFile, keyFile, now)
	next(loaded)
	if got := served(); !bytes.Equal(got.Raw, renewed.Raw) {
		t.Fatal("the renewed certificate was loaded but is not served")
	}
	refusedBefore := loads("refused")
	// A broken renewal, put in place at once (renamed over the file), so
	// that the source sees it, and only it, once.
	if err := os.WriteFile(certFile+".new", []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(certFile+".new", certFile); err != nil {
		t.Fatal(err)
	}
	next(refused)
	if got := served(); !bytes.Equal(got.Raw, renewed.Raw) {
		t.Fatal("a broken certificate file replaced the working one")
	}
	if n := loads("refused") - refusedBefore; n != 1 {
		t.Errorf("the broken file was counted refused %v times, want 1", n)
	}
	if n := loads("loaded"); n != 2 {
		t.Errorf("%v loads counted, want 2: the first pair and the renewal", n)
	}
}
