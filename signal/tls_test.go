package signal

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"

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
	files, err := certs.OpenFiles(certFile, keyFile, certs.FilesOptions{Name: "signal.tls", Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
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

	renewed := testenv.WriteCert(t, certFile, keyFile, now)
	testenv.WaitFor(t, 5*time.Second, "the renewed certificate", func() bool { return bytes.Equal(served().Raw, renewed.Raw) })
	if err := os.WriteFile(certFile, []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The source looks every 20 ms; 10 handshakes over 200 ms give it
	// many chances to take the broken file.
	for range 10 {
		if got := served(); !bytes.Equal(got.Raw, renewed.Raw) {
			t.Fatal("a broken certificate file replaced the working one")
		}
		time.Sleep(20 * time.Millisecond) // spacing between probes
	}
}
