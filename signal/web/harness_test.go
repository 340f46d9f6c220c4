package web_test

// The pieces the browser tests run against, all on 127.0.0.1: icebox's own
// STUN and TURN servers wired together as cmd/icebox wires them (TURN on
// the STUN port's sockets, plus TURN over TLS on a port of its own),
// icebox's signal package serving /connect with the pages beside it, as
// icebox mounts them, and a small stand-in /connect for what the real one
// never does.
//
// These tests are in package web_test because signal imports web.

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	r.spki = base64.StdEncoding.EncodeToString(sum[:])

	scfg := stunsrv.DefaultConfig()
	scfg.Listen = []string{net.JoinHostPort(ip, "0")}
	scfg.TCP = true
	var err error
	r.stun, err = stunsrv.New(scfg, stunsrv.Options{
		Registerer:      r.reg,
		Passthrough:     true,
		TURNIdleTimeout: tcfg.Quotas.MaxLifetime + time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.turn, err = turnsrv.New(tcfg, turnsrv.Options{
		Registerer:  r.reg,
		PublicIP:    netip.MustParseAddr(ip),
		StateDir:    t.TempDir(),
		PacketConns: r.stun.PacketConns(),
		Listeners:   r.stun.Listeners(),
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
			username, password, expires = turnsrv.MintCredential([]byte(wrongSecret[0]), user, time.Hour, time.Now())
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
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
					return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}) {
					continue samples
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func copyCounts(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// serveIcebox starts icebox's signal server on 127.0.0.1, handing out the
// given ICE servers, with the pages mounted at "/" as icebox does.
func serveIcebox(t *testing.T, ice signal.ICEServersFunc) *httptest.Server {
	t.Helper()
	s, err := signal.New(signal.DefaultConfig(), signal.Options{ICEServers: ice})
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

// standIn is a STAND-IN for /connect, just enough of shared/PROTOCOL.md
// for the pages, for what icebox's signal package never does: it drops the
// frames a lone tab sends instead of keeping them for the next to join, so
// the page's offers are tested against a server that loses them. It
// answers WsInit with WsIceServers and forwards every other frame to the
// other member of the same ?room=, two members at most. It also checks that
// the page sends only the kinds and keys the mobile app's strict decoder
// accepts.
type standIn struct {
	ice signal.ICEServersFunc // called per connection, as signal does

	mu     sync.Mutex
	rooms  map[string][]*member
	frames map[string]int // frames seen, by id
	bad    []string       // protocol violations
}

type member struct {
	ws *websocket.Conn
	mu sync.Mutex // one writer at a time
}

func (m *member) write(b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ws.WriteMessage(websocket.TextMessage, b) // a failed write shows up as a closed read
}

// serve starts an HTTP server with the stand-in at /connect and the
// package's Handler at "/".
func (s *standIn) serve(t *testing.T) *httptest.Server {
	s.rooms = map[string][]*member{}
	s.frames = map[string]int{}
	mux := http.NewServeMux()
	mux.HandleFunc("/connect", s.connect)
	mux.Handle("/", web.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

var upgrader = websocket.Upgrader{} // same origin only, as icebox's default

func (s *standIn) connect(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	me := &member{ws: ws}

	if id, _ := s.read(ws); id != "WsInit" {
		s.violation("first frame was %q, not WsInit", id)
		return
	}
	ice, _ := s.ice(rand.Text())
	servers, _ := json.Marshal(map[string]any{"iceServers": ice})
	me.write(frame("WsIceServers", string(servers)))

	s.mu.Lock()
	if len(s.rooms[room]) >= 2 {
		s.mu.Unlock()
		me.write(frame("WsError", `{"code":4409,"message":"room full"}`))
		return
	}
	s.rooms[room] = append(s.rooms[room], me)
	s.mu.Unlock()
	defer s.leave(room, me)

	for {
		id, msg := s.read(ws)
		if msg == nil {
			return
		}
		if id == "WsInit" || id == "WsIceServers" {
			s.violation("client sent %s after the handshake", id)
			continue
		}
		s.mu.Lock()
		others := slices.DeleteFunc(slices.Clone(s.rooms[room]), func(m *member) bool { return m == me })
		s.mu.Unlock()
		for _, o := range others {
			o.write(msg)
		}
	}
}

func (s *standIn) leave(room string, me *member) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rooms[room] = slices.DeleteFunc(s.rooms[room], func(m *member) bool { return m == me })
	if len(s.rooms[room]) == 0 {
		delete(s.rooms, room)
	}
}

func frame(id, data string) []byte {
	b, _ := json.Marshal(map[string]string{"id": id, "data": data})
	return b
}

// allowed are the keys each kind's data may hold (shared/PROTOCOL.md).
var allowed = map[string][]string{
	"WsSDPOffer":      {"type", "sdp", "controllerId"},
	"WsSDPAnswer":     {"type", "sdp", "controllerId"},
	"WsIceCandidates": {"controllerId", "iceCandidates"},
}

// read returns the next frame's id and bytes (nil at the end), noting any
// frame the mobile app would reject.
func (s *standIn) read(ws *websocket.Conn) (string, []byte) {
	typ, msg, err := ws.ReadMessage()
	if err != nil {
		return "", nil
	}
	var f map[string]json.RawMessage
	var id, data string
	if typ != websocket.TextMessage || json.Unmarshal(msg, &f) != nil || len(f) != 2 ||
		json.Unmarshal(f["id"], &id) != nil || json.Unmarshal(f["data"], &data) != nil {
		s.violation("malformed frame %.200s", msg)
		return id, msg
	}
	s.mu.Lock()
	s.frames[id]++
	s.mu.Unlock()
	if id == "WsInit" {
		if data != "" {
			s.violation("WsInit data %q, want \"\" as the app sends", data)
		}
		return id, msg
	}
	keys, ok := allowed[id]
	if !ok {
		s.violation("unknown frame id %q", id)
		return id, msg
	}
	var inner map[string]json.RawMessage
	if err := json.Unmarshal([]byte(data), &inner); err != nil {
		s.violation("%s data is not a JSON object: %v", id, err)
		return id, msg
	}
	for k := range inner {
		if !slices.Contains(keys, k) {
			s.violation("%s carries unknown key %q", id, k)
		}
	}
	if id == "WsIceCandidates" {
		var c struct {
			List []map[string]json.RawMessage `json:"iceCandidates"`
		}
		json.Unmarshal([]byte(data), &c)
		for _, cand := range c.List {
			for k := range cand {
				if !slices.Contains([]string{"candidate", "sdpMLineIndex", "sdpMid"}, k) {
					s.violation("candidate carries unknown key %q", k)
				}
			}
			if _, ok := cand["sdpMLineIndex"]; !ok {
				s.violation("candidate without sdpMLineIndex")
			}
		}
	}
	return id, msg
}

func (s *standIn) violation(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bad = append(s.bad, fmt.Sprintf(format, args...))
}

// check fails t for every protocol violation seen, and returns the count
// of frames seen by id.
func (s *standIn) check(t *testing.T) map[string]int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.bad {
		t.Errorf("protocol violation: %s", b)
	}
	return copyCounts(s.frames)
}
