package signal

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"icebox/internal/ktapp"
	"icebox/internal/strictjson"
)

// testConfig is the default config with limits loose enough for tests that
// open many connections from 127.0.0.1.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.MaxConnsPerIP = 10000
	cfg.CredentialBurst = 1000000 // TestMintBudget sets its own
	return cfg
}

// testICE hands out fixed servers with credentials valid for an hour.
func testICE(user string) ([]ICEServer, time.Time) {
	return []ICEServer{
		{URLs: []string{"stun:127.0.0.1:3478"}},
		{URLs: []string{"turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"}, Username: "1764000000:" + user, Credential: "c2VjcmV0"},
	}, time.Now().Add(time.Hour)
}

type testServer struct {
	*Server
	addr string // host:port
}

func (ts *testServer) url(query string) string {
	u := "ws://" + ts.addr + "/connect"
	if query != "" {
		u += "?" + query
	}
	return u
}

// startServer runs a Server on a loopback port until the test ends.
func startServer(t testing.TB, cfg Config, opts Options) *testServer {
	t.Helper()
	return startServerWith(t, cfg, opts, nil)
}

// startServerWith is startServer with tweak applied to the Server before
// it serves.
func startServerWith(t testing.TB, cfg Config, opts Options, tweak func(*Server)) *testServer {
	t.Helper()
	if opts.ICEServers == nil {
		opts.ICEServers = testICE
	}
	s, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if tweak != nil {
		tweak(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{Server: s, addr: ln.Addr().String()}
}

// The data classes of the Kotlin app and its strict decoder (ktapp).
type (
	wsPacket            = ktapp.WsPacket
	wsIceServersData    = ktapp.WsIceServersData
	wsIceServer         = ktapp.WsIceServer
	wsSDPData           = ktapp.WsSDPData
	wsIceCandidatesData = ktapp.WsIceCandidatesData
	wsIceCandidateData  = ktapp.WsIceCandidateData
	wsErrorData         = ktapp.WsErrorData
	wsInitData          = ktapp.WsInitData
)

var (
	strictDecode      = strictjson.Decode
	decodeServerFrame = ktapp.Decode
	frameOf           = ktapp.Frame
)

// ktClient behaves like the talk's Kotlin app: WsInit with data "", strict
// decoding of everything it receives.
type ktClient struct {
	t  testing.TB
	ws *websocket.Conn
}

// readTimeout only guards against a hung test: on a loaded machine (CI,
// several runs at once) -race handling of megabytes of frames took over
// 5 s, so it is generous; a passing test never waits for it.
const readTimeout = 30 * time.Second

func dialKt(t testing.TB, url string, hdr http.Header) *ktClient {
	t.Helper()
	ws, err := dialWS(url, hdr)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	k := &ktClient{t: t, ws: ws}
	t.Cleanup(func() { ws.Close() })
	return k
}

func dialWS(url string, hdr http.Header) (*websocket.Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: readTimeout}
	ws, resp, err := d.Dial(url, hdr)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	return ws, err
}

// join dials and does the app's handshake: WsInit "", then WsIceServers.
func join(t testing.TB, url string) *ktClient {
	t.Helper()
	k := dialKt(t, url, nil)
	k.send("WsInit", "")
	k.expect("WsIceServers")
	return k
}

func (k *ktClient) send(id string, data any) []byte {
	k.t.Helper()
	b := frameOf(id, data)
	k.sendRaw(websocket.TextMessage, b)
	return b
}

func (k *ktClient) sendRaw(typ int, b []byte) {
	k.t.Helper()
	k.ws.SetWriteDeadline(time.Now().Add(readTimeout))
	if err := k.ws.WriteMessage(typ, b); err != nil {
		k.t.Fatalf("send: %v", err)
	}
}

// read returns the next frame, strictly decoded.
func (k *ktClient) read() ([]byte, wsPacket, any) {
	k.t.Helper()
	k.ws.SetReadDeadline(time.Now().Add(readTimeout))
	typ, msg, err := k.ws.ReadMessage()
	if err != nil {
		k.t.Fatalf("read: %v", err)
	}
	if typ != websocket.TextMessage {
		k.t.Fatalf("got message type %d, want text", typ)
	}
	p, v, err := decodeServerFrame(msg)
	if err != nil {
		k.t.Fatal(err)
	}
	return msg, p, v
}

func (k *ktClient) expect(id string) ([]byte, any) {
	k.t.Helper()
	msg, p, v := k.read()
	if p.ID != id {
		k.t.Fatalf("got %s, want %s", msg, id)
	}
	return msg, v
}

// expectBytes checks that the next frame is want, byte for byte.
func (k *ktClient) expectBytes(want []byte) {
	k.t.Helper()
	got, _, _ := k.read()
	if !bytes.Equal(got, want) {
		k.t.Fatalf("got frame\n%s\nwant\n%s", got, want)
	}
}

func (k *ktClient) expectError(code errCode) {
	k.t.Helper()
	msg, v := k.expect("WsError")
	if e := v.(*wsErrorData); e.Code != int(code) {
		k.t.Fatalf("got %s, want code %d", msg, code)
	}
}

// expectClose reads the next message, which must be the server's close
// frame, and checks its code.
func (k *ktClient) expectClose(code int) {
	k.t.Helper()
	k.ws.SetReadDeadline(time.Now().Add(readTimeout))
	_, msg, err := k.ws.ReadMessage()
	if err == nil {
		k.t.Fatalf("got %s, want close %d", msg, code)
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		k.t.Fatalf("got %v, want close %d", err, code)
	}
	if ce.Code != code {
		k.t.Fatalf("got close %d %q, want %d", ce.Code, ce.Text, code)
	}
}

// expectGone reads until the connection fails, ignoring frames.
func (k *ktClient) expectGone() {
	k.t.Helper()
	k.ws.SetReadDeadline(time.Now().Add(readTimeout))
	for {
		if _, _, err := k.ws.ReadMessage(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				k.t.Fatalf("connection still open after %v", readTimeout)
			}
			return
		}
	}
}

// offer, answer and candidates build the app's frames.
func offer(room, sdp string) []byte {
	return frameOf("WsSDPOffer", wsSDPData{Type: "offer", SDP: sdp, ControllerID: room})
}

func answer(sdp string) []byte {
	return frameOf("WsSDPAnswer", wsSDPData{Type: "answer", SDP: sdp})
}

func candidates(room string, cands ...string) []byte {
	d := wsIceCandidatesData{ControllerID: room, IceCandidates: []wsIceCandidateData{}}
	for _, c := range cands {
		d.IceCandidates = append(d.IceCandidates, wsIceCandidateData{Candidate: c, SDPMid: ptr("0")})
	}
	return frameOf("WsIceCandidates", d)
}

// eventually polls cond until it holds or readTimeout passes. Only for
// state with no event to wait on, such as metrics updated after a socket
// closes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(readTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func ptr[T any](v T) *T { return &v }

// reload applies cfg as the daemon's reload does, keeping the join-token
// keys.
func (s *Server) reload(cfg Config) error {
	commit, err := s.PrepareReload(cfg, s.tokenKeys())
	if err != nil {
		return err
	}
	commit()
	return nil
}
