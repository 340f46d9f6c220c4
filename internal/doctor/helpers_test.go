package doctor

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"

	"icebox/internal/pionlog"
)

// generous is the step timeout for tests whose outcome is not a timeout:
// it only bounds a hung step, and on a loaded machine a TLS handshake took
// over 5 s. Tests that expect a step to time out pass a short one.
const generous = 30 * time.Second

// failedSteps are the steps of r that failed, for test messages.
func failedSteps(r Report) []Step {
	var out []Step
	for _, s := range r.Steps {
		if !s.OK {
			out = append(out, s)
		}
	}
	return out
}

// testOpts logs the check's debug lines (pion's too) to the test output,
// shown when a test fails.
func testOpts(t *testing.T, timeout time.Duration) Options {
	return Options{
		Timeout: timeout,
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// turnServer is a real pion TURN server on 127.0.0.1, UDP and TCP, with
// TURN REST API credentials, as icebox's turnsrv runs it.
type turnServer struct {
	udpPort, tcpPort, tlsPort int

	mu    sync.Mutex
	peers []net.IP // every peer a client asked a permission for
}

type turnConfig struct {
	secret  string
	tls     *tls.Config // also serve TURN over TLS with this
	relayIP string      // announced relayed address; sockets always bind 127.0.0.1
	// dropRelayed makes relay sockets swallow what they should send, as a
	// firewall closing the relay port range would.
	dropRelayed bool
}

func startTURN(t *testing.T, cfg turnConfig) *turnServer {
	t.Helper()
	ts := &turnServer{}
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.udpPort = udp.LocalAddr().(*net.UDPAddr).Port
	ts.tcpPort = tcp.Addr().(*net.TCPAddr).Port
	var gen turn.RelayAddressGenerator = &turn.RelayAddressGeneratorStatic{
		RelayAddress: net.ParseIP(cfg.relayIP), Address: "127.0.0.1",
	}
	if cfg.dropRelayed {
		gen = dropGenerator{gen}
	}
	// Only loopback peers are ever permitted, and every request is
	// recorded: no test may relay a packet off this machine.
	perm := func(_ net.Addr, peer net.IP) bool {
		ts.mu.Lock()
		ts.peers = append(ts.peers, peer)
		ts.mu.Unlock()
		return peer.IsLoopback()
	}
	listeners := []turn.ListenerConfig{{Listener: tcp, RelayAddressGenerator: gen, PermissionHandler: perm}}
	if cfg.tls != nil {
		l, err := tls.Listen("tcp4", "127.0.0.1:0", cfg.tls)
		if err != nil {
			t.Fatal(err)
		}
		ts.tlsPort = l.Addr().(*net.TCPAddr).Port
		listeners = append(listeners, turn.ListenerConfig{Listener: l, RelayAddressGenerator: gen, PermissionHandler: perm})
	}
	lf := pionlog.New(slog.New(slog.DiscardHandler))
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:         "icebox",
		AuthHandler:   turn.LongTermTURNRESTAuthHandler(cfg.secret, lf.NewLogger("auth")),
		LoggerFactory: lf,
		PacketConnConfigs: []turn.PacketConnConfig{
			{PacketConn: udp, RelayAddressGenerator: gen, PermissionHandler: perm},
		},
		ListenerConfigs: listeners,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return ts
}

func (ts *turnServer) permittedPeers() []net.IP {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]net.IP(nil), ts.peers...)
}

type dropGenerator struct{ turn.RelayAddressGenerator }

func (g dropGenerator) AllocatePacketConn(network string, port int) (net.PacketConn, net.Addr, error) {
	c, a, err := g.RelayAddressGenerator.AllocatePacketConn(network, port)
	if err != nil {
		return nil, nil, err
	}
	return dropConn{c}, a, nil
}

type dropConn struct{ net.PacketConn }

func (dropConn) WriteTo(p []byte, _ net.Addr) (int, error) { return len(p), nil }

// startSTUNOnly answers STUN Binding requests on a UDP port and ignores
// everything else, as icebox does with turn.enabled: false.
func startSTUNOnly(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil || req.Type != stun.BindingRequest {
				continue
			}
			ua := from.(*net.UDPAddr)
			res := stun.MustBuild(req, stun.BindingSuccess,
				&stun.XORMappedAddress{IP: ua.IP, Port: ua.Port}, stun.Fingerprint)
			pc.WriteTo(res.Raw, from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// freeUDPPort returns a UDP port on 127.0.0.1 nothing listens on.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// signalStandIn is a small /connect endpoint: it answers WsInit with what
// answer returns, as icebox's signal package does.
type signalStandIn struct {
	url   string
	rooms chan string // the ?room= of each connection
	tls   *tls.Config // the server's, when over TLS
}

func startSignal(t *testing.T, answer func() (id string, data any)) *signalStandIn {
	t.Helper()
	return startSignalServer(t, false, answer)
}

// startSignalServer is startSignal, over TLS with httptest's self-signed
// certificate (for 127.0.0.1) when secure.
func startSignalServer(t *testing.T, secure bool, answer func() (id string, data any)) *signalStandIn {
	t.Helper()
	s := &signalStandIn{rooms: make(chan string, 16)}
	up := websocket.Upgrader{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/connect" {
			http.NotFound(w, r)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		select {
		case s.rooms <- r.URL.Query().Get("room"):
		default:
		}
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		id, data := "WsError", any(map[string]any{"code": 4008, "message": "first frame not WsInit"})
		if string(msg) == `{"id":"WsInit","data":""}` {
			id, data = answer()
		}
		d, _ := json.Marshal(data)
		f, _ := json.Marshal(frame{ID: id, Data: string(d)})
		ws.WriteMessage(websocket.TextMessage, f)
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests do
	if secure {
		srv.StartTLS()
		s.tls = srv.TLS
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	s.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/connect"
	return s
}

// iceAnswer returns a WsIceServers answer with credentials minted with
// secret, as icebox's signaling mints them.
func iceAnswer(t *testing.T, secret string, stuns, turns []string) func() (string, any) {
	return func() (string, any) {
		var servers []iceServer
		if len(stuns) > 0 {
			servers = append(servers, iceServer{URLs: stuns})
		}
		if len(turns) > 0 {
			user, pass, err := turn.GenerateLongTermTURNRESTCredentials(secret, "check", time.Hour)
			if err != nil {
				t.Error(err)
			}
			servers = append(servers, iceServer{URLs: turns, Username: user, Credential: pass})
		}
		return "WsIceServers", map[string]any{"iceServers": servers}
	}
}

func urls(format string, ports ...int) []string {
	var out []string
	for _, f := range strings.Split(format, " ") {
		out = append(out, fmt.Sprintf(f, ports[0]))
		ports = ports[1:]
	}
	return out
}

func runCheck(t *testing.T, url string, opts Options) Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r := Run(ctx, url, opts)
	var b strings.Builder
	r.WriteTable(&b)
	t.Logf("report:\n%s", b.String())
	return r
}

// find returns the steps named name.
func (r Report) find(name string) []Step {
	var out []Step
	for _, s := range r.Steps {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}
