package web_test

// The pieces the browser tests run against, all on 127.0.0.1: a real TURN
// server (pion/turn, which also answers STUN Binding), icebox's signal
// package serving /connect with the pages beside it, as icebox mounts them,
// and a small stand-in /connect for what the real one never does.
//
// These tests are in package web_test because signal imports web.

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/logging"
	"github.com/pion/turn/v4"

	"icebox/signal"
	"icebox/signal/web"
)

// turnServer is a pion TURN server with a UDP and a TCP listener, checking
// TURN REST credentials as icebox's own relay does.
type turnServer struct {
	secret   string
	udpAddr  string
	tcpAddr  string
	mu       sync.Mutex
	allocs   map[string]int // allocations made, by client transport ("udp", "tcp")
	perms    int            // permissions created: a peer was actually relayed to
	authFail int
}

func startTURN(t *testing.T) *turnServer {
	t.Helper()
	ts := &turnServer{secret: rand.Text(), allocs: map[string]int{}}
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.udpAddr, ts.tcpAddr = udp.LocalAddr().String(), tcp.Addr().String()
	gen := func() turn.RelayAddressGenerator {
		return &turn.RelayAddressGeneratorStatic{RelayAddress: net.IPv4(127, 0, 0, 1), Address: "127.0.0.1"}
	}
	logs := logging.NewDefaultLoggerFactory()
	logs.DefaultLogLevel = logging.LogLevelDisabled
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:             "icebox.test",
		LoggerFactory:     logs,
		AuthHandler:       turn.LongTermTURNRESTAuthHandler(ts.secret, logs.NewLogger("auth")),
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: udp, RelayAddressGenerator: gen()}},
		ListenerConfigs:   []turn.ListenerConfig{{Listener: tcp, RelayAddressGenerator: gen()}},
		EventHandler: turn.EventHandler{
			OnAuth: func(_, _ net.Addr, _, _, _, _ string, ok bool) {
				if !ok {
					ts.mu.Lock()
					ts.authFail++
					ts.mu.Unlock()
				}
			},
			// protocol is the relayed one, always UDP; the listener's
			// address tells how the client reached the server.
			OnAllocationCreated: func(_, listener net.Addr, _, _, _ string, _ net.Addr, _ int) {
				ts.mu.Lock()
				ts.allocs[listener.Network()]++
				ts.mu.Unlock()
			},
			OnPermissionCreated: func(_, _ net.Addr, _, _, _ string, _ net.Addr, _ net.IP) {
				ts.mu.Lock()
				ts.perms++
				ts.mu.Unlock()
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return ts
}

func (ts *turnServer) counts() (allocs map[string]int, perms, authFail int) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return copyCounts(ts.allocs), ts.perms, ts.authFail
}

func copyCounts(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// iceServers lists the STUN URL and both TURN URLs with credentials minted
// from secret, which a test may set wrong on purpose.
func (ts *turnServer) iceServers(secret string) []signal.ICEServer {
	user := fmt.Sprintf("%d:web-test", time.Now().Add(time.Hour).Unix())
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(user))
	return []signal.ICEServer{
		{URLs: []string{"stun:" + ts.udpAddr}},
		{
			URLs:       []string{"turn:" + ts.udpAddr + "?transport=udp", "turn:" + ts.tcpAddr + "?transport=tcp"},
			Username:   user,
			Credential: base64.StdEncoding.EncodeToString(mac.Sum(nil)),
		},
	}
}

// serveIcebox starts icebox's signal server on 127.0.0.1, handing out the
// given ICE servers, with the pages mounted at "/" as icebox does.
func serveIcebox(t *testing.T, ice []signal.ICEServer) *httptest.Server {
	t.Helper()
	s, err := signal.New(signal.DefaultConfig(), signal.Options{
		ICEServers: func(string) ([]signal.ICEServer, time.Time) { return ice, time.Time{} },
	})
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
	ice []signal.ICEServer

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
	servers, _ := json.Marshal(map[string]any{"iceServers": s.ice})
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
