package web_test

// The pieces the browser tests run against, all on 127.0.0.1: icebox's own
// STUN and TURN servers wired together as cmd/icebox wires them (TURN on
// the STUN port's sockets, plus TURN over TLS on a port of its own),
// icebox's signal package serving /connect with the pages beside it, as
// icebox mounts them.
//
// These tests are in package web_test because signal imports web.

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/certs"
	"icebox/internal/credentials"
	"icebox/internal/testenv"
	"icebox/signal"
	"icebox/signal/web"
	"icebox/stunsrv"
	"icebox/turnsrv"
)

// relay is icebox's STUN and TURN servers, as cmd/icebox's start() sets
// them up: stunsrv owns UDP and TCP on one port and passes everything but
// Binding to turnsrv, which also listens for TURN over TLS with a
// self-signed certificate for localhost and 127.0.0.1.
type relay struct {
	ip      string // STUN and TURN's address
	stun    *stunsrv.Server
	turn    *turnsrv.Server
	reg     *prometheus.Registry // both servers' metrics
	port    int                  // the STUN/TURN port, UDP and TCP
	tlsPort int                  // TURN over TLS
	// spki is the certificate's public key hash, for Chromium's
	// --ignore-certificate-errors-spki-list: it trusts this one key only.
	spki string
}

func startRelay(t *testing.T) *relay {
	t.Helper()
	return startRelayAt(t, "127.0.0.1")
}

// startRelayAt is startRelay with STUN and TURN on another loopback
// address (TURN over TLS stays on 127.0.0.1, which its certificate names).
func startRelayAt(t *testing.T, ip string) *relay {
	t.Helper()
	r := &relay{reg: prometheus.NewRegistry(), ip: ip}

	tcfg := turnsrv.DefaultConfig()
	tcfg.Secrets = []string{rand.Text()}
	tcfg.Relay.Address = ip
	dir := t.TempDir()
	tcfg.TLS.Listen = "127.0.0.1:0"
	tcfg.TLS.Cert, tcfg.TLS.Key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cert := testenv.WriteCert(t, tcfg.TLS.Cert, tcfg.TLS.Key, time.Time{})
	files, err := certs.OpenFiles(tcfg.TLS.Cert, tcfg.TLS.Key, certs.FilesOptions{Name: "turn.tls"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(files.Close)
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	r.spki = base64.StdEncoding.EncodeToString(sum[:])

	scfg := stunsrv.DefaultConfig()
	scfg.Listen = []string{net.JoinHostPort(ip, "0")}
	scfg.TCP = true
	r.stun, err = stunsrv.New(scfg, stunsrv.Options{
		Registerer:      r.reg,
		Passthrough:     true,
		TURNIdleTimeout: tcfg.StreamIdleTimeout(),
	})
	if err != nil {
		t.Fatal(err)
	}
	r.turn, err = turnsrv.New(tcfg, turnsrv.Options{
		Registerer:     r.reg,
		PublicIP:       netip.MustParseAddr(ip),
		StateDir:       t.TempDir(),
		PacketConns:    r.stun.PacketConns(),
		Listeners:      r.stun.Listeners(),
		GetCertificate: files.GetCertificate,
		FrontDoor:      r.stun.AddListener,
	})
	if err != nil {
		r.stun.Close()
		t.Fatal(err)
	}
	// TURN closes the STUN sockets it was handed, so it goes first.
	t.Cleanup(func() {
		if err := r.turn.Close(); err != nil {
			t.Error(err)
		}
		r.stun.Close()
	})
	r.port = r.stun.PacketConns()[0].LocalAddr().(*net.UDPAddr).Port
	r.tlsPort = r.turn.TLSAddr().(*net.TCPAddr).Port
	return r
}

// iceServers is what cmd/icebox hands signal: STUN, TURN over UDP and TCP
// on the STUN port and TURN over TLS by name (the certificate's), with a
// credential minted per user. With a secret it mints from that instead of
// the server's, as a TURN server that does not share icebox's secret
// would see it.
func (r *relay) iceServers(wrongSecret ...string) signal.ICEServersFunc {
	hp := net.JoinHostPort(r.ip, strconv.Itoa(r.port))
	urls := []string{
		"turn:" + hp + "?transport=udp",
		"turn:" + hp + "?transport=tcp",
		"turns:" + net.JoinHostPort("localhost", strconv.Itoa(r.tlsPort)) + "?transport=tcp",
	}
	return func(user string) ([]signal.ICEServer, time.Time) {
		username, password, expires := r.turn.MintCredential(user, 0)
		if len(wrongSecret) > 0 {
			username, password, expires = credentials.Mint([]byte(wrongSecret[0]), user, time.Hour, time.Now())
		}
		return []signal.ICEServer{
			{URLs: []string{"stun:" + hp}},
			{URLs: urls, Username: username, Credential: password},
		}, expires
	}
}

// metric sums the samples of the named counter or gauge in both servers'
// registry whose labels include every name=value pair in labels.
func (r *relay) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return testenv.GatherValue(t, r.reg, name, labels...)
}

// serveIcebox starts icebox's signal server on 127.0.0.1, handing out the
// given ICE servers, with the pages mounted at "/" as icebox does.
func serveIcebox(t *testing.T, ice signal.ICEServersFunc) *httptest.Server {
	t.Helper()
	return serveIceboxMetrics(t, ice, nil)
}

// serveIceboxMetrics is serveIcebox with the server's metrics in reg.
func serveIceboxMetrics(t *testing.T, ice signal.ICEServersFunc, reg prometheus.Registerer) *httptest.Server {
	t.Helper()
	s, err := signal.New(signal.DefaultConfig(), signal.Options{ICEServers: ice, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	// Mount the pages unless signal already does (signal.web: true).
	probe := httptest.NewRecorder()
	s.Handler().ServeHTTP(probe, httptest.NewRequest("GET", "/check", nil))
	if probe.Code == http.StatusNotFound {
		s.Handle("/", web.Handler())
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}
